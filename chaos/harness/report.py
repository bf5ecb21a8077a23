"""report.html for one run: a timeline of the history with faults as bands, operation
latencies as points (one row per workload, log-scaled latency), failures and unknown
outcomes marked, and the checkers' verdicts. Self-contained HTML and SVG, no scripts.

    python3 chaos/harness/report.py RUN_DIR        (reads history.jsonl, results.json)"""

import html
import json
import math
import sys
from pathlib import Path

WIDTH = 1200
ROW = 140
LEFT = 110
COLORS = {"ok": "#2a7", "fail": "#d33", "info": "#e90"}


def load(run: Path):
    ops = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    results = {}
    if (run / "results.json").exists():
        results = json.loads((run / "results.json").read_text())
    return ops, results


def pair(ops):
    """(workload, f, type, start ns, end ns) for completed operations; nemesis bands."""
    open_ops, done, bands, open_faults = {}, [], [], {}
    for op in ops:
        p, t = op.get("process"), op.get("type")
        if p == "nemesis":
            v = op.get("value") or {}
            name = v.get("nemesis") or v.get("name") or str(v)
            if op.get("f") == "start":
                open_faults[name] = op["time"]
            elif op.get("f") == "stop":
                names = [name] if name in open_faults else list(open_faults)
                for n in names:
                    bands.append((n, open_faults.pop(n), op["time"]))
            continue
        if t == "invoke":
            open_ops[p] = op
        elif p in open_ops:
            inv = open_ops.pop(p)
            done.append((op.get("workload"), op.get("f"), t, inv["time"], op["time"]))
    end = max((o["time"] for o in ops), default=1)
    for n, start in open_faults.items():
        bands.append((n, start, end))
    return done, bands, end


def svg(done, bands, end):
    workloads = sorted({d[0] for d in done})
    height = 40 + ROW * max(1, len(workloads))
    x = lambda ns: LEFT + (WIDTH - LEFT - 20) * ns / max(end, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">']
    for i, (name, s, e) in enumerate(bands):
        out.append(f'<rect x="{x(s):.1f}" y="20" width="{max(1, x(e) - x(s)):.1f}" height="{height - 40}" fill="#fd8" opacity="0.35"><title>{html.escape(name)}</title></rect>')
        out.append(f'<text x="{x(s) + 2:.1f}" y="{14 + (i % 2) * 0}" fill="#a60">{html.escape(name)}</text>')
    for row, w in enumerate(workloads):
        top = 20 + row * ROW
        out.append(f'<line x1="{LEFT}" y1="{top + ROW}" x2="{WIDTH - 20}" y2="{top + ROW}" stroke="#ccc"/>')
        out.append(f'<text x="4" y="{top + ROW / 2}">{html.escape(w)}</text>')
        out.append(f'<text x="4" y="{top + 12}" fill="#888">10 s</text><text x="4" y="{top + ROW - 2}" fill="#888">1 ms</text>')
        for wl, f, t, s, e in done:
            if wl != w:
                continue
            lat = max(e - s, 1_000_000) / 1e9
            frac = (math.log10(lat) + 3) / 4  # 1 ms .. 10 s
            y = top + ROW - 4 - (ROW - 8) * min(max(frac, 0), 1)
            color = COLORS.get(t, "#555")
            r = 1.6 if t == "ok" else 3
            out.append(f'<circle cx="{x(e):.1f}" cy="{y:.1f}" r="{r}" fill="{color}"><title>{html.escape(f"{f} {t} {lat * 1000:.0f} ms")}</title></circle>')
    secs = int(end / 1e9)
    step = max(10, (secs // 12) // 10 * 10 or 10)
    for s in range(0, secs + 1, step):
        out.append(f'<text x="{x(s * 1e9):.1f}" y="{height - 6}" fill="#555">{s}s</text>')
    out.append("</svg>")
    return "\n".join(out)


def write(run: Path):
    ops, results = load(run)
    done, bands, end = pair(ops)
    valid = results.get("valid", "not checked")
    checkers = results.get("checkers", {})
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v.get('valid')))}</td>"
        f"<td><pre>{html.escape(json.dumps({kk: vv for kk, vv in v.items() if kk != 'valid'}, indent=1)[:3000])}</pre></td></tr>"
        for k, v in checkers.items()
    )
    counts = {}
    for wl, f, t, *_ in done:
        counts[(wl, t)] = counts.get((wl, t), 0) + 1
    summary = ", ".join(f"{wl} {t}: {n}" for (wl, t), n in sorted(counts.items()))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>chaos run {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;margin:20px}} td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}} pre{{margin:0;max-height:300px;overflow:auto}}</style></head>
<body><h1>Chaos run {html.escape(run.name)}: valid = {html.escape(str(valid))}</h1>
<p>{len(done)} operations ({html.escape(summary)}); {len(bands)} faults (yellow bands). Points: completion time (x) and latency (y, log scale 1 ms-10 s);
<span style="color:{COLORS['ok']}">ok</span>, <span style="color:{COLORS['fail']}">fail</span>, <span style="color:{COLORS['info']}">info (unknown outcome)</span>.</p>
{svg(done, bands, end)}
<h2>Checkers</h2><table><tr><th>checker</th><th>valid</th><th>evidence</th></tr>{rows}</table>
</body></html>"""
    (run / "report.html").write_text(page)


if __name__ == "__main__":
    write(Path(sys.argv[1]))
