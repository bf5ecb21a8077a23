"""Test hosts on one machine: network namespaces on a bridge, and a real `chorus` node in each.

Layout of a run with prefix P (e.g. `chx1a2b-`), every name starting with P so that
`chaos/run --cleanup` finds what a crashed run left:

    P br    the bridge `br0` (multicast snooping off), in a namespace of its own: the root
            namespace here has br_netfilter with bridge-nf-call-iptables=1, which would
            push bridged traffic through the root FORWARD chain
    P n1..  one namespace per host, `eth0` = 198.18.0.K/15 (veth into the bridge), `lo` up
    P cl    the clients' namespace, `eth0` = 198.18.0.100/15

Each veth is created with its ends directly in the bridge namespace and the host
namespace, so nothing is ever added to the root namespace (no interface, no address, no
route): deleting the namespaces removes everything, and runs do not collide.

How the harness reaches the nodes: the harness process itself moves into the client
namespace (`Net.enter_client()`, setns(2) on /run/netns/P cl) before it starts any
thread, so every socket it opens, admin API calls and XMPP clients alike, leaves from
198.18.0.100, the clients' host, exactly like a client behind a load balancer; threads
created afterwards inherit the namespace. Commands (`ip netns exec ...`) work from there
as from anywhere. `Net.leave_client()` goes back to the original namespace before the
teardown.

Clock skew: each node runs under libfaketime (LD_PRELOAD) with
FAKETIME_DONT_FAKE_MONOTONIC=1 (a tokio program hangs otherwise), FAKETIME_NO_CACHE=1 and
its own FAKETIME_TIMESTAMP_FILE, into which `Node.skew()` writes an offset such as "+120"
or "-300" at run time. The harness itself never runs under libfaketime.
"""

from __future__ import annotations

import asyncio
import ctypes
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

PREFIX_RE = re.compile(r"^chx[0-9a-f]{4}-")
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
NETWORK = "198.18.0.0/15"
PREFIX_LEN = 15
CLIENT_IP = "198.18.0.100"
C2S_PORT, C2S_TLS_PORT, HTTP_PORT, CLUSTER_PORT = 5222, 5223, 5280, 7070
DOMAIN = "chaos.test"
# Tools the harness needs, and the Debian package of each.
REQUIRED = {"ip": "iproute2", "iptables": "iptables", FAKETIME_LIB: "faketime"}

CLONE_NEWNET = 0x40000000


def host_ip(k: int) -> str:
    return f"198.18.0.{k}"


def new_prefix() -> str:
    return f"chx{secrets.randbits(16):04x}-"


_log_file = None


def log_to(path: str | Path | None) -> None:
    """Also append every harness log line to `path` (the run's harness.log)."""
    global _log_file
    if _log_file:
        _log_file.close()
    _log_file = open(path, "a", encoding="utf-8") if path else None


