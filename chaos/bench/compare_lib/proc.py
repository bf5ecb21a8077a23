"""Processes and ports: every wait here has a deadline, so a server that does
not come up (or go away) is an error with its log, never a hang."""

import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path


class ServerError(Exception):
    """A server that would not start, answer or stop; the message carries its log tail."""


def raise_open_files() -> int:
    """Soft open-file limit up to the hard one, for us and every child (10,000
    sessions are 10,000 descriptors in the server and in the generator)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen there now (as servers do, with SO_REUSEADDR,
    so connections of the last run still in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def wait_ports_free(ports, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while not port_free(port):
            if time.monotonic() > deadline:
                raise ServerError(f"port {port} still taken after {timeout:.0f} s "
                                  "(a server of an earlier run, or someone else's)")
            time.sleep(0.2)


def wait_listening(proc: subprocess.Popen, ports, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while not port_open(port):
            if proc.poll() is not None:
                raise ServerError(f"exited with status {proc.returncode} before listening "
                                  f"on {port}:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                raise ServerError(f"not listening on {port} after {timeout:.0f} s:\n{log_tail(log)}")
            time.sleep(0.1)


def spawn(argv, log: Path, env=None, cwd=None, drop_prefix: str | None = None) -> subprocess.Popen:
    """Starts a server in a session of its own, output to `log`; variables named
    `drop_prefix`... are left out of its environment."""
    base = {k: v for k, v in os.environ.items() if not (drop_prefix and k.startswith(drop_prefix))}
    out = open(log, "ab")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**base, **(env or {})}, cwd=cwd, start_new_session=True)
    finally:
        out.close()


def stop_all(procs, timeout: float = 30) -> None:
    """SIGTERM to all at once (a cluster's nodes go together, not one by one with
    the others taking over), then SIGKILL to what is left after the timeout. A
    whole session each: a child a server left (erl_child_setup) goes too."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in live:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait(10)
        _signal(p, signal.SIGKILL)


def _signal(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass
