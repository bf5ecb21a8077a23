"""The tsung cross-check (chaos/bench/tsung/): the same login and chat
scenarios by another load generator, against a server already started.

tsung's users are the lines of a file (NAME;PASSWORD, each session the next
line), and it registers them itself (XEP-0077) first; it authenticates
with SASL PLAIN (it has no SCRAM), which makes every server check a password
by PBKDF2 at each login: its login rate is not the SCRAM storm's."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import signal
from pathlib import Path
from string import Template

HERE = Path(__file__).resolve().parents[1] / "tsung"
PREFIX, PASSWORD = "tsung", "tsung-password"

ABOUT = ("tsung 1.7.0's jabber plugin against each server, started alone as for chorus-load: its own "
         "accounts (`tsung0` ... `tsungN`, registered in-band by tsung), SASL PLAIN (tsung has no SCRAM, so every "
         "login costs the server a PBKDF2 run: not the SCRAM storm above), bind, session, roster, "
         "presence. The chat row: every user online, then messages to online users at a fixed "
         "rate, stamped. tsung times only the first stamped message of each read from a socket "
         "(ts_jabber.erl, `message_bidi`), so the reads that brought a message are a lower bound "
         "of the messages delivered: equal when every message arrives on its own, fewer when "
         "several arrive together. tsung runs in one Erlang VM on the same two cores.")


def render(name: str, out: Path, **values) -> Path:
    text = Template((HERE / f"{name}.xml").read_text()).substitute(**{k: str(v) for k, v in values.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def epmd_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-x", "epmd"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def run_tsung(xml: Path, logs: Path, timeout: float) -> Path:
    """Runs tsung to the end; the directory of its run (tsung.log in it).
    `logs` is one scenario's own: tsung names a run's directory by the minute,
    so two runs in one minute would share one."""
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    epmd_before = epmd_pids()
    env = {**os.environ, "HOME": str(logs),
           # Stats every second, not every ten: the runs here are short.
           "ERL_AFLAGS": "-tsung_controller dumpstats_interval 1000"}
    # A session of its own: on a timeout the Erlang VM goes with the script.
    p = subprocess.Popen(["tsung", "-n", "-i", "chorusbench", "-f", str(xml), "-l", str(logs), "start"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=env, start_new_session=True)
    try:
        output, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise TsungError(f"tsung did not finish within {timeout:.0f} s ({xml}; logs in {logs})")
    finally:
        # tsung's Erlang node needs epmd and leaves it running: stop the one
        # this run started, if it did (never one that was there before).
        for pid in epmd_pids() - epmd_before:
            os.kill(pid, signal.SIGTERM)
    runs = [d for d in logs.iterdir() if d.is_dir() and (d / "tsung.log").exists()]
    if not runs:
        raise TsungError(f"tsung exited {p.returncode} without a log:\n{output[-3000:]}")
    return runs[0]


class TsungError(Exception):
    pass


def parse(log: Path) -> dict:
    """tsung.log: a block per dump; sample lines are `stats: NAME count mean
    stddev max min global_mean global_count`, counters `stats: NAME count total`.
    Keeps each name's last totals and the times it was seen moving."""
    stats, first_seen, last_seen, t = {}, {}, {}, None
    for line in log.read_text(errors="replace").splitlines():
        m = re.match(r"# stats: dump at (\d+)", line)
        if m:
            t = int(m.group(1))
            continue
        if not line.startswith("stats: "):
            continue
        parts = line.split()
        name, values = parts[1], [float(v) if v.replace(".", "", 1).replace("-", "", 1).isdigit() else 0.0
                                  for v in parts[2:]]
        if values and values[0] > 0 and t is not None:
            first_seen.setdefault(name, t)
            last_seen[name] = t
        if len(values) >= 7:
            stats[name] = {"count": values[6], "mean": values[5]}
        elif len(values) >= 2:
            stats[name] = {"count": values[1]}
    return {"stats": stats, "first": first_seen, "last": last_seen}


def rate(parsed: dict, name: str) -> float | None:
    """Events a second over the dumps that saw them (one-second dumps: the
    first and last are whole seconds, hence the +1)."""
    s = parsed["stats"].get(name)
    if not s or not s["count"]:
        return None
    span = parsed["last"][name] - parsed["first"][name] + 1
    return s["count"] / span


def errors(parsed: dict) -> str:
    errs = {n: int(s["count"]) for n, s in parsed["stats"].items() if n.startswith("error") and s["count"]}
    return ", ".join(f"{n} {c}" for n, c in errs.items())


