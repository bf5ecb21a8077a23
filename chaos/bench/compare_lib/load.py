"""chorus-load runs against one server, with its --json report read back
(the shape is chaos/load/src/coordinator.rs, `Report`)."""

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .server import Server


@dataclass
class Run:
    """One chorus-load invocation: its report, and whether it counted errors."""
    report: dict
    ok: bool
    command: str

    def errors(self) -> str:
        errs = self.report.get("errors", {})
        return "; ".join(f"{kind}: {n} (e.g. {ex})" for kind, (n, ex) in errs.items())


class LoadError(Exception):
    pass


class Load:
    def __init__(self, bin_dir: Path, domain: str, sources: int, concurrency: int, log: Path,
                 work: Path):
        self.exe = str(bin_dir / "chorus-load")
        self.domain, self.sources, self.concurrency, self.log = domain, sources, concurrency, log
        # The commands the report shows name the binaries' and the data's
        # directories by what they are, not where this machine keeps them.
        self.shown = [(str(bin_dir), "$BIN"), (str(work), "$WORK")]

    def show(self, command: str) -> str:
        for path, name in self.shown:
            command = command.replace(path, name)
        return command

    def run(self, server: Server, scenario: list[str], users: int, out: Path,
            timeout: float, prefix: str = "load", register: bool = False,
            tls: bool = False, pids: bool = True) -> Run:
        argv = [self.exe, *scenario, "--domain", self.domain, "--users", str(users),
                "--prefix", prefix, "--mechanism", server.mechanism,
                "--keys", str(server.dir / f"keys-{prefix}.json"),
                "--sources", str(self.sources), "--concurrency", str(self.concurrency),
                "--json", str(out)]
        for e in server.endpoints():
            argv += ["--server", e]
        if pids:
            for p in server.pids():
                argv += ["--pid", str(p)]
        if register:
            argv.append("--register")
        if tls:
            argv += ["--tls-ca", str(server.env.cert)]
        command = shlex.join(argv)
        out.unlink(missing_ok=True)
        with open(self.log, "a") as log:
            log.write(f"\n$ {command}\n")
            log.flush()
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise LoadError(f"chorus-load did not finish within {timeout:.0f} s: {command}")
        if not out.exists():
            raise LoadError(f"chorus-load exited {done.returncode} without a report "
                            f"(see {self.log}): {command}")
        return Run(json.loads(out.read_text()), done.returncode == 0, self.show(command))
