"""The command line of chaos/bench/compare and the order of work: every
scenario against every server in turn, then the table and the plots."""

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from . import certs, machine, proc, report
from .chorus import Chorus
from .ejabberd import Ejabberd
from .load import Load, LoadError
from .prosody import Prosody
from .scenarios import Bench, ScenarioError, Sizes
from .server import Env

SERVERS = ["chorus", "chorus-3", "ejabberd", "ejabberd-plain", "prosody"]
SCENARIOS = ["login", "idle", "idle-tls", "peak", "chat"]
DOMAIN = "bench.test"

# Ports 26000-26999, one range per server (each runs alone, but a port of the
# last one may still be closing).
PORTS = {"ejabberd": 26100, "ejabberd-plain": 26200, "prosody": 26300, "chorus": 26400, "chorus-3": 26500}


def parse(argv):
    p = argparse.ArgumentParser(prog="chaos/bench/compare",
                                description="Chorus beside ejabberd and Prosody: the same scenarios by "
                                            "chorus-load against each server in turn on this machine.")
    p.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated, of {','.join(SERVERS)}")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {','.join(SCENARIOS)}")
    p.add_argument("--users", type=int, help="users of the login and idle scenarios (10000)")
    p.add_argument("--chat-users", type=int, help="users of the peak and chat scenarios (1000)")
    p.add_argument("--runs", type=int, help="runs per figure, the median kept (3)")
    p.add_argument("--hold", type=float, help="seconds the idle scenarios hold the sessions (15)")
    p.add_argument("--step-secs", type=float, help="seconds per peak step (5)")
    p.add_argument("--chat-rate", type=float,
                   help="offered msgs/s of the chat scenario (default: half of Chorus's peak in this invocation)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of every server and scenario: 200 users, 100 chatting, one run, short steps")
    p.add_argument("--tsung", action="store_true", help="also the tsung cross-check (chaos/bench/tsung)")
    p.add_argument("--tsung-users", type=int, help="users of the tsung scenarios (1000; 100 with --quick)")
    p.add_argument("--sources", type=int, default=4, help="chorus-load --sources (4)")
    p.add_argument("--concurrency", type=int, default=200, help="chorus-load --concurrency (200)")
    p.add_argument("--out", default="docs/benchmarks", help="where results.md, results.json and the plots go")
    p.add_argument("--work", help="the servers' data and logs (default: a new directory under /var/tmp, "
                                  "removed at the end unless --keep-work)")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--bin-dir", default=os.environ.get("CHORUS_BIN_DIR"),
                   help="where chorus and chorus-load are (the entry point sets it)")
    args = p.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.servers:
        if s not in SERVERS:
            p.error(f"unknown server {s} (known: {', '.join(SERVERS)})")
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s} (known: {', '.join(SCENARIOS)})")
    if not args.bin_dir:
        p.error("no --bin-dir (run chaos/bench/compare, which builds the binaries or takes CHORUS_BIN_DIR)")
    return args


def sizes_of(args) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    for field in ("users", "chat_users", "runs", "hold", "step_secs"):
        if getattr(args, field) is not None:
            setattr(sizes, field, getattr(args, field))
    if sizes.runs < 1 or sizes.users < 1 or sizes.chat_users < 2:
        raise SystemExit("--runs and --users at least 1, --chat-users at least 2")
    return sizes


