"""Chorus, one node or a cluster of three on loopback, from the release binary."""

import subprocess
import time

from . import proc
from .server import Server

# The settings issue 13 names for the benchmark: open in-band registration
# without its per-address rate, room for every login at once, PLAIN and SCRAM
# without TLS (the plaintext scenarios).
BENCH_FLAGS = [
    "--allow-plaintext-auth",
    "--set", "registration.open=true",
    "--set", "rate.registrations_per_ip_per_minute=0",
    "--set", "auth.hash_queue=20000",
    "--set", "c2s.max_connections_per_ip=20000",
]


class Chorus(Server):
    """`nodes` nodes; node i listens on base + 10 i (c2s), + 1 (TLS), + 2 (HTTP),
    + 3 (cluster). Several nodes find each other by --seed, as tests/common does."""

    def __init__(self, name, env, base_port: int, nodes: int = 1):
        super().__init__(name, env)
        self.base, self.nodes = base_port, nodes
        self.label = "Chorus, one node" if nodes == 1 else f"Chorus, {nodes}-node cluster on one machine"
        self.scram_iterations = "10,000 (the default, `auth.scram_iterations`)"
        self.notes = [
            "users spread over the nodes (user i on node i mod 3); RSS and CPU are the sum of the three processes"
        ] if nodes > 1 else []

    def port(self, node: int, offset: int) -> int:
        return self.base + 10 * node + offset

    def c2s_ports(self):
        return [self.port(i, 0) for i in range(self.nodes)]

    def all_ports(self):
        return [self.port(i, o) for i in range(self.nodes) for o in range(4)]

    def version(self) -> str:
        out = subprocess.run([str(self.env.bin_dir / "chorus"), "--version"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "unknown"

    def node_dir(self, i: int):
        d = self.dir / f"node{i}"
        d.mkdir(exist_ok=True)
        return d

    def spawn(self):
        seeds = [a for i in range(self.nodes) for a in ("--seed", f"127.0.0.1:{self.port(i, 3)}")]
        cluster = [] if self.nodes == 1 else [
            "--cluster-name", f"bench-{self.name}", "--cluster-secret", "bench-cluster-secret",
            "--bootstrap-expect", str(self.nodes), "--set", "cluster.startup.delay=1",
            "--set", "cluster.multicast.enabled=false", *seeds,
        ]
        for i in range(self.nodes):
            d = self.node_dir(i)
            # Written once the node serves clients: a stale one would say ready too soon.
            (d / "api.json").unlink(missing_ok=True)
            argv = [
                str(self.env.bin_dir / "chorus"), "serve", "--data-dir", str(d),
                "--domain", self.env.domain,
                "--c2s", f"127.0.0.1:{self.port(i, 0)}", "--c2s-tls", f"127.0.0.1:{self.port(i, 1)}",
                "--http", f"127.0.0.1:{self.port(i, 2)}", "--cluster", f"127.0.0.1:{self.port(i, 3)}",
                "--cert", str(self.env.cert), "--key", str(self.env.key),
                *BENCH_FLAGS, *cluster,
            ]
            # Chorus reads CHORUS_* variables as settings (and refuses unknown
            # ones): only the flags above may configure the benchmark's nodes.
            self.procs.append(proc.spawn(argv, self.log, env={"RUST_LOG": "warn"}, drop_prefix="CHORUS_"))

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        for i, p in enumerate(self.procs):
            marker = self.node_dir(i) / "api.json"
            while not marker.exists():
                if p.poll() is not None:
                    raise proc.ServerError(f"node {i} exited with status {p.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise proc.ServerError(f"node {i} not serving after {timeout:.0f} s:\n{self.log_tail()}")
                time.sleep(0.05)
        super().wait_ready(max(1, deadline - time.monotonic()))
