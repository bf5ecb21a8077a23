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


async def _open_stream(ctx, workload, f, full, session):
    """One stream bound as `full` on a random node, recorded as `f` (ok: bound; info: the
    attempt failed, the bind may or may not have happened) and, once it ends, as `closed`.
    Returns the client, or None."""
    process = ctx.new_process()
    node = ctx.rng.choice(list(ctx.nodes))
    value = {"full_jid": full, "session": session}
    op = ctx.history.invoke(process, workload, f, value, node=node.name)
    c = Client(full, PASSWORD)
    if not await c.connect(node.ip):
        op.info(value)
        return None
    op.ok(value)
    ctx.live_clients[(full, session)] = c

    def closed(_f):
        ctx.live_clients.pop((full, session), None)
        ctx.history.observe(process, workload, "closed", {**value, "reason": "stream closed"})

    c.closed.add_done_callback(closed)
    return c


async def _churn(ctx, stop, workload, f, next_stream, hold, close_chance):
    """Open streams one after another, keep each `hold` seconds, then close it cleanly
    with `close_chance` (the others stay until a node dies under them or the run ends)."""
    _registry(ctx)
    while not stop.is_set():
        full, session = next_stream()
        c = await _open_stream(ctx, workload, f, full, session)
        if c is None:
            await asyncio.sleep(0.5)
            continue
        await asyncio.sleep(ctx.rng.uniform(*hold))
        if ctx.rng.random() < close_chance:
            c.close()


def _binder(ctx, index, stop):
    """The same few full JIDs bound again and again from different nodes."""
    jids = bind_accounts(ctx.domain)
    seq = iter(range(1, 1 << 62))

    def next_stream():
        return f"{ctx.rng.choice(jids)}/same", f"b{index}-{next(seq)}"

    return _churn(ctx, stop, "bind", "bind", next_stream, (0.5, 2.0), 0.3)


def _session_churn(ctx, index, stop):
    """A new resource of one session account each time."""
    user = session_accounts(ctx.domain)[index % SESSION_USERS]
    seq = iter(range(1, 1 << 62))

    def next_stream():
        full = f"{user}/s{next(seq)}"
        return full, full

    return _churn(ctx, stop, "sessions", "connect", next_stream, (1.0, 4.0), 0.5)


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