def log(msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if _log_file:
        _log_file.write(line + "\n")
        _log_file.flush()


# --- commands ------------------------------------------------------------------------

class CommandFailed(RuntimeError):
    pass


def sh(*argv: str, check: bool = True, timeout: float = 60, input: str | None = None
       ) -> subprocess.CompletedProcess:
    """Run a command, capturing its output; raise with its stderr when it fails."""
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise CommandFailed(f"`{' '.join(argv)}` exited {p.returncode}: {p.stderr.strip()}")
    return p


def ensure_tools() -> None:
    """Install iproute2, iptables and faketime with apt-get when they are missing."""
    missing = sorted({pkg for tool, pkg in REQUIRED.items()
                      if not (os.path.exists(tool) if tool.startswith("/") else shutil.which(tool))})
    if not missing:
        return
    log(f"installing {', '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True)


# --- namespaces ----------------------------------------------------------------------

def list_namespaces(prefix: str | None = None) -> list[str]:
    """Namespaces of this run (prefix given) or of any chaos run (prefix None)."""
    out = sh("ip", "netns", "list").stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    if prefix is None:
        return [n for n in names if PREFIX_RE.match(n)]
    return [n for n in names if n.startswith(prefix)]


def namespace_pids(ns: str) -> list[int]:
    p = sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def delete_namespaces(prefix: str | None = None) -> list[str]:
    """Kill what still runs in the namespaces (chaos nodes), then delete them.

    With prefix None: every namespace named like a chaos run's (`chx<4 hex>-...`), for
    `chaos/run --cleanup` after a crash. Never signals this process itself.
    """
    names = list_namespaces(prefix)
    me = os.getpid()
    for ns in names:
        for pid in namespace_pids(ns):
            if pid == me:
                continue
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
    for ns in names:
        sh("ip", "netns", "del", ns, check=False)
    return names


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class Host:
    def __init__(self, name: str, ns: str, ip: str):
        self.name = name  # "n1".."nN" or "cl"
        self.ns = ns
        self.ip = ip

    def __repr__(self) -> str:
        return f"Host({self.name}, {self.ip})"


class Net:
    """A bridge namespace, N host namespaces and a client namespace (see the module doc)."""

    def __init__(self, n: int = 5, prefix: str | None = None):
        if not 1 <= n <= 99:
            raise ValueError("between 1 and 99 hosts")
        self.n = n
        self.prefix = prefix or new_prefix()
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} is not chx<4 hex>-")
        self.bridge_ns = f"{self.prefix}br"
        self.hosts = [Host(f"n{k}", f"{self.prefix}n{k}", host_ip(k)) for k in range(1, n + 1)]
        self.client = Host("cl", f"{self.prefix}cl", CLIENT_IP)
        self._root_fd: int | None = None
        self._lock = threading.Lock()

    # creation and teardown

    def create(self) -> "Net":
        try:
            sh("ip", "netns", "add", self.bridge_ns)
            b = ["ip", "-n", self.bridge_ns]
            sh(*b, "link", "set", "lo", "up")
            sh(*b, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0",
               "stp_state", "0", "forward_delay", "0")
            sh(*b, "link", "set", "br0", "up")
            for h in [*self.hosts, self.client]:
                sh("ip", "netns", "add", h.ns)
                port = f"p{h.name}"
                sh(*b, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
                sh(*b, "link", "set", port, "master", "br0")
                sh(*b, "link", "set", port, "up")
                n = ["ip", "-n", h.ns]
                sh(*n, "link", "set", "lo", "up")
                sh(*n, "addr", "add", f"{h.ip}/{PREFIX_LEN}", "dev", "eth0")
                sh(*n, "link", "set", "eth0", "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def destroy(self) -> list[str]:
        """Delete every namespace of this run (killing what runs there). Idempotent."""
        self.leave_client()
        return delete_namespaces(self.prefix)

    def __enter__(self) -> "Net":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # the harness process in the client namespace

    def enter_client(self) -> None:
        """Move this process (its calling thread, and every thread it starts later) into
        the client namespace. Call before any other thread is started."""
        if self._root_fd is not None:
            return
        if threading.active_count() != 1:
            raise RuntimeError("enter_client() must run before any thread is started")
        root = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.client.ns}", os.O_RDONLY)
        try:
            _setns(target)
        except BaseException:
            os.close(root)
            raise
        finally:
            os.close(target)
        self._root_fd = root

    def leave_client(self) -> None:
        if self._root_fd is None:
            return
        _setns(self._root_fd)
        os.close(self._root_fd)
        self._root_fd = None

    # commands inside namespaces

    def exec(self, host: Host, *argv: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", host.ns, *argv, check=check, timeout=timeout)

    def drop(self, receiver: Host, sender: Host) -> None:
        """`receiver` no longer hears `sender` (one direction)."""
        self.exec(receiver, "iptables", "-w", "-A", "INPUT", "-s", sender.ip, "-j", "DROP")

    def apply_grudge(self, grudge: dict[Host, Iterable[Host]]) -> None:
        """grudge[a] = the hosts whose packets a drops (Jepsen's grudge)."""
        for receiver, senders in grudge.items():
            for s in senders:
                self.drop(receiver, s)

    def heal(self) -> None:
        """Flush INPUT in every host namespace (the client namespace has no rules)."""
        for h in self.hosts:
            self.exec(h, "iptables", "-w", "-F", "INPUT", check=False)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


# --- the admin API over HTTP ---------------------------------------------------------

class ApiError(Exception):
    pass


class ApiUnreachable(ApiError):
    """The request was never sent (connection refused or not established in time)."""


class ApiIndeterminate(ApiError):
    """The request was sent but no complete answer came (timeout, connection reset)."""


def _request_bytes(method: str, host: str, port: int, path: str, body: Any, token: str) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            f"Authorization: Bearer {token}", "Accept: application/json",
            f"Content-Length: {len(data)}"]
    if body is not None:
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def _parse_response(raw: bytes) -> tuple[int, Any]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ApiIndeterminate("incomplete HTTP answer")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise ApiIndeterminate(f"bad status line {lines[0]!r}") from None
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if len(body) < n:
            raise ApiIndeterminate("answer cut short")
        body = body[:n]
    text = body.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        return status, text


def http_call(ip: str, port: int, method: str, path: str, body: Any, token: str,
              timeout: float) -> tuple[int, Any]:
    """Blocking admin API call: (status, JSON body). Raises ApiUnreachable/ApiIndeterminate."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((ip, port), timeout=timeout)
    except OSError as e:
        raise ApiUnreachable(f"{ip}:{port}: {e}") from None
    with sock:
        try:
            sock.sendall(_request_bytes(method, ip, port, path, body, token))
            chunks = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("timed out")
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as e:
            raise ApiIndeterminate(f"{ip}:{port} {method} {path}: {e or 'timed out'}") from None
    return _parse_response(b"".join(chunks))


async def http_call_async(ip: str, port: int, method: str, path: str, body: Any, token: str,
                          timeout: float) -> tuple[int, Any]:
    """The same on asyncio streams (cancellable; no thread per call)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise ApiUnreachable(f"{ip}:{port}: {e or 'connect timed out'}") from None
    try:
        writer.write(_request_bytes(method, ip, port, path, body, token))
        await asyncio.wait_for(writer.drain(), max(0.0, deadline - loop.time()))
        raw = await asyncio.wait_for(reader.read(), max(0.0, deadline - loop.time()))
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        raise ApiIndeterminate(f"{ip}:{port} {method} {path}: {e or 'timed out'}") from None
    finally:
        writer.close()
    return _parse_response(raw)


# --- nodes ---------------------------------------------------------------------------

class NodeExited(RuntimeError):
    pass


class Node:
    """One `chorus serve` in one host namespace; its data in OUT/nK (kept across restarts)."""

    def __init__(self, net: Net, host: Host, *, binary: str, out_dir: str | Path, n_nodes: int,
                 cluster_name: str, secret: str, failure_timeout: float = 5,
                 domain: str = DOMAIN, extra_settings: Iterable[str] = ()):
        self.net = net
        self.host = host
        self.name = host.name
        self.ip = host.ip
        self.binary = binary
        self.data_dir = Path(out_dir) / host.name
        self.faketime_file = Path(out_dir) / "faketime" / host.name
        self.log_path = self.data_dir / "node.log"
        self.n_nodes = n_nodes
        self.cluster_name = cluster_name
        self.secret = secret
        self.failure_timeout = failure_timeout
        self.domain = domain
        self.extra_settings = list(extra_settings)
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self.starts = 0
        self.offset = 0
        self._token: str | None = None
        self._node_id: str | None = None
        self._lock = threading.RLock()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.faketime_file.parent.mkdir(parents=True, exist_ok=True)
        self.skew(0)

    def __repr__(self) -> str:
        return f"Node({self.name}, {self.ip}, pid={self.pid})"

    # addresses
    @property
    def c2s(self) -> tuple[str, int]:
        return (self.ip, C2S_PORT)

    @property
    def c2s_tls(self) -> tuple[str, int]:
        return (self.ip, C2S_TLS_PORT)

    @property
    def http(self) -> tuple[str, int]:
        return (self.ip, HTTP_PORT)

    @property
    def cluster_addr(self) -> str:
        return f"{self.ip}:{CLUSTER_PORT}"

    @property
    def cert(self) -> Path:
        """The node's self-signed certificate (for XMPP clients' TLS)."""
        return self.data_dir / "tls" / "cert.pem"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def node_id(self) -> str | None:
        """Chorus's own id for this node (DATA_DIR/node_id, kept across wipes)."""
        if self._node_id is None:
            try:
                self._node_id = (self.data_dir / "node_id").read_text().strip() or None
            except FileNotFoundError:
                return None
        return self._node_id

    def token(self) -> str:
        if self._token is None:
            self._token = (self.data_dir / "admin.token").read_text().strip()
        return self._token

    def argv(self) -> list[str]:
        argv = ["ip", "netns", "exec", self.host.ns,
                "env", f"LD_PRELOAD={FAKETIME_LIB}", "FAKETIME_DONT_FAKE_MONOTONIC=1",
                f"FAKETIME_TIMESTAMP_FILE={self.faketime_file}", "FAKETIME_NO_CACHE=1",
                self.binary, "serve",
                "--data-dir", str(self.data_dir),
                "--domain", self.domain,
                "--c2s", f"{self.ip}:{C2S_PORT}",
                "--c2s-tls", f"{self.ip}:{C2S_TLS_PORT}",
                "--http", f"{self.ip}:{HTTP_PORT}",
                "--cluster", self.cluster_addr,
                "--cluster-name", self.cluster_name,
                "--bootstrap-expect", str(self.n_nodes),
                "--set", "cluster.startup.delay=2",
                "--set", f"cluster.failure.timeout={self.failure_timeout:g}"]
        for s in self.extra_settings:
            argv += ["--set", s]
        return argv

    # lifecycle

    def start(self) -> None:
        with self._lock:
            if self.running:
                raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
            # A SIGKILLed node leaves its api.json behind; wait_ready must not trust it.
            (self.data_dir / "api.json").unlink(missing_ok=True)
            self.starts += 1
            logf = open(self.log_path, "ab")
            logf.write(f"\n=== chaos harness: start #{self.starts} of {self.name} at "
                       f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} ===\n".encode())
            logf.flush()
            env = {**os.environ, "RUST_LOG": "info", "CHORUS_CLUSTER_SECRET": self.secret}
            env.pop("LD_PRELOAD", None)
            try:
                # Own session: a Ctrl-C on the terminal reaches the harness only, which
                # then stops the nodes itself.
                self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=logf, env=env, start_new_session=True)
            finally:
                logf.close()
            self.paused = False

    def wait_ready(self, timeout: float = 60) -> None:
        """Until DATA_DIR/api.json appears or the admin API answers."""
        deadline = time.monotonic() + timeout
        while True:
            if (self.data_dir / "api.json").exists():
                return
            if not self.running:
                raise NodeExited(f"{self.name} exited ({self.proc.returncode if self.proc else 'never started'}); "
                                 f"last lines of {self.log_path}:\n{self.log_tail()}")
            if (self.data_dir / "admin.token").exists():
                try:
                    self.api("GET", "/api/v1/status", timeout=1)
                    return
                except ApiError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout} s; see {self.log_path}")
            time.sleep(0.1)

    def signal(self, sig: int) -> bool:
        with self._lock:
            if not self.running:
                return False
            os.kill(self.proc.pid, sig)
            return True

    def kill(self) -> bool:
        """SIGKILL; True if it was running."""
        with self._lock:
            if not self.signal(signal.SIGKILL):
                return False
            self.proc.wait()
            self.paused = False
            return True

    def terminate(self, timeout: float = 10) -> None:
        """SIGTERM (a clean stop), SIGKILL after `timeout`."""
        with self._lock:
            if not self.running:
                return
            if self.paused:
                self.resume()
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> bool:
        with self._lock:
            ok = self.signal(signal.SIGSTOP)
            self.paused = self.paused or ok
            return ok

    def resume(self) -> bool:
        with self._lock:
            ok = self.signal(signal.SIGCONT)
            self.paused = False
            return ok

    def restart(self) -> None:
        """Stop if running, start again with the same data."""
        with self._lock:
            self.terminate()
            self.start()

    def wipe(self) -> None:
        """Delete DATA_DIR/raft (log, state machine, snapshots); id, token and cert stay."""
        with self._lock:
            if self.running:
                raise RuntimeError(f"{self.name} is running; stop it before wiping its raft store")
            shutil.rmtree(self.data_dir / "raft", ignore_errors=True)

    def skew(self, offset_secs: int) -> None:
        """Set the node's wall clock to real time + offset (libfaketime reads the file at
        every call; the monotonic clock is never faked)."""
        tmp = self.faketime_file.with_suffix(".tmp")
        tmp.write_text(f"{int(offset_secs):+d}\n")
        os.replace(tmp, self.faketime_file)
        self.offset = int(offset_secs)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # the admin API

    def api(self, method: str, path: str, body: Any = None, timeout: float = 5
            ) -> tuple[int, Any]:
        """(status, JSON body). Raises ApiUnreachable (not sent) or ApiIndeterminate."""
        try:
            token = self.token()
        except FileNotFoundError:
            raise ApiUnreachable(f"{self.name} has no admin token yet") from None
        return http_call(self.ip, HTTP_PORT, method, path, body, token, timeout)

    async def api_async(self, method: str, path: str, body: Any = None, timeout: float = 5
                        ) -> tuple[int, Any]:
        try:
            token = self.token()
        except FileNotFoundError:
            raise ApiUnreachable(f"{self.name} has no admin token yet") from None
        return await http_call_async(self.ip, HTTP_PORT, method, path, body, token, timeout)

    def cluster_status(self, timeout: float = 5) -> dict | None:
        """GET /api/v1/cluster, or None if the node does not answer it."""
        if not self.running or self.paused:
            return None
        try:
            status, body = self.api("GET", "/api/v1/cluster", timeout=timeout)
        except ApiError:
            return None
        return body if status == 200 and isinstance(body, dict) else None


