"""The PNG plots (matplotlib, no display: Agg)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _bars(servers: dict, scenario: str, figure: str, ylabel: str, title: str, path: Path):
    names = [n for n, s in servers.items() if (s["figures"].get(scenario) or {}).get(figure) is not None]
    if not names:
        return None
    values = [servers[n]["figures"][scenario][figure] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.0f" if max(values) >= 100 else "%.1f")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(results: dict, out: Path) -> list[Path]:
    servers, meta = results["servers"], results["meta"]
    runs = meta["sizes"]["runs"]
    written = [
        _bars(servers, "login", "logins_per_sec", "logins/s",
              f"Login storm after a restart, {meta['sizes']['users']:,} users (median of {runs})",
              out / "logins.png"),
        _bars(servers, "idle", "rss_kib_per_session", "KiB of RSS per session",
              f"Idle sessions, plaintext, {meta['sizes']['users']:,} users (median of {runs})",
              out / "rss-per-session.png"),
        _bars(servers, "idle-tls", "rss_kib_per_session", "KiB of RSS per session",
              f"Idle sessions, STARTTLS, {meta['sizes']['users']:,} users (median of {runs})",
              out / "rss-per-session-tls.png"),
        _latency(servers, meta, out / "chat-latency.png"),
    ]
    return [p for p in written if p]


def _latency(servers: dict, meta: dict, path: Path):
    """p99 against offered rate from every peak step; a step that lost messages
    is drawn hollow (its p99 counts only what arrived)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for name, s in servers.items():
        peak = s["figures"].get("peak")
        if not peak:
            continue
        points = sorted((st["rate"], st["p99_ms"], st["delivered"] >= st["sent"])
                        for run in peak["steps"] for st in run)
        if not points:
            continue
        line, = ax.plot([p[0] for p in points], [max(p[1], 0.01) for p in points], "-", label=name, alpha=0.8)
        for rate, p99, complete in points:
            ax.plot(rate, max(p99, 0.01), "o", color=line.get_color(),
                    markerfacecolor=line.get_color() if complete else "none")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(20, color="grey", linestyle=":", label="20 ms target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered msgs/s")
    ax.set_ylabel("delivery latency p99, ms")
    ax.set_title(f"Chat, {meta['sizes']['chat_users']:,} users: p99 against offered rate (peak steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
