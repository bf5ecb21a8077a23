"""bind: the same full JIDs bound concurrently on different nodes (see ghosts.py)."""

from ghosts import final, run_bind as run, setup  # noqa: F401
