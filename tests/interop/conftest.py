"""A real `chorus serve` process for the slixmpp interop tests (`node`), and
Chorus or Debian's Prosody behind one interface for the comparison scenarios
(`server`, `transcript`; see README.md and compare.py)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import compare

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
    def __init__(self, domain: str = "localhost", extra_args: tuple[str, ...] = ()):
        self.extra_args = tuple(extra_args)
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.domain = domain
        self.c2s, self.c2s_tls, self.http, self.cluster = (free_port() for _ in range(4))
        self.proc = None

    @property
    def cert(self) -> str:
        return str(self.dir / "tls" / "cert.pem")

    def start(self):
        self.spawn()
        self.wait_ready()

    def spawn(self):
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
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, "RUST_LOG": os.environ.get("TEST_RUST_LOG", "info,chorus=debug,openraft=warn")},
        )

    def wait_ready(self):
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


@pytest.fixture
def cluster3():
    """Three nodes started at once that find each other through --seed (issue 5)."""
    name = f"interop-{os.getpid()}-{time.monotonic_ns()}"
    nodes = [Node() for _ in range(3)]
    seeds = [a for n in nodes for a in ("--seed", f"127.0.0.1:{n.cluster}")]
    for n in nodes:
        n.extra_args = (
            "--cluster-name", name, "--cluster-secret", "interop-cluster-secret",
            "--bootstrap-expect", "3", "--set", "cluster.startup.delay=1",
            "--set", "cluster.multicast.enabled=false", *seeds,
        )
        n.spawn()
    try:
        for n in nodes:
            n.wait_ready()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture
def open_node():
    """A node that lets anyone register an account in-band (XEP-0077)."""
    n = Node(extra_args=("--set", "registration.open=true"))
    n.start()
    yield n
    n.stop()


# --- Chorus and Prosody behind one interface (issue 4) -----------------------
#
# The `server` fixture runs a scenario once against Chorus and once against
# Debian's Prosody; the `transcript` fixture records what each side received,
# and compare.py prints where the two servers differ (tests/interop/README.md).

SERVERS = ["chorus", "prosody"]

# Prosody modules the reference instance loads (presence, message, iq, offline,
# c2s and s2s are always loaded). Add a module here when a scenario needs it.
PROSODY_MODULES = [
    "roster", "saslauth", "tls", "disco", "ping", "version", "presence",
    "message", "offline", "blocklist", "carbons", "vcard", "private",
    "register", "csi_simple", "lastactivity",
]


class ChorusServer(Node):
    """A `chorus serve` process with the interface the comparison scenarios use."""

    name = "chorus"

    def supports(self, feature: str) -> bool:
        return True

    def require(self, feature: str):
        if not self.supports(feature):
            pytest.skip(f"{self.name} does not support {feature}")


def prosody_version() -> str | None:
    """The installed Prosody's version ("0.12.3"), or None if it is not installed."""
    if not shutil.which("prosody") or not shutil.which("prosodyctl"):
        return None
    for f in ("/usr/lib/prosody/prosody.version", "/usr/local/lib/prosody/prosody.version"):
        try:
            return Path(f).read_text().strip()
        except OSError:
            pass
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "prosody"], capture_output=True, text=True
    )
    return out.stdout.split("-")[0] if out.returncode == 0 and out.stdout else "unknown"


