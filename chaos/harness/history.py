"""The run's history: every operation's invoke and its outcome, one JSON object per line.

    h = History(path)
    op = h.invoke(process, "register", "write", value="v3", key="k1", node="n2")
    op.ok()                      # or op.fail(value=...), op.info(value=...)
    h.observe(process, "messages", "read", ["m1", "m7"], node="n1")
    h.nemesis("start", "partition-halves", {"grudge": {...}})

A line:
    {"index": i, "time": ns since the run started (monotonic clock), "process": int or
     "nemesis", "type": "invoke"|"ok"|"fail"|"info", "workload": str, "f": str,
     "key"?: str, "value": any, "node"?: "n3", "error"?: str}

`value` of an outcome defaults to the invoked value; `error` (outcomes only) says why an
operation failed or is unknown, for people reading the history.

Meaning of the outcome types (Jepsen's):
- ok: the operation took effect (for a read: the value was read);
- fail: it certainly did not take effect;
- info: unknown (timed out, connection lost after sending): it may take effect at any
  time later. A process whose operation ended in `info` must not be used again: take a
  new process id (the workload context's `new_process()`), as Jepsen does.

Nemesis events are type "info" lines with process "nemesis", workload "nemesis",
f "start" | "stop" | "info" and value {"nemesis": name, "detail": ...}.

Writing is thread-safe (one lock, each line flushed at once) and never blocks for long,
so it is called directly from asyncio tasks and from nemesis threads alike.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

_UNSET = object()

OUTCOMES = ("ok", "fail", "info")
NEMESIS_EVENTS = ("start", "stop", "info")


class History:
    def __init__(self, path: str | Path, start_ns: int | None = None):
        self.path = Path(path)
        self.start_ns = time.monotonic_ns() if start_ns is None else start_ns
        self._lock = threading.Lock()
        self._index = 0
        self._file = open(self.path, "a", encoding="utf-8")

    def now(self) -> int:
        """Nanoseconds since the run started."""
        return time.monotonic_ns() - self.start_ns

    def _write(self, entry: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._file.closed:
                raise RuntimeError(f"history {self.path} is closed")
            line = {"index": self._index, "time": self.now()}
            line.update(entry)
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._file.flush()
            self._index += 1
            return line

    @staticmethod
    def _entry(process, type_, workload, f, value, key, node) -> dict[str, Any]:
        entry: dict[str, Any] = {"process": process, "type": type_, "workload": workload, "f": f}
        if key is not None:
            entry["key"] = key
        entry["value"] = value
        if node is not None:
            entry["node"] = node
        return entry

    def invoke(self, process: int, workload: str, f: str, value: Any = None,
               key: str | None = None, node: str | None = None) -> "Op":
        """Write the invoke line; complete the returned Op exactly once."""
        self._write(self._entry(process, "invoke", workload, f, value, key, node))
        return Op(self, process, workload, f, value, key, node)

    def observe(self, process: int, workload: str, f: str, value: Any,
                node: str | None = None, key: str | None = None) -> dict[str, Any]:
        """A single `ok` line: something seen rather than done (e.g. a message arriving)."""
        return self._write(self._entry(process, "ok", workload, f, value, key, node))

    def nemesis(self, event: str, name: str, detail: Any = None) -> dict[str, Any]:
        if event not in NEMESIS_EVENTS:
            raise ValueError(f"nemesis event must be one of {NEMESIS_EVENTS}, not {event!r}")
        return self._write(self._entry("nemesis", "info", "nemesis", event,
                                       {"nemesis": name, "detail": detail}, None, None))

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Op:
    """An invoked operation; `ok`, `fail` or `info` completes it, once."""

    def __init__(self, history: History, process, workload, f, value, key, node):
        self.history = history
        self.process = process
        self.workload = workload
        self.f = f
        self.value = value
        self.key = key
        self.node = node
        self.outcome: str | None = None
        self._lock = threading.Lock()

    def _complete(self, type_: str, value: Any, error: str | None) -> dict[str, Any]:
        with self._lock:
            if self.outcome is not None:
                raise RuntimeError(
                    f"operation {self.workload}/{self.f} of process {self.process} completed "
                    f"twice ({self.outcome}, then {type_})")
            self.outcome = type_
        value = self.value if value is _UNSET else value
        entry = History._entry(self.process, type_, self.workload, self.f, value, self.key,
                               self.node)
        if error is not None:
            entry["error"] = error
        return self.history._write(entry)

    def ok(self, value: Any = _UNSET, error: str | None = None) -> dict[str, Any]:
        """It took effect; `value` defaults to the invoked value (give the read value for reads)."""
        return self._complete("ok", value, error)

    def fail(self, value: Any = _UNSET, error: str | None = None) -> dict[str, Any]:
        """It certainly did not take effect."""
        return self._complete("fail", value, error)

    def info(self, value: Any = _UNSET, error: str | None = None) -> dict[str, Any]:
        """Unknown whether it took effect (the process must not be reused)."""
        return self._complete("info", value, error)

    @property
    def done(self) -> bool:
        return self.outcome is not None
