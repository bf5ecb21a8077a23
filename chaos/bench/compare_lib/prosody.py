"""Debian's Prosody as a process of its own: config, data, pid file and log in
the benchmark's directory."""

import subprocess
from pathlib import Path

from . import proc
from .server import Server

# The same plain IM server as the ejabberd config (Prosody loads presence,
# message, iq and c2s itself). No mod_limits: no c2s rate limit.
MODULES = ["roster", "saslauth", "tls", "disco", "ping", "register", "offline",
           "blocklist", "carbons", "private", "vcard"]


def lua(s) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def epoll_available() -> bool:
    return Path("/usr/lib/prosody/net/server_epoll.lua").exists()


class Prosody(Server):
    def __init__(self, name, env, port: int):
        super().__init__(name, env)
        self.port = port
        self.backend = "epoll" if epoll_available() else "select"
        self.label = f"Prosody, `internal_hashed` (SCRAM-SHA-256 keys), `network_backend = \"{self.backend}\"`"
        self.scram_iterations = "10,000 (Prosody 0.12's default `default_iteration_count`)"
        self.notes = ["one process, one thread (Lua)"]

    def c2s_ports(self):
        return [self.port]

    def version(self) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "prosody"],
                             capture_output=True, text=True, timeout=30)
        return f"Prosody {out.stdout.strip() or 'unknown'} (Debian)"

    def configure(self):
        d = self.dir
        (d / "data").mkdir(exist_ok=True, mode=0o750)
        certs = d / "certs"
        certs.mkdir(exist_ok=True)
        # certmanager looks for <host>.crt and <host>.key in `certificates`.
        (certs / f"{self.env.domain}.crt").write_text(self.env.cert.read_text())
        (certs / f"{self.env.domain}.key").write_text(self.env.key.read_text())
        modules = "".join(f"\t{lua(m)};\n" for m in MODULES)
        (d / "prosody.cfg.lua").write_text(f"""\
-- written by chaos/bench/compare
-- Prosody refuses to run as root unless told to; the benchmark runs as root.
run_as_root = true
pidfile = {lua(d / "prosody.pid")}
data_path = {lua(d / "data")}
log = {{ warn = {lua(d / "prosody.log")} }}
network_backend = {lua(self.backend)}
-- 128 by default; 1024 as Chorus (tokio) and ejabberd here.
network_settings = {{ tcp_backlog = 1024 }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
s2s_direct_tls_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
authentication = "internal_hashed"
-- Keys for SCRAM-SHA-256, so it is offered (Prosody keeps one hash per account).
password_hash = "SHA-256"
-- The plaintext scenarios: streams without TLS may register and authenticate
-- (PLAIN too, for the tsung cross-check, as Chorus's --allow-plaintext-auth).
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
-- No min_seconds_between_registrations: unset, mod_register_limits keeps no
-- throttle at all (0 would make a throttle of one per zero seconds).
limits = {{ }}
certificates = {lua(certs)}
ssl = {{ certificate = {lua(self.env.cert)}; key = {lua(self.env.key)} }}
modules_enabled = {{
{modules}}}
modules_disabled = {{ "s2s"; "dialback" }}
VirtualHost {lua(self.env.domain)}
""")

    def spawn(self):
        argv = ["prosody", "--config", str(self.dir / "prosody.cfg.lua"), "-F"]
        self.procs.append(proc.spawn(argv, self.log, cwd=self.dir))

    def log_tail(self):
        return proc.log_tail(self.log) + "\n--- prosody.log\n" + proc.log_tail(self.dir / "prosody.log")
