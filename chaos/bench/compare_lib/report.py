"""The results as JSON (everything) and markdown (the table, the ratios, the
notes that say how the figures were made)."""

import json
from pathlib import Path

# Ratios are Chorus's figure over the other's, for these pairs when both ran.
PAIRS = [("chorus", "ejabberd"), ("chorus", "prosody"), ("chorus-3", "ejabberd"), ("chorus-3", "prosody")]

# (scenario, figure, column title, format, higher is better)
COLUMNS = [
    ("login", "logins_per_sec", "login storm, logins/s", "{:,.0f}", True),
    ("login", "p99_ms", "login p99 ms", "{:,.0f}", False),
    ("idle", "rss_kib_per_session", "KiB per idle session, plaintext", "{:,.1f}", False),
    ("idle-tls", "rss_kib_per_session", "KiB per idle session, STARTTLS", "{:,.1f}", False),
    ("peak", "peak_msgs_per_sec", "chat peak, msgs/s with p99 <= 20 ms", "{:,.0f}", True),
    ("chat", "p99_ms", "chat p99 ms at half Chorus's peak", "{:,.2f}", False),
]


def fmt(value, pattern):
    return "-" if value is None else pattern.format(value)


def cell(server: dict, scenario: str, figure: str, pattern: str) -> str:
    f = server["figures"].get(scenario)
    if f is None:
        return "failed" if server.get("error", "").startswith(scenario + ":") else "-"
    text = fmt(f.get(figure), pattern)
    if scenario == "peak" and f.get(figure) == 0:
        text = f"below {f.get('start', 0):,.0f}"
    if scenario == "login" and figure == "logins_per_sec":
        text += f" (p50 {fmt(f.get('p50_ms'), '{:,.0f}')} ms)"
    if scenario == "chat" and figure == "p99_ms":
        text = f"p50 {fmt(f.get('p50_ms'), '{:,.2f}')} / p99 {text}"
    if f.get("errors"):
        text += " (errors)"
    return text


def ratio(a: dict, b: dict, scenario: str, figure: str) -> str:
    x = (a["figures"].get(scenario) or {}).get(figure)
    y = (b["figures"].get(scenario) or {}).get(figure)
    if not x or not y:
        return "-"
    return f"{x / y:.2f}x"


def markdown(results: dict) -> str:
    meta, servers = results["meta"], results["servers"]
    lines = [f"# Chorus, ejabberd and Prosody side by side ({meta['date']})", ""]
    lines += [f"Made by `{meta['command']}` (docs/benchmarks.md, \"Side by side\"). "
              f"Every figure is the median of {meta['sizes']['runs']} run(s); each server ran alone, "
              "restarted before each run. Nothing here is asserted by a test.", ""]
    lines.append("| server | " + " | ".join(c[2] for c in COLUMNS) + " |")
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for name, s in servers.items():
        lines.append(f"| `{name}` | " + " | ".join(cell(s, *c[:2], c[3]) for c in COLUMNS) + " |")
    for a, b in PAIRS:
        if a in servers and b in servers:
            lines.append(f"| `{a}` / `{b}` | " +
                         " | ".join(ratio(servers[a], servers[b], c[0], c[1]) for c in COLUMNS) + " |")
    lines += ["", "Ratios are the first server's figure over the second's: above 1 is better for "
              "logins/s and the peak, below 1 is better for memory and latency.", ""]
    chat_rate = meta.get("chat_rate")
    if chat_rate:
        lines += [f"The chat column: every server offered {chat_rate:,.0f} msgs/s ({meta.get('chat_rate_why')}).", ""]

    lines += ["## Servers", "", "| server | what | version | SCRAM iterations | notes |", "|---|---|---|---|---|"]
    for name, s in servers.items():
        notes = "; ".join(s.get("notes", []))
        if s.get("error"):
            notes = (notes + "; " if notes else "") + "**failed**: " + s["error"].splitlines()[0]
        lines.append(f"| `{name}` | {s['label']} | {s['version']} | {s['scram_iterations']} | {notes} |")

    lines += ["", "## Each scenario", ""]
    for scenario in ("register", "login", "idle", "idle-tls", "peak", "chat"):
        rows = [(n, s["figures"][scenario]) for n, s in servers.items() if scenario in s["figures"]]
        if not rows:
            continue
        lines.append(f"### {scenario}")
        lines.append("")
        for n, f in rows:
            detail = {k: v for k, v in f.items() if k not in ("runs", "commands", "steps", "command")}
            lines.append(f"- `{n}`: " + ", ".join(f"{k} {fmt_any(v)}" for k, v in detail.items()))
            for r in f.get("runs", []):
                lines.append("  - run: " + ", ".join(f"{k} {fmt_any(v)}" for k, v in r.items()))
        first = rows[0][1]
        command = first.get("command") or (first.get("commands") or [""])[0]
        lines += ["", f"Command (first server, first run): `{command}`", ""]

    tsung = [(n, s["figures"]["tsung"]) for n, s in servers.items() if "tsung" in s["figures"]]
    if tsung:
        lines += ["## Cross-check: tsung", "", results.get("tsung_about", ""), "",
                  "| server | users | logins/s (offered) | login mean ms | chat msgs/s offered | messages sent / reads that brought one (at least) | latency mean ms, first message of each read | errors |",
                  "|---|---|---|---|---|---|---|---|"]
        for n, t in tsung:
            lines.append(f"| `{n}` | {t.get('users')} | {fmt(t.get('logins_per_sec'), '{:,.0f}')} "
                         f"({fmt(t.get('login_offered_per_sec'), '{:,.0f}')}) | {fmt(t.get('login_mean_ms'), '{:,.1f}')} | "
                         f"{fmt(t.get('chat_offered_per_sec'), '{:,.0f}')} | "
                         f"{fmt(t.get('chat_sent'), '{:,.0f}')} / {fmt(t.get('chat_timed'), '{:,.0f}')} | "
                         f"{fmt(t.get('chat_latency_mean_ms'), '{:,.2f}')} | {t.get('errors') or 'none'} |")
        lines.append("")

    m = meta
    lines += ["## Machine and sizes", "",
              f"- {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
              f"open-file limit {m['nofile']}; the generator shares the machine with the server",
              f"- commit {m['commit']}; binaries: {m['binaries']}; chorus-load sources {m['sources']}, "
              f"concurrency {m['concurrency']} logins per worker",
              "- sizes: " + ", ".join(f"{k} {v}" for k, v in m["sizes"].items()),
              f"- tsung: {m.get('tsung_version', 'not run')}", ""]
    if m.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in m["notes"]] + [""]
    return "\n".join(lines)


def fmt_any(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "results.json", out / "results.md"
    js.write_text(json.dumps(results, indent=2) + "\n")
    md.write_text(markdown(results))
    return [js, md]