def build(name: str, env: Env):
    if name == "chorus":
        return Chorus(name, env, PORTS[name], nodes=1)
    if name == "chorus-3":
        return Chorus(name, env, PORTS[name], nodes=3)
    if name == "ejabberd":
        return Ejabberd(name, env, PORTS[name], "scram")
    if name == "ejabberd-plain":
        return Ejabberd(name, env, PORTS[name], "plain")
    return Prosody(name, env, PORTS[name])


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sizes = sizes_of(args)
    nofile = proc.raise_open_files()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="chorus-compare-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    cert, key = certs.make(work / "tls", DOMAIN)
    env = Env(DOMAIN, cert, key, Path(args.bin_dir).resolve(), work)
    load = Load(env.bin_dir, DOMAIN, args.sources, args.concurrency, work / "chorus-load.log", work)
    bench = Bench(load, sizes, work / "reports")
    servers = [build(n, env) for n in args.servers]
    print(f"work directory {work}; generator output in {load.log}", flush=True)

    results = {"meta": {
        **machine.describe(),
        "command": os.environ.get("CHORUS_COMPARE_COMMAND") or shlex.join(["chaos/bench/compare", *sys.argv[1:]]),
        "binaries": os.environ.get("CHORUS_COMPARE_BINARIES", "given by --bin-dir"),
        "nofile": nofile, "sources": args.sources, "concurrency": args.concurrency,
        "sizes": {"users": sizes.users, "chat_users": sizes.chat_users, "runs": sizes.runs,
                  "hold_secs": sizes.hold, "peak_start": sizes.peak_start, "step_secs": sizes.step_secs,
                  "bisect": sizes.bisect, "chat_secs": sizes.chat_secs},
        "notes": [
            f"benchmark domain {DOMAIN} on 127.0.0.1, no traffic shaping; one self-signed ECDSA P-256 "
            "certificate for every server; every server logs at warning level",
            "SCRAM-SHA-256 for every login; the generator keeps each account's salted password "
            "(`--keys`), so a login runs no PBKDF2 on the client; on the server only `ejabberd-plain` "
            "runs one per login (it stores the password, not the keys)",
            "listen backlog 1024 everywhere (Chorus: tokio's; ejabberd's default is 5, Prosody's 128)",
        ],
    }, "servers": {}}
    failed = False
    try:
        for s in servers:
            results["servers"][s.name] = {"label": s.label, "version": s.version(),
                                          "scram_iterations": s.scram_iterations,
                                          "notes": list(s.notes), "figures": {}}
            s.configure()

        def attempt(s, scenario, fn):
            nonlocal failed
            row = results["servers"][s.name]
            if row.get("error"):
                return
            print(f"{s.name}: {scenario}", flush=True)
            try:
                row["figures"][scenario] = fn()
            except (proc.ServerError, LoadError, ScenarioError) as e:
                failed = True
                row["error"] = f"{scenario}: {e}"
                print(f"{s.name}: {scenario} FAILED: {e}\n--- {s.name} log tail\n{s.log_tail()}",
                      file=sys.stderr, flush=True)
            finally:
                s.stop()

        for s in servers:
            attempt(s, "register", lambda: bench.register(s))
        for scenario in args.scenarios:
            if scenario == "chat":
                rate, why = chat_rate(args, results)
                if rate is None:
                    results["meta"]["notes"].append(f"chat not run: {why}")
                    continue
                results["meta"]["chat_rate"], results["meta"]["chat_rate_why"] = rate, why
            for s in servers:
                if scenario == "login":
                    attempt(s, scenario, lambda: bench.login(s))
                elif scenario in ("idle", "idle-tls"):
                    attempt(s, scenario, lambda: bench.idle(s, tls=scenario == "idle-tls"))
                elif scenario == "peak":
                    attempt(s, scenario, lambda: bench.peak(s))
                else:
                    attempt(s, scenario, lambda: bench.chat(s, rate))
        if args.tsung:
            from . import tsung
            results["meta"]["tsung_version"] = machine.tsung_version()
            results["tsung_about"] = tsung.ABOUT
            users = args.tsung_users or (100 if args.quick else 1000)
            for s in servers:
                attempt(s, "tsung", lambda: tsung_row(s, bench, users, work, args.quick))
    except KeyboardInterrupt:
        failed = True
        print("interrupted: writing what was measured", file=sys.stderr)
    finally:
        for s in servers:
            s.stop()
    # matplotlib only now: --help and a bad argument need no plotting library.
    from . import plots
    written = report.write(results, out) + plots.write(results, out)
    print("wrote " + ", ".join(str(p) for p in written))
    if not args.keep_work and not failed:
        shutil.rmtree(work, ignore_errors=True)
    elif failed:
        print(f"kept {work} (servers' logs and the generator's output)", file=sys.stderr)
    return 1 if failed else 0


def chat_rate(args, results):
    if args.chat_rate:
        return args.chat_rate, "given by --chat-rate"
    peak = (results["servers"].get("chorus", {}).get("figures", {}).get("peak") or {}).get("peak_msgs_per_sec")
    if peak:
        return peak / 2, f"half of the `chorus` peak, {peak:,.0f} msgs/s, measured in this invocation"
    return None, "no Chorus peak measured in this invocation and no --chat-rate"


def tsung_row(server, bench: Bench, users: int, work: Path, quick: bool) -> dict:
    """One tsung pass (its accounts, login, chat) against a fresh start of the
    server; a cluster through its first node only (tsung names one server)."""
    from . import tsung
    bench.started(server)
    try:
        row = tsung.run_all(server.endpoints()[0], DOMAIN, users, work / "tsung" / server.name, quick=quick)
    finally:
        server.stop()
    if len(server.endpoints()) > 1:
        row["note"] = "every tsung user on the first node"
    return row
