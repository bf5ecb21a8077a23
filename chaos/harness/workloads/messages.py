"""messages: clients on every node send uniquely numbered chat messages to online and to
offline recipients; at the end, after healing, every recipient logs in and reads what
reached it (set-full: nothing acknowledged lost, nothing twice).

A send is `ok` when a ping sent after it on the same stream is answered (the server has
processed the message: routed it, or handed it to offline storage) and no error for it
comes back within ERROR_GRACE seconds (storing offline is a Raft commit, which may take
up to the proposal timeout and then bounce the message with an error). `fail` when the
server bounced it; `info` when the stream died before the outcome was known."""

import asyncio

from xmpp_client import Client

SENDERS_PER_NODE = 1
ONLINE_RECIPIENTS = 4
OFFLINE_RECIPIENTS = 4
PASSWORD = "chaos-pw"
QUIET = 3.0  # seconds without a new message that end a final read
ERROR_GRACE = 12.0  # the server's proposal timeout (10 s) and a margin


def accounts(domain):
    senders = [f"ms{i}@{domain}" for i in range(8)]
    online = [f"mon{i}@{domain}" for i in range(ONLINE_RECIPIENTS)]
    offline = [f"moff{i}@{domain}" for i in range(OFFLINE_RECIPIENTS)]
    return senders, online, offline


async def _connected(ctx, jid, on_message=None, stop=None, node_index=None):
    """Connect somewhere (like a load balancer would): the given node first, then any."""
    nodes = list(ctx.nodes)
    order = ([nodes[node_index % len(nodes)]] if node_index is not None else []) + ctx.rng.sample(nodes, len(nodes))
    while stop is None or not stop.is_set():
        for node in order:
            c = Client(f"{jid}/w", PASSWORD, on_message=on_message)
            if await c.connect(node.ip):
                return c, node
        await asyncio.sleep(1)
    return None, None


async def _sender(ctx, index, jid, recipients, stop):
    seq = 0
    client = None
    node = None
    pending = {}  # message id -> (op, value, deadline); one process per message
    finishing = []

    def on_error(m):
        entry = pending.pop(m["id"], None)
        if entry:
            entry[0].fail(entry[1])

    async def settle(client, mid):
        await asyncio.sleep(ERROR_GRACE)
        entry = pending.pop(mid, None)
        if entry:
            if client.alive:
                entry[0].ok(entry[1])
            else:
                entry[0].info(entry[1])  # an error may have been lost with the stream

    while not stop.is_set():
        if client is None or not client.alive:
            client, node = await _connected(ctx, jid, stop=stop, node_index=index)
            if client is None:
                break
            client.x.add_event_handler("message_error", on_error)
        seq += 1
        mid = f"m-{index}-{seq}"
        to = ctx.rng.choice(recipients)
        value = {"from": jid, "to": to, "id": mid}
        op = ctx.history.invoke(ctx.new_process(), "messages", "send", value, node=node.name)
        pending[mid] = (op, value)
        msg = client.x.make_message(mto=to, mbody=mid, mtype="chat")
        msg["id"] = mid
        msg.send()
        if await client.ping(timeout=5):
            finishing.append(asyncio.ensure_future(settle(client, mid)))
        else:
            entry = pending.pop(mid, None)
            if entry:
                entry[0].info(value)
            client.close()
            client = None
        await asyncio.sleep(ctx.rng.uniform(0.05, 0.3))
    await asyncio.gather(*finishing, return_exceptions=True)
    for mid, (op, value) in list(pending.items()):
        op.info(value)
    if client:
        client.close()


async def _receiver(ctx, jid, stop):
    process = ctx.new_process()

    def on_message(m):
        if m["type"] in ("chat", "normal") and m["body"]:
            ctx.history.observe(process, "messages", "recv", {"to": jid, "id": m["body"]})

    while not stop.is_set():
        client, _ = await _connected(ctx, jid, on_message=on_message, stop=stop)
        if client is None:
            return
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([client.closed, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        client.close()


async def setup(ctx):
    senders, online, offline = accounts(ctx.domain)
    await ctx.create_accounts(senders + online + offline, PASSWORD)


async def run(ctx, stop):
    senders, online, offline = accounts(ctx.domain)
    recipients = online + offline
    # Online recipients stay connected until every send has settled: a message on its way
    # to a stream that its own client closes is lost without XEP-0198, by the client's
    # doing (found as one "lost" message sent in the last second of a run).
    senders_done = asyncio.Event()
    receivers = [asyncio.ensure_future(_receiver(ctx, j, senders_done)) for j in online]
    sending = [asyncio.ensure_future(_sender(ctx, i, senders[i % len(senders)], recipients, stop))
               for i in range(len(ctx.nodes) * SENDERS_PER_NODE)]
    await stop.wait()
    await asyncio.gather(*sending, return_exceptions=True)
    senders_done.set()
    await asyncio.gather(*receivers, return_exceptions=True)


async def final(ctx):
    _, online, offline = accounts(ctx.domain)
    await asyncio.gather(*(_final_read(ctx, j) for j in online + offline))


async def _final_read(ctx, jid):
    process = ctx.new_process()
    ids = []
    last = [asyncio.get_running_loop().time()]

    def on_message(m):
        if m["type"] in ("chat", "normal") and m["body"]:
            ids.append(m["body"])
            last[0] = asyncio.get_running_loop().time()

    op = ctx.history.invoke(process, "messages", "final-read", {"user": jid})
    client, node = await _connected(ctx, jid, on_message=on_message)
    last[0] = asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - last[0] < QUIET:
        await asyncio.sleep(0.2)
    client.close()
    op.ok({"user": jid, "ids": ids})
