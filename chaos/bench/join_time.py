"""How long a fresh node takes to join a cluster that holds N accounts (issue 5).

    CARGO_TARGET_DIR=/var/tmp/chorus-target cargo build --release
    .venv/bin/python chaos/bench/join_time.py --accounts 100000

One release node forms a cluster; N accounts are created through its admin API
(concurrently); its log is compacted into a snapshot by the ordinary snapshot
policy; then a fresh node starts with --seed pointing at it. Printed: the time
from the fresh node's spawn until it is a member whose applied index equals the
leader's (it has caught up, by snapshot when the log was purged), and until it
serves clients (its api.json appears)."""

import argparse
import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster_lib import Node, cluster_flags  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args()
    name = f"bench-join-{os.getpid()}"
    first = Node(*cluster_flags(name, 1, []), "--set", "cluster.snapshot_threshold=5000")
    first.spawn()
    first.wait_ready()
    try:
        t0 = time.monotonic()

        def add(i):
            first.api("POST", "/api/v1/users", {"jid": f"user{i}@localhost", "password": f"pw{i}"})

        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            for n, _ in enumerate(pool.map(add, range(args.accounts)), 1):
                if n % 10_000 == 0:
                    print(f"  {n} accounts ({time.monotonic() - t0:.0f} s)", flush=True)
        print(f"created {args.accounts} accounts in {time.monotonic() - t0:.1f} s")
        status = first.api("GET", "/api/v1/cluster")
        leader_applied = status["members"][0]["applied_index"]
        raft = first.api("GET", "/api/v1/status")["raft"]
        print(f"leader applied index {leader_applied}, snapshot index {raft['snapshot_index']}, "
              f"first log index {raft['first_log_index']}")

        joiner = Node(*cluster_flags(name, 1, [f"127.0.0.1:{first.cluster}"]),
                      "--set", "cluster.startup.delay=0")
        t1 = time.monotonic()
        joiner.spawn()
        joined = None
        while True:
            status = first.api("GET", "/api/v1/cluster")
            me = [m for m in status["members"] if m["id"] == joiner.node_id()] if (joiner.dir / "node_id").exists() else []
            if me and me[0]["applied_index"] is not None and me[0]["applied_index"] >= leader_applied:
                joined = time.monotonic() - t1
                break
            if joiner.proc.poll() is not None:
                raise RuntimeError((joiner.dir / "node.log").read_text())
            time.sleep(0.05)
        joiner.wait_ready()
        ready = time.monotonic() - t1
        print(f"fresh node caught up (member, applied >= {leader_applied}) after {joined:.2f} s; "
              f"serving clients after {ready:.2f} s")
        print(f"users on the joined node: {len(joiner.api('GET', '/api/v1/users')['users'])}")
        joiner.stop()
    finally:
        first.stop()


if __name__ == "__main__":
    main()