def version_tuple(v: str) -> tuple:
    parts = []
    for p in v.split("."):
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProsodyServer:
    """Debian's Prosody on free loopback ports, with a config written into a
    temp dir (data, pid file, log and certificate all live there)."""

    name = "prosody"

    def __init__(self, cert: Path, key: Path, version: str, domain: str = "localhost"):
        self.tmp = tempfile.TemporaryDirectory(prefix="prosody-")
        self.dir = Path(self.tmp.name)
        self.domain = domain
        self.version = version
        self.direct_tls = version_tuple(version) >= (0, 12)
        self.c2s = free_port()
        self.c2s_tls = free_port() if self.direct_tls else None
        self.cert_path, self.key_path = cert, key
        self.config = self.dir / "prosody.cfg.lua"
        self.log = self.dir / "prosody.log"
        self.proc = None

    @property
    def cert(self) -> str:
        return str(self.cert_path)

    def supports(self, feature: str) -> bool:
        if feature == "direct_tls":
            return self.direct_tls
        return True

    def require(self, feature: str):
        if not self.supports(feature):
            pytest.skip(f"Prosody {self.version} does not support {feature}")

    def write_config(self):
        data = self.dir / "data"
        data.mkdir(mode=0o750)
        certs = self.dir / "certs"
        certs.mkdir()
        # certmanager looks for <host>.crt/<host>.key in `certificates`.
        shutil.copy(self.cert_path, certs / f"{self.domain}.crt")
        shutil.copy(self.key_path, certs / f"{self.domain}.key")
        direct_tls = f"c2s_direct_tls_ports = {{ {self.c2s_tls} }}\n" if self.direct_tls else ""
        modules = "".join(f"\t{lua_str(m)};\n" for m in PROSODY_MODULES)
        self.config.write_text(
            "-- written by tests/interop/conftest.py\n"
            # Prosody refuses to start as root unless told to; CI runs as root.
            "run_as_root = true\n"
            f"pidfile = {lua_str(str(self.dir / 'prosody.pid'))}\n"
            f"data_path = {lua_str(str(data))}\n"
            f"log = {{ {{ levels = {{ min = \"debug\" }}; to = \"file\"; filename = {lua_str(str(self.log))} }} }}\n"
            'interfaces = { "127.0.0.1" }\n'
            'local_interfaces = { "127.0.0.1" }\n'
            f"c2s_ports = {{ {self.c2s} }}\n"
            f"{direct_tls}"
            "legacy_ssl_ports = { }\n"
            "s2s_ports = { }\n"
            "s2s_direct_tls_ports = { }\n"
            "component_ports = { }\n"
            "http_ports = { }\n"
            "https_ports = { }\n"
            'authentication = "internal_hashed"\n'
            # Stored SCRAM keys are SHA-256 ones, so SCRAM-SHA-256 is offered
            # (and SCRAM-SHA-1 is not: Prosody keeps one hash per account).
            'password_hash = "SHA-256"\n'
            "c2s_require_encryption = true\n"
            "allow_registration = false\n"
            f"certificates = {lua_str(str(certs))}\n"
            f"ssl = {{ certificate = {lua_str(str(self.cert_path))}; key = {lua_str(str(self.key_path))} }}\n"
            f"modules_enabled = {{\n{modules}}}\n"
            'modules_disabled = { "dialback" }\n'
            f"VirtualHost {lua_str(self.domain)}\n"
        )

    def start(self):
        self.write_config()
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-F"],
            stdin=subprocess.DEVNULL,
            stdout=open(self.dir / "prosody.out", "wb"),
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        ports = [p for p in (self.c2s, self.c2s_tls) if p]
        deadline = time.time() + 30
        while ports:
            if self.proc.poll() is not None:
                raise RuntimeError("prosody exited:\n" + self.output())
            if time.time() > deadline:
                raise RuntimeError("prosody did not start:\n" + self.output())
            try:
                socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
                ports.pop(0)
            except OSError:
                time.sleep(0.05)

    def output(self) -> str:
        text = ""
        for f in (self.dir / "prosody.out", self.log):
            if f.exists():
                text += f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-40:]) + "\n"
        return text

    def add_user(self, jid: str, password: str):
        user, _, host = jid.partition("@")
        out = subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, host, password],
            capture_output=True, text=True, cwd=self.dir,
        )
        assert out.returncode == 0, f"prosodyctl register {jid}: {out.stdout}{out.stderr}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


@pytest.fixture(scope="session")
def prosody_cert(tmp_path_factory):
    """A self-signed certificate for "localhost" (its own CA for slixmpp)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (needed for Prosody's certificate)")
    d = tmp_path_factory.mktemp("prosody-cert")
    cert, key = d / "localhost.crt", d / "localhost.key"
    out = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "7", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    return cert, key


@pytest.fixture(params=SERVERS)
def server(request):
    """The server under test: Chorus or Prosody (same interface: .name, .domain,
    .c2s, .c2s_tls, .cert, .add_user(jid, password), .supports/.require)."""
    if request.param == "chorus":
        s = ChorusServer()
    else:
        version = prosody_version()
        if version is None:
            compare.collector(request.config).note_skip("prosody is not installed (scripts/test.sh installs it)")
            pytest.skip("prosody is not installed")
        cert, key = request.getfixturevalue("prosody_cert")
        s = ProsodyServer(cert, key, version)
    try:
        s.start()
    except Exception:
        s.stop()
        raise
    yield s
    s.stop()


@pytest.fixture
def transcript(request, server):
    """What this scenario saw on `server`, kept for the Chorus/Prosody comparison."""
    t = compare.Transcript(compare.scenario_name(request.node), server.name)
    compare.collector(request.config).add(t)
    return t


def pytest_collection_modifyitems(config, items):
    compare.prosody_first(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    compare.after_scenario(item)
    return result


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    compare.print_summary(terminalreporter, config)