def arrival_secs(users: int, rate: float) -> int:
    """An arrival phase long enough for all `users` at `rate`, with room: tsung
    ends a phase at its duration, and a busy tsung launches late."""
    return int(users / rate * 3) + 3


def run_all(endpoint: str, domain: str, users: int, work: Path, quick: bool = False,
            chat_rate: float | None = None, chat_secs: float | None = None) -> dict:
    host, port = endpoint.rsplit(":", 1)
    work.mkdir(parents=True, exist_ok=True)
    users_file = work / "users.csv"
    users_file.write_text("".join(f"{PREFIX}{i};{PASSWORD}\n" for i in range(users)))
    common = dict(host=host, port=port, domain=domain, users=users, users_file=users_file)
    out = {"users": users}

    reg_rate = 200
    reg = parse(run_tsung(render("register", work / "register.xml", rate=reg_rate,
                                 duration=arrival_secs(users, reg_rate), **common),
                          work / "logs-register", timeout=120 + users / 10) / "tsung.log")
    out["registered"] = reg["stats"].get("tr_register", {}).get("count")

    # Open loop, above what any server here completes, so the rate achieved is the server's.
    login_rate = 1000
    login = parse(run_tsung(render("login", work / "login.xml", rate=login_rate,
                                   duration=arrival_secs(users, login_rate), **common),
                            work / "logs-login", timeout=120 + users / 10) / "tsung.log")
    out["login_offered_per_sec"] = login_rate
    out["logins"] = login["stats"].get("tr_login", {}).get("count")
    out["logins_per_sec"] = rate(login, "tr_login")
    out["login_mean_ms"] = login["stats"].get("tr_login", {}).get("mean")
    errs = errors(login)

    chat_rate = chat_rate or (min(users, 200) if quick else users)
    chat_secs = chat_secs or (5 if quick else 20)
    think = users / chat_rate
    arrival = arrival_secs(users, 500)
    chat = parse(run_tsung(render("chat", work / "chat.xml", login_rate=500, duration=arrival,
                                  online_wait=arrival + 2, count=max(1, int(chat_secs / think)),
                                  think=f"{think:g}", drain=3, rate=chat_rate, **common),
                           work / "logs-chat", timeout=180 + users / 10 + chat_secs * 2) / "tsung.log")
    out["chat_offered_per_sec"] = chat_rate
    # One sample per read that held a stamp (tsung's message_bidi matches the first
    # stamp of what one read brought): a lower bound of the messages delivered.
    out["chat_timed"] = chat["stats"].get("xmpp_msg_latency", {}).get("count")
    out["chat_sent"] = chat["stats"].get("tr_message", {}).get("count") or 0
    span = max(1.0, max(1, int(chat_secs / think)) * think)
    out["chat_sent_per_sec"] = out["chat_sent"] / span
    out["chat_latency_mean_ms"] = chat["stats"].get("xmpp_msg_latency", {}).get("mean")
    errs = "; ".join(f"{what}: {e}" for what, e in (("login", errs), ("chat", errors(chat))) if e)
    out["errors"] = errs or None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="chaos/bench/tsung/run",
                                description="tsung's login and chat scenarios against servers already "
                                            "running (one HOST:PORT each); registers tsung's own accounts.")
    p.add_argument("servers", nargs="+", metavar="HOST:PORT")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--chat-rate", type=float, help="msgs/s in all (default: one per user a second)")
    p.add_argument("--chat-secs", type=float, default=20)
    p.add_argument("--work", default=None, help="tsung's configs and logs (default: a new dir under /var/tmp)")
    args = p.parse_args(argv)
    if not shutil.which("tsung"):
        print("tsung is not installed (chaos/bench/compare installs it: ensure_tsung)", file=sys.stderr)
        return 1
    import json
    import tempfile
    work = Path(args.work or tempfile.mkdtemp(prefix="chorus-tsung-", dir="/var/tmp"))
    status = 0
    for server in args.servers:
        try:
            result = run_all(server, args.domain, args.users, work / server.replace(":", "-"),
                             chat_rate=args.chat_rate, chat_secs=args.chat_secs)
        except TsungError as e:
            print(f"{server}: {e}", file=sys.stderr)
            status = 1
            continue
        print(json.dumps({"server": server, **result}, indent=2))
    print(f"tsung's configs and logs: {work}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
