"""bind and sessions, and the final ghost check they share.

bind: the same few full JIDs bound concurrently from different nodes; the server must
keep at most one live stream per full JID (a newer bind ends the older with <conflict/>).
sessions: clients connect, disconnect and get cut off while nodes die; a watcher
subscribed to them records who it sees available.

At the end, after the final heal and the failure timeout: `live` (the streams that still
answer a ping), `routes` (each node's routing table for these accounts, from its admin
API) and `presence-view` (whom the watcher sees available) go into the history; the
checker requires routes == live and presence-view within live."""

import asyncio

from messages import PASSWORD, _connected
from xmpp_client import Client

BIND_JIDS = 3
SESSION_USERS = 6


def bind_accounts(domain):
    return [f"bi{i}@{domain}" for i in range(BIND_JIDS)]


def session_accounts(domain):
    return [f"se{i}@{domain}" for i in range(SESSION_USERS)]


def watcher(domain):
    return f"watch@{domain}"


def _registry(ctx):
    if not hasattr(ctx, "live_clients"):
        ctx.live_clients = {}  # (full_jid, session) -> Client
        ctx.watcher_view = {}
    return ctx


async def setup(ctx):
    if getattr(ctx, "ghost_setup_done", False):
        return
    ctx.ghost_setup_done = True
    d = ctx.domain
    await ctx.create_accounts(bind_accounts(d) + session_accounts(d) + [watcher(d)], PASSWORD)


async def _connect_as(ctx, full_jid, node):
    c = Client(full_jid, PASSWORD)
    ok = await c.connect(node.ip)
    return c if ok else None


async def _binder(ctx, index, stop):
    _registry(ctx)
    jids = bind_accounts(ctx.domain)
    seq = 0
    while not stop.is_set():
        process = ctx.new_process()
        full = f"{ctx.rng.choice(jids)}/same"
        node = ctx.rng.choice(list(ctx.nodes))
        seq += 1
        session = f"b{index}-{seq}"
        op = ctx.history.invoke(process, "bind", "bind", {"full_jid": full, "session": session}, node=node.name)
        c = await _connect_as(ctx, full, node)
        if c is None:
            op.info({"full_jid": full, "session": session})
            await asyncio.sleep(0.5)
            continue
        op.ok({"full_jid": full, "session": session})
        ctx.live_clients[(full, session)] = c

        def closed(_f, full=full, session=session, process=process):
            ctx.live_clients.pop((full, session), None)
            ctx.history.observe(process, "bind", "closed", {"full_jid": full, "session": session, "reason": "stream closed"})

        c.closed.add_done_callback(closed)
        await asyncio.sleep(ctx.rng.uniform(0.5, 2.0))
        if ctx.rng.random() < 0.3:
            c.close()


async def _session_churn(ctx, index, stop):
    _registry(ctx)
    users = session_accounts(ctx.domain)
    seq = 0
    while not stop.is_set():
        process = ctx.new_process()
        user = users[index % len(users)]
        seq += 1
        full = f"{user}/s{seq}"
        node = ctx.rng.choice(list(ctx.nodes))
        op = ctx.history.invoke(process, "sessions", "connect", {"full_jid": full, "session": full}, node=node.name)
        c = await _connect_as(ctx, full, node)
        if c is None:
            op.info({"full_jid": full})
            await asyncio.sleep(0.5)
            continue
        op.ok({"full_jid": full, "session": full})
        ctx.live_clients[(full, full)] = c

        def closed(_f, full=full, process=process):
            ctx.live_clients.pop((full, full), None)
            ctx.history.observe(process, "sessions", "closed", {"full_jid": full, "session": full, "reason": "stream closed"})

        c.closed.add_done_callback(closed)
        await asyncio.sleep(ctx.rng.uniform(1.0, 4.0))
        if ctx.rng.random() < 0.5:
            c.close()  # a clean disconnect; the others stay until a node dies under them


async def _watch(ctx, stop):
    """The watcher subscribes to every session user and records what it sees."""
    _registry(ctx)
    view = ctx.watcher_view

    def on_presence(p):
        frm = str(p["from"])
        if "/" not in frm or frm.startswith(watcher(ctx.domain)):
            return
        if p["type"] in ("unavailable", "error"):
            view.pop(frm, None)
        elif p["type"] in ("available", "", None) or p["type"] in ("away", "chat", "dnd", "xa"):
            view[frm] = True

    while not stop.is_set():
        c, _ = await _connected(ctx, watcher(ctx.domain), stop=stop)
        if c is None:
            return
        c.x.add_event_handler("presence", on_presence)
        view.clear()
        for u in session_accounts(ctx.domain):
            c.x.send_presence_subscription(pto=u)
        ctx.watcher_client = c
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([c.closed, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if stop.is_set():
            return  # the watcher stays connected for the final view
        c.close()


async def run_bind(ctx, stop):
    await asyncio.gather(*(_binder(ctx, i, stop) for i in range(4)), return_exceptions=True)


async def run_sessions(ctx, stop):
    # Session users approve the watcher's subscription themselves (slixmpp's auto_authorize).
    watcher_task = asyncio.ensure_future(_watch(ctx, stop))
    await asyncio.gather(*(_session_churn(ctx, i, stop) for i in range(SESSION_USERS)), return_exceptions=True)
    await watcher_task


async def final(ctx):
    """Run once for bind and sessions together, after the heal."""
    _registry(ctx)
    if getattr(ctx, "ghost_check_done", False):
        return
    ctx.ghost_check_done = True
    # Routes of dead streams go after the failure timeout and two ghost sweeps.
    await asyncio.sleep(3 * ctx.failure_timeout + 2)
    live = []
    for (full, _session), c in list(ctx.live_clients.items()):
        if await c.ping(timeout=5):
            live.append(full)
    ctx.history.observe(ctx.new_process(), "sessions", "live", {"full_jids": sorted(live)})
    accounts = bind_accounts(ctx.domain) + session_accounts(ctx.domain)
    for node in ctx.nodes:
        routes = []
        reachable = True
        for a in accounts:
            try:
                status, body = await ctx.api(node, "GET", f"/api/v1/users/{a}")
            except Exception as e:
                ctx.log(f"routes of {a} on {node.name}: {e}")
                reachable = False
                break
            if status == 200:
                routes += [r["jid"] for r in body.get("routes", [])]
        if not reachable:
            continue
        ctx.history.observe(ctx.new_process(), "sessions", "routes", {"node": node.name, "full_jids": sorted(routes)})
    ctx.history.observe(ctx.new_process(), "sessions", "presence-view",
                        {"watcher": watcher(ctx.domain), "available": sorted(ctx.watcher_view)})
    for c in list(ctx.live_clients.values()):
        c.close()
    if getattr(ctx, "watcher_client", None):
        ctx.watcher_client.close()
