"""A real `chorus serve` process for the slixmpp interop tests."""

import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def chorus_bin() -> str:
    explicit = os.environ.get("TEST_CHORUS_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "chorus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, domain: str = "localhost"):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.domain = domain
        self.c2s, self.c2s_tls, self.http, self.cluster = (free_port() for _ in range(4))
        self.proc = None

    @property
    def cert(self) -> str:
        return str(self.dir / "tls" / "cert.pem")

    def start(self):
        log = open(self.dir / "node.log", "wb")
        self.proc = subprocess.Popen(
            [
                chorus_bin(), "serve",
                "--data-dir", str(self.dir),
                "--domain", self.domain,
                "--c2s", f"127.0.0.1:{self.c2s}",
                "--c2s-tls", f"127.0.0.1:{self.c2s_tls}",
                "--http", f"127.0.0.1:{self.http}",
                "--cluster", f"127.0.0.1:{self.cluster}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        deadline = time.time() + 60
        while not (self.dir / "api.json").exists():
            if self.proc.poll() is not None:
                raise RuntimeError("chorus exited: " + (self.dir / "node.log").read_text())
            if time.time() > deadline:
                raise RuntimeError("chorus did not start: " + (self.dir / "node.log").read_text())
            time.sleep(0.05)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [chorus_bin(), *args, "--data-dir", str(self.dir)], capture_output=True, text=True
        )

    def add_user(self, jid: str, password: str):
        out = self.cli("user", "add", jid, "--password", password)
        assert out.returncode == 0, out.stderr

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


@pytest.fixture
def node():
    n = Node()
    n.start()
    yield n
    n.stop()
