#!/usr/bin/env python3
"""Per-nemesis counts for the results table in docs/chaos.md.

    python3 chaos/harness/tally.py chaos/runs/20261125T145941Z chaos/runs/...

For each nemesis: in how many of the given runs it was drawn, and in how many of those
the checker said valid. Reads each run's history.jsonl and results.json only."""

import collections
import json
import sys
from pathlib import Path

from nemesis import NAMES


def tally(run_dirs):
    runs = collections.Counter()
    valid = collections.Counter()
    for d in map(Path, run_dirs):
        drawn = set()
        with open(d / "history.jsonl") as f:
            for line in f:
                op = json.loads(line)
                if op.get("workload") == "nemesis" and op.get("f") == "start":
                    drawn.add(op["value"]["nemesis"])
        ok = json.loads((d / "results.json").read_text()).get("valid") is True
        for n in drawn:
            runs[n] += 1
            valid[n] += ok
    return runs, valid


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: tally.py RUN_DIR...")
    runs, valid = tally(sys.argv[1:])
    print("| nemesis | runs | valid |")
    print("|---|---|---|")
    for name in NAMES:
        print(f"| {name} | {runs[name]} | {valid[name]} |")


if __name__ == "__main__":
    main()
