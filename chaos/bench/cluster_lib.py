"""Real `chorus serve` processes on loopback for the cluster benchmarks (release build)."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def chorus_bin() -> str:
    """The release binary, built first (cargo does nothing when it is up to date)."""
    if os.environ.get("TEST_CHORUS_BIN"):
        return os.environ["TEST_CHORUS_BIN"]
    global _BUILT
    if not _BUILT:
        subprocess.run(["cargo", "build", "--release", "--bin", "chorus"], cwd=ROOT, check=True)
        _BUILT = True
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "release" / "chorus")


_BUILT = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, *flags: str):
        self.tmp = tempfile.TemporaryDirectory(dir="/var/tmp")
        self.dir = Path(self.tmp.name)
        self.c2s, self.c2s_tls, self.http, self.cluster = (free_port() for _ in range(4))
        self.flags = list(flags)
        self.proc = None

    @property
    def cert(self) -> str:
        return str(self.dir / "tls" / "cert.pem")

    def spawn(self):
        log = open(self.dir / "node.log", "ab")
        self.proc = subprocess.Popen(
            [chorus_bin(), "serve", "--data-dir", str(self.dir),
             "--c2s", f"127.0.0.1:{self.c2s}", "--c2s-tls", f"127.0.0.1:{self.c2s_tls}",
             "--http", f"127.0.0.1:{self.http}", "--cluster", f"127.0.0.1:{self.cluster}",
             *self.flags],
            stdout=subprocess.DEVNULL, stderr=log,
            env={**os.environ, "RUST_LOG": "warn"},
        )

    def wait_ready(self, timeout=600):
        deadline = time.time() + timeout
        while not (self.dir / "api.json").exists():
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "node.log").read_text())
            if time.time() > deadline:
                raise RuntimeError("node did not start")
            time.sleep(0.02)

    def token(self) -> str:
        return (self.dir / "admin.token").read_text().strip()

    def api(self, method: str, path: str, body=None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def node_id(self) -> str:
        return (self.dir / "node_id").read_text().strip()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


def cluster_flags(name: str, expect: int, seeds: list[str]) -> list[str]:
    flags = ["--cluster-name", name, "--cluster-secret", "bench-cluster-secret",
             "--bootstrap-expect", str(expect), "--set", "cluster.startup.delay=1",
             "--set", "cluster.multicast.enabled=false"]
    for s in seeds:
        flags += ["--seed", s]
    return flags
