"""Time from SIGKILL of a node to its users' contacts receiving unavailable
presence (issue 5), with slixmpp clients on a three-node release cluster.

    CARGO_TARGET_DIR=/var/tmp/chorus-target cargo build --release
    .venv/bin/python chaos/bench/failover_time.py --runs 5 [--failure-timeout 5]

Each run: three fresh nodes form a cluster by --seed; `victim` logs in on node 0
and `watcher1`, `watcher2` on nodes 1 and 2; each watcher subscribes to the
victim (both ways); node 0 is SIGKILLed; the time until each watcher's client sees
the victim's unavailable presence is printed, and how many it received (must be 1)."""

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "interop"))
from cluster_lib import Node, cluster_flags  # noqa: E402
from slixmpp import ClientXMPP  # noqa: E402


class Client:
    def __init__(self, node, user):
        self.x = ClientXMPP(f"{user}@localhost/r", "pw")
        self.x.ca_certs = node.cert
        self.x.enable_plaintext = False
        self.node = node
        self.ready = asyncio.get_running_loop().create_future()
        self.unavailable = []
        self.available = asyncio.Queue()
        self.x.add_event_handler("session_start", self._start)
        self.x.add_event_handler("presence_unavailable",
                                 lambda p: self.unavailable.append((time.monotonic(), str(p["from"]))))
        self.x.add_event_handler("presence_available", lambda p: self.available.put_nowait(str(p["from"])))

    async def _start(self, _):
        self.x.send_presence()
        await self.x.get_roster()
        self.ready.set_result(True)

    async def connect(self):
        self.x.connect(host="127.0.0.1", port=self.node.c2s)
        await asyncio.wait_for(self.ready, 30)


async def one_run(failure_timeout: int) -> list[float]:
    name = f"bench-failover-{os.getpid()}-{time.monotonic_ns()}"
    nodes = [Node() for _ in range(3)]
    seeds = [f"127.0.0.1:{n.cluster}" for n in nodes]
    for n in nodes:
        n.flags = cluster_flags(name, 3, seeds) + ["--set", f"cluster.failure.timeout={failure_timeout}"]
        n.spawn()
    try:
        for n in nodes:
            await asyncio.to_thread(n.wait_ready)
        for u in ("victim", "watcher1", "watcher2"):
            nodes[1].api("POST", "/api/v1/users", {"jid": f"{u}@localhost", "password": "pw"})
        victim = Client(nodes[0], "victim")
        watchers = [Client(nodes[1], "watcher1"), Client(nodes[2], "watcher2")]
        for c in [victim, *watchers]:
            await c.connect()
        for w in watchers:
            w.x.send_presence_subscription(pto="victim@localhost")
        for w in watchers:
            while await asyncio.wait_for(w.available.get(), 30) != "victim@localhost/r":
                pass
        await asyncio.sleep(1)
        killed_at = time.monotonic()
        nodes[0].proc.kill()
        while not all(w.unavailable for w in watchers):
            await asyncio.sleep(0.01)
            if time.monotonic() - killed_at > 60:
                raise RuntimeError("no unavailable presence within 60 s")
        # Anything more would be a duplicate.
        await asyncio.sleep(failure_timeout + 2)
        counts = [sum(1 for _, f in w.unavailable if f == "victim@localhost/r") for w in watchers]
        times = [w.unavailable[0][0] - killed_at for w in watchers]
        print(f"  kill -> unavailable: {', '.join(f'{t:.2f} s' for t in times)}; copies received: {counts}",
              flush=True)
        for w in watchers:
            w.x.disconnect()
        return times
    finally:
        for n in nodes:
            n.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--failure-timeout", type=int, default=5)
    args = ap.parse_args()
    all_times = []
    for _ in range(args.runs):
        all_times += asyncio.run(one_run(args.failure_timeout))
    all_times.sort()
    print(f"cluster.failure.timeout={args.failure_timeout}: {len(all_times)} contacts, "
          f"min {all_times[0]:.2f} s, median {all_times[len(all_times) // 2]:.2f} s, max {all_times[-1]:.2f} s")


if __name__ == "__main__":
    main()
