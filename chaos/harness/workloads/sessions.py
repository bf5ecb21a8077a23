"""sessions: clients connect, disconnect and get cut off while nodes die (see ghosts.py)."""

from ghosts import final, run_sessions as run, setup  # noqa: F401
