"""register: reads, writes and compare-and-set on a few cluster settings keys, through
every node's admin API, checked as linearizable registers (one per key).

    GET  /api/v1/settings/{key}        -> 200 {"key", "value"}   (value null when absent)
    PUT  /api/v1/settings/{key}        {"value"} -> 200
    POST /api/v1/settings/{key}/cas    {"expect": str|null, "value"} -> 200, or 409 {"error", "current"}

History: f "read" (invoke value null, ok value = what was read), "write" (value = the
string written), "cas" (value = [expect, new]); `key`; `node` = the node asked.
Written values are unique strings ("1", "2", ...) so that a reader of the history, and
the linearizability search, can tell every write apart.

Keys: three live at a time, k0..k2 first. As Jepsen's independent keys, a key retires
after OPS_PER_KEY invocations and the next fresh name (k3, k4, ...) takes its slot, so
that each key's history stays short enough for a linearizability search (an `info`
operation stays open to the end, so a long single-key history cannot be cut into
pieces). OPS_PER_KEY = None keeps k0..k2 for the whole run.

Outcomes:
- the request never left (connection refused, or not connected in time): fail;
- 2xx: ok; 409 on cas: fail (the comparison failed; nothing was written);
- any other 4xx: fail (refused before anything was proposed);
- 5xx, a timeout or a connection lost after sending: fail for a read, info for a write
  or cas. The server answers 503 for "not committed, for sure" but also after a
  forwarded attempt whose connection broke (raft/src/proposer.rs keeps retrying with the
  same serial and may end on NotLeader or Io after an attempt that did commit), so a
  503 is not a safe `fail` for writes.
"""

from __future__ import annotations

import asyncio
import itertools

from hosts import ApiIndeterminate, ApiUnreachable

NAME = "register"
LIVE_KEYS = 3
OPS_PER_KEY: int | None = 100
PROCESSES = 5
OP_TIMEOUT = 12.0  # longer than the server's own 10 s proposal timeout
MAX_PAUSE = 0.2  # a process waits up to this long between operations
FINAL_READ_SECS = 60


class _State:
    """Shared by the processes: the next value to write and the live keys."""

    def __init__(self):
        self._values = itertools.count(1)
        self._names = itertools.count(0)
        self.live = [f"k{next(self._names)}" for _ in range(LIVE_KEYS)]
        self.used: list[str] = list(self.live)
        self._ops = {k: 0 for k in self.live}

    def value(self) -> str:
        return str(next(self._values))

    def key(self, rng) -> str:
        slot = rng.randrange(LIVE_KEYS)
        key = self.live[slot]
        self._ops[key] += 1
        if OPS_PER_KEY is not None and self._ops[key] >= OPS_PER_KEY:
            fresh = f"k{next(self._names)}"
            self.live[slot] = fresh
            self.used.append(fresh)
            self._ops[fresh] = 0
        return key


_state: _State | None = None


async def _call(ctx, node, f: str, key: str, value):
    """One operation: (outcome, completion value, error text)."""
    path = f"/api/v1/settings/{key}"
    if f == "read":
        method, body = "GET", None
    elif f == "write":
        method, body = "PUT", {"value": value}
    else:
        method, body, path = "POST", {"expect": value[0], "value": value[1]}, path + "/cas"
    try:
        status, answer = await node.api_async(method, path, body, timeout=OP_TIMEOUT)
    except ApiUnreachable as e:
        return "fail", value, f"not sent: {e}"
    except ApiIndeterminate as e:
        return ("fail" if f == "read" else "info"), value, str(e)
    if 200 <= status < 300:
        if f == "read":
            if not isinstance(answer, dict) or "value" not in answer:
                return "fail", None, f"200 without a value: {answer!r}"
            return "ok", answer["value"], None
        return "ok", value, None
    error = f"{status} {answer}"
    if f == "cas" and status == 409:
        return "fail", value, error
    if status < 500:
        return "fail", value, error
    return ("fail" if f == "read" else "info"), value, error


async def _process(ctx, stop: asyncio.Event, state: _State) -> None:
    rng = ctx.rng
    process = ctx.new_process()
    guess: dict[str, str | None] = {}
    while not stop.is_set():
        key = state.key(rng)
        node = rng.choice(ctx.nodes)
        f = rng.choice(["read", "write", "cas"])
        if f == "read":
            value = None
        elif f == "write":
            value = state.value()
        else:
            value = [guess.get(key), state.value()]
        op = ctx.history.invoke(process, NAME, f, value, key=key, node=node.name)
        try:
            outcome, result, error = await _call(ctx, node, f, key, value)
        except asyncio.CancelledError:
            op.info(error="cancelled at the end of the run")
            raise
        getattr(op, outcome)(result, error=error)
        if outcome == "ok":
            guess[key] = result if f == "read" else (value if f == "write" else value[1])
        elif outcome == "info":
            process = ctx.new_process()  # its operation may still take effect
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(0, MAX_PAUSE))
        except asyncio.TimeoutError:
            pass


async def run(ctx, stop_event: asyncio.Event) -> None:
    global _state
    _state = _State()
    await asyncio.gather(*(_process(ctx, stop_event, _state) for _ in range(PROCESSES)))


async def _final_read(ctx, key: str) -> str:
    """One successful read of `key`, trying the nodes in random order; what happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FINAL_READ_SECS
    while loop.time() < deadline:
        for node in ctx.rng.sample(ctx.nodes, len(ctx.nodes)):
            op = ctx.history.invoke(ctx.new_process(), NAME, "read", None, key=key, node=node.name)
            outcome, result, error = await _call(ctx, node, "read", key, None)
            getattr(op, outcome)(result, error=error)
            if outcome == "ok":
                return "read"
            status = (error or "").split(" ", 1)[0]
            if status.isdigit() and 400 <= int(status) < 500:  # e.g. 404: retrying is no use
                return f"refused: {error}"
        await asyncio.sleep(1)
    return f"no read succeeded in {FINAL_READ_SECS} s"


async def final(ctx) -> None:
    """Read every key used, once, from whichever node answers first."""
    keys = _state.used if _state else [f"k{i}" for i in range(LIVE_KEYS)]
    at_once = asyncio.Semaphore(PROCESSES)

    async def one(key):
        async with at_once:
            return await _final_read(ctx, key)

    results = await asyncio.gather(*(one(k) for k in keys))
    failed = {k: r for k, r in zip(keys, results) if r != "read"}
    if failed:
        ctx.log(f"register: final reads failed for {len(failed)} of {len(keys)} keys: "
                f"{dict(list(failed.items())[:3])}")