# --- the cluster as a whole ----------------------------------------------------------

def statuses(nodes: list[Node], timeout: float = 5) -> dict[str, dict | None]:
    """Every node's GET /api/v1/cluster, asked in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        results = list(pool.map(lambda n: n.cluster_status(timeout), nodes))
    return {n.name: r for n, r in zip(nodes, results)}


def node_by_addr(nodes: list[Node], addr: str | None) -> Node | None:
    if not addr:
        return None
    ip = addr.rsplit(":", 1)[0]
    return next((n for n in nodes if n.ip == ip), None)


def node_by_id(nodes: list[Node], node_id: str | None, sts: dict[str, dict | None] | None = None
               ) -> Node | None:
    """Map a chorus node id to our node through a member list's addr (or DATA_DIR/node_id)."""
    if node_id is None:
        return None
    for st in (sts or {}).values():
        for m in (st or {}).get("members", []):
            if str(m.get("id")) == str(node_id):
                found = node_by_addr(nodes, m.get("addr"))
                if found:
                    return found
    return next((n for n in nodes if n.node_id == str(node_id)), None)


def leader(nodes: list[Node], sts: dict[str, dict | None] | None = None) -> Node | None:
    """The leader named by the answering node with the highest term, or None."""
    sts = statuses(nodes) if sts is None else sts
    best = None
    for st in sts.values():
        if st and st.get("leader") is not None:
            if best is None or (st.get("term") or 0) > (best.get("term") or 0):
                best = st
    return node_by_id(nodes, best["leader"], sts) if best else None


