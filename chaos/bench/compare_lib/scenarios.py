"""The scenarios, each run against one server at a time: the server started
(from the data it had), the generator run, the server stopped. Every figure is
the median of the runs; every run's figures are kept beside it."""

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from .load import Load, LoadError, Run
from .server import Server


@dataclass
class Sizes:
    users: int = 10_000
    chat_users: int = 1_000
    runs: int = 3
    hold: float = 15
    peak_start: float = 250
    peak_max: float = 200_000
    step_secs: float = 5
    bisect: int = 3
    chat_secs: float = 10
    # Seconds a server is left alone after it starts, before an idle run's
    # first RSS sample: ejabberd's VM gives back start-up memory over the
    # first seconds, which would otherwise count against its sessions.
    settle: float = 5

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(users=200, chat_users=100, runs=1, hold=3, peak_start=250,
                   peak_max=16_000, step_secs=2, bisect=1, chat_secs=3, settle=2)


class ScenarioError(Exception):
    pass


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Bench:
    def __init__(self, load: Load, sizes: Sizes, raw: Path):
        self.load, self.sizes, self.raw = load, sizes, raw

    # --- one server session ----------------------------------------------
    def started(self, server: Server):
        """Starts the server and waits until a client can log in on every
        node (a cluster serves once it has a leader, after its ports open)."""
        server.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                run = self.load.run(server, ["login", "--timeout", "5"], len(server.endpoints()),
                                    self.report(server, "probe"), timeout=30, prefix="probe",
                                    register=True, pids=False)
                if run.ok:
                    return
                why = run.errors()
            except LoadError as e:
                why = str(e)
            if time.monotonic() > deadline:
                server.stop()
                raise ScenarioError(f"started, but no client could log in within 60 s: {why}")
            time.sleep(1)

    def report(self, server: Server, what: str) -> Path:
        d = self.raw / server.name
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{what}.json"

    def each_run(self, server: Server, what: str, scenario: list[str], users: int,
                 timeout: float, tls: bool = False, settle: float = 0) -> list[Run]:
        runs = []
        for i in range(self.sizes.runs):
            self.started(server)
            try:
                time.sleep(settle)
                runs.append(self.load.run(server, scenario, users, self.report(server, f"{what}-{i}"),
                                          timeout, tls=tls))
            finally:
                server.stop()
            print(f"  {server.name} {what} run {i + 1}/{self.sizes.runs}: {summary(what, runs[-1])}",
                  flush=True)
        return runs

    # --- the scenarios ----------------------------------------------------
    def register(self, server: Server) -> dict:
        users = max(self.sizes.users, self.sizes.chat_users)
        self.started(server)
        try:
            run = self.load.run(server, ["login"], users, self.report(server, "register"),
                                timeout=300 + users / 10, register=True)
        finally:
            server.stop()
        if not run.ok:
            raise ScenarioError(f"registering {users} accounts: {run.errors()}")
        login = run.report["login"]
        return {"users": users, "secs": login["secs"], "per_sec": login["per_sec"],
                "cpu_secs": run.report["server"].get("cpu_secs"), "command": run.command}

    def login(self, server: Server) -> dict:
        s = self.sizes
        runs = self.each_run(server, "login", ["login"], s.users, timeout=120 + s.users / 20)
        return figures(runs, {
            "logins_per_sec": lambda r: r["login"]["per_sec"],
            "p50_ms": lambda r: r["login"]["latency"]["p50_ms"],
            "p99_ms": lambda r: r["login"]["latency"]["p99_ms"],
            "cpu_secs": lambda r: r["server"].get("cpu_secs"),
        }, users=s.users)

    def idle(self, server: Server, tls: bool = False) -> dict:
        s = self.sizes
        runs = self.each_run(server, "idle-tls" if tls else "idle",
                             ["idle", "--hold", str(s.hold)], s.users,
                             timeout=120 + s.users / 20 + s.hold, tls=tls, settle=s.settle)
        return figures(runs, {
            "rss_kib_per_session": lambda r: r["server"].get("rss_per_session_kib"),
            "rss_before_kib": lambda r: (r["server"].get("before") or {}).get("rss_kib"),
            "rss_end_kib": lambda r: (r["server"].get("end") or {}).get("rss_kib"),
            "logins_per_sec": lambda r: r["login"]["per_sec"],
            "cpu_secs": lambda r: r["server"].get("cpu_secs"),
        }, users=s.users, hold_secs=s.hold, tls=tls)

    def peak(self, server: Server) -> dict:
        s = self.sizes
        steps = 2 + int(max(1, s.peak_max / s.peak_start)).bit_length() + s.bisect
        runs = self.each_run(server, "peak",
                             ["peak", "--start", str(s.peak_start), "--max", str(s.peak_max),
                              "--step-secs", str(s.step_secs), "--bisect", str(s.bisect)],
                             s.chat_users, timeout=180 + s.chat_users / 20 + steps * (s.step_secs * 3 + 5))
        out = figures(runs, {
            "peak_msgs_per_sec": lambda r: r.get("peak") or 0.0,
            "cpu_secs": lambda r: r["server"].get("cpu_secs"),
        }, users=s.chat_users, start=s.peak_start, step_secs=s.step_secs, errors_are_results=True)
        out["steps"] = [[{"rate": st["rate"], "good": st["good"], "p50_ms": st["chat"]["latency"]["p50_ms"],
                          "p99_ms": st["chat"]["latency"]["p99_ms"], "sent": st["chat"]["sent"],
                          "delivered": st["chat"]["delivered"]} for st in r.report.get("steps", [])]
                        for r in runs]
        return out

    def chat(self, server: Server, rate: float) -> dict:
        s = self.sizes
        runs = self.each_run(server, "chat",
                             ["chat", "--rate", str(rate), "--secs", str(s.chat_secs), "--drain", "2"],
                             s.chat_users, timeout=120 + s.chat_users / 20 + s.chat_secs + 30)
        return figures(runs, {
            "p50_ms": lambda r: (r.get("chat") or {}).get("latency", {}).get("p50_ms"),
            "p99_ms": lambda r: (r.get("chat") or {}).get("latency", {}).get("p99_ms"),
            "delivered_per_sec": lambda r: (r.get("chat") or {}).get("per_sec"),
            "lost": lambda r: ((r.get("chat") or {}).get("sent", 0) - (r.get("chat") or {}).get("delivered", 0)),
            "cpu_secs": lambda r: r["server"].get("cpu_secs"),
        }, users=s.chat_users, rate=rate, secs=s.chat_secs, errors_are_results=True)


