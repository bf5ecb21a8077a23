"""Debian's ejabberd as a process of its own: config, Mnesia spool and logs in
the benchmark's directory, run by erl directly (what `ejabberdctl foreground`
runs, without its switch to the ejabberd user), as root.

No Erlang distribution: the node is nonode@nohost, so it registers no name with
epmd, starts no epmd, reads no cookie, and cannot clash with another Erlang node
on the machine; nothing here needs ejabberdctl to reach it."""

import subprocess
from pathlib import Path

from . import proc
from .server import Server

EBIN_PARENT = "/usr/lib/x86_64-linux-gnu"

# Modules of a plain IM server, as close as ejabberd's names allow to what the
# Prosody config loads and Chorus has built in. No mod_fail2ban (it would ban
# the generator's addresses) and no mod_pres_counter (a presence rate limit).
MODULES = """\
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_blocking: {}
  # mod_blocking needs it (Prosody 0.12 has no privacy lists).
  mod_privacy: {}
  mod_carboncopy: {}
  mod_private: {}
  mod_vcard:
    search: false
  mod_register:
    access: all
    ip_access: all
"""


class Ejabberd(Server):
    def __init__(self, name, env, port: int, password_format: str):
        super().__init__(name, env)
        self.port, self.password_format = port, password_format
        if password_format == "scram":
            self.label = "ejabberd, SCRAM-SHA-256 storage (`auth_password_format: scram`, `auth_scram_hash: sha256`)"
        else:
            self.label = ("ejabberd, **plaintext password storage** (`auth_password_format: plain`): "
                          "it derives the SCRAM keys at every login")
        self.scram_iterations = "4096 (ejabberd 23.01 has no setting for it)"

    def c2s_ports(self):
        return [self.port]

    def version(self) -> str:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ejabberd"],
                             capture_output=True, text=True, timeout=30)
        return f"ejabberd {out.stdout.strip() or 'unknown'} (Debian)"

    def configure(self):
        d = self.dir
        (d / "spool").mkdir(exist_ok=True)
        (d / "logs").mkdir(exist_ok=True)
        bundle = d / "cert-and-key.pem"
        bundle.write_text(self.env.cert.read_text() + self.env.key.read_text())
        (d / "ejabberd.yml").write_text(f"""\
# written by chaos/bench/compare
hosts:
  - {self.env.domain}
loglevel: warning
log_rotate_count: 0
certfiles:
  - {bundle}
listen:
  -
    port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    # ejabberd's default backlog is 5: a login storm would lose connections
    # in the accept queue. 1024 is what Chorus (tokio) and Prosody here use.
    backlog: 1024
    shaper: none
    access: all
auth_method: internal
auth_password_format: {self.password_format}
auth_scram_hash: sha256
# Per-address registration throttle (600 s by default): off, as for the others.
registration_timeout: infinity
shaper: {{}}
shaper_rules:
  max_user_sessions: 1000000
  max_user_offline_messages: 5000
  c2s_shaper: none
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
{MODULES}""")

    def spawn(self):
        d = self.dir
        env = {
            "EJABBERD_CONFIG_PATH": str(d / "ejabberd.yml"),
            "EJABBERD_LOG_PATH": str(d / "logs" / "ejabberd.log"),
            "ERL_LIBS": EBIN_PARENT,
            # ejabberdctl's defaults, but ports (sockets) above the open-file limit.
            "ERL_MAX_PORTS": "65536",
            "ERL_MAX_ETS_TABLES": "1400",
            "ERL_CRASH_DUMP": str(d / "logs" / "erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            "HOME": str(d),
        }
        argv = ["erl", "+K", "true", "+P", "1000000", "-noinput",
                "-mnesia", "dir", f'"{d / "spool"}"', "-s", "ejabberd"]
        # `erl` execs beam.smp: the pid sampled is the VM itself.
        self.procs.append(proc.spawn(argv, self.log, env=env, cwd=d))

    def log_tail(self):
        return proc.log_tail(self.log) + "\n--- ejabberd.log\n" + proc.log_tail(Path(self.dir / "logs" / "ejabberd.log"))