def formed(nodes: list[Node], sts: dict[str, dict | None]) -> tuple[bool, str]:
    """Every node answers, lists every node as a member, and all name the same leader."""
    leaders = set()
    for n in nodes:
        st = sts.get(n.name)
        if st is None:
            return False, f"{n.name} does not answer"
        if len(st.get("members", [])) != len(nodes):
            return False, f"{n.name} lists {len(st.get('members', []))} members"
        if st.get("leader") is None:
            return False, f"{n.name} knows no leader"
        leaders.add(st["leader"])
    if len(leaders) != 1:
        return False, f"leaders disagree: {sorted(leaders)}"
    return True, "formed"


def settled(nodes: list[Node], sts: dict[str, dict | None]) -> tuple[bool, str]:
    """Formed, and every node serving with every member up."""
    ok, why = formed(nodes, sts)
    if not ok:
        return ok, why
    for n in nodes:
        st = sts[n.name]
        if st.get("serving") is not True:
            return False, f"{n.name} is not serving"
        down = [m.get("addr") for m in st["members"] if m.get("state") != "up"]
        if down:
            return False, f"{n.name} sees members not up: {down}"
    return True, "settled"


def wait_cluster(nodes: list[Node], timeout: float, check=formed, stop: threading.Event | None = None
                 ) -> tuple[bool, str, dict]:
    """Poll until check(nodes, statuses) holds or `timeout` passes: (ok, why, statuses)."""
    deadline = time.monotonic() + timeout
    while True:
        sts = statuses(nodes, timeout=3)
        ok, why = check(nodes, sts)
        if ok or time.monotonic() > deadline or (stop and stop.is_set()):
            return ok, why, sts
        time.sleep(0.5)


def port_open(ip: str, port: int, timeout: float = 1) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False