def figures(runs: list[Run], pick: dict, errors_are_results: bool = False, **about) -> dict:
    """The median of each figure over the runs, every run's own figures, and the
    errors any run counted (with errors_are_results, as for a chat run that lost
    messages or a peak search with no good rate, they are notes, not errors)."""
    per_run = [{k: f(r.report) for k, f in pick.items()} for r in runs]
    out = {k: median([p[k] for p in per_run]) for k in pick}
    out.update(about)
    out["runs"] = per_run
    out["commands"] = [r.command for r in runs]
    errors = [r.errors() for r in runs if not r.ok]
    if errors and not errors_are_results:
        out["errors"] = errors
    elif errors:
        out["notes"] = errors
    return out


def summary(what: str, run: Run) -> str:
    r = run.report
    s = r.get("server", {})
    if what == "peak":
        text = f"peak {r.get('peak') or 0:.0f} msgs/s"
    elif what == "chat":
        c = r.get("chat") or {}
        text = (f"{c.get('delivered', 0)} of {c.get('sent', 0)} delivered, "
                f"p50 {c.get('latency', {}).get('p50_ms', 0):.2f} ms, p99 {c.get('latency', {}).get('p99_ms', 0):.2f} ms")
    elif what.startswith("idle"):
        per = s.get("rss_per_session_kib")
        text = f"{per:.1f} KiB per session" if per is not None else "no RSS figure"
    else:
        l = r["login"]
        text = f"{l['per_sec']:.0f} logins/s, p50 {l['latency']['p50_ms']:.0f} ms, p99 {l['latency']['p99_ms']:.0f} ms"
    cpu = s.get("cpu_secs")
    if cpu is not None:
        text += f", CPU {cpu:.2f} s"
    if not run.ok:
        text += f"; errors: {run.errors()}"
    return text
