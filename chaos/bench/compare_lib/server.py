"""What every server under test offers the runner: start, stop, where its
clients connect, which processes to sample, and what to say about it."""

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import proc


@dataclass
class Env:
    """What the servers share: the benchmark domain, the certificate, the binaries."""
    domain: str
    cert: Path
    key: Path
    bin_dir: Path
    work: Path


@dataclass
class Server:
    name: str
    env: Env
    # Shown in the table next to the name.
    label: str = ""
    mechanism: str = "SCRAM-SHA-256"
    scram_iterations: str = ""
    notes: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def dir(self) -> Path:
        d = self.env.work / self.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def log(self) -> Path:
        return self.dir / "server.log"

    # --- to be provided by each server -------------------------------------
    def c2s_ports(self) -> list[int]:
        raise NotImplementedError

    def all_ports(self) -> list[int]:
        return self.c2s_ports()

    def version(self) -> str:
        raise NotImplementedError

    def configure(self) -> None:
        """Writes the config once (data persists across restarts)."""

    def spawn(self) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        for p in self.procs:
            proc.wait_listening(p, self.c2s_ports(), timeout, self.log)

    # --- common ------------------------------------------------------------
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.c2s_ports()]

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self, timeout: float = 90) -> None:
        proc.wait_ports_free(self.all_ports())
        self.procs = []
        try:
            self.spawn()
            self.wait_ready(timeout)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        proc.stop_all(self.procs)
        self.procs = []
        proc.wait_ports_free(self.all_ports())

    def log_tail(self) -> str:
        return proc.log_tail(self.log)
