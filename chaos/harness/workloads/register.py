"""register: reads, writes and compare-and-set on a few cluster settings keys, through
every node's admin API, checked as linearizable registers (one per key).

    GET  /api/v1/settings/{key}        -> 200 {"key", "value"}   (value null when absent)
    PUT  /api/v1/settings/{key}        {"value"} -> 200
    POST /api/v1/settings/{key}/cas    {"expect": str|null, "value"} -> 200, or 409 {"error", "current"}

History: f "read" (invoke value null, ok value = what was read), "write" (value = the
string written), "cas" (value = [expect, new]); `key` = k0..k2; `node` = the node asked.
Written values are unique strings ("1", "2", ...) so that a reader of the history, and
the linearizability search, can tell every write apart.

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
KEYS = ["k0", "k1", "k2"]
PROCESSES = 5
OP_TIMEOUT = 12.0  # longer than the server's own 10 s proposal timeout
MAX_PAUSE = 0.2  # a process waits up to this long between operations
FINAL_READ_SECS = 60


class _Values:
    def __init__(self):
        self._n = itertools.count(1)

    def next(self) -> str:
        return str(next(self._n))


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


async def _process(ctx, stop: asyncio.Event, values: _Values) -> None:
    rng = ctx.rng
    process = ctx.new_process()
    guess: dict[str, str | None] = {k: None for k in KEYS}
    while not stop.is_set():
        key = rng.choice(KEYS)
        node = rng.choice(ctx.nodes)
        f = rng.choice(["read", "write", "cas"])
        if f == "read":
            value = None
        elif f == "write":
            value = values.next()
        else:
            value = [guess[key], values.next()]
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
    values = _Values()
    await asyncio.gather(*(_process(ctx, stop_event, values) for _ in range(PROCESSES)))


async def final(ctx) -> None:
    """Read every key once, from whichever node answers first (tried in random order)."""
    loop = asyncio.get_running_loop()
    for key in KEYS:
        deadline = loop.time() + FINAL_READ_SECS
        done = False
        while not done and loop.time() < deadline:
            for node in ctx.rng.sample(ctx.nodes, len(ctx.nodes)):
                process = ctx.new_process()
                op = ctx.history.invoke(process, NAME, "read", None, key=key, node=node.name)
                outcome, result, error = await _call(ctx, node, "read", key, None)
                getattr(op, outcome)(result, error=error)
                if outcome == "ok":
                    done = True
                    break
            if not done:
                await asyncio.sleep(1)
        if not done:
            ctx.log(f"register: no final read of {key} succeeded in {FINAL_READ_SECS} s")
