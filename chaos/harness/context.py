"""What workloads get: one context shared by every workload of a run (workloads may keep
state on it for each other, e.g. bind and sessions share their final ghost check)."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any, Callable

import hosts
from history import History
from hosts import ApiError, Node


class WorkloadContext:
    def __init__(self, *, history: History, nodes: list[Node], seed: int, domain: str,
                 out_dir: Path, failure_timeout: float, log: Callable[[str], None] = hosts.log):
        self.history = history
        self.nodes = nodes
        self.rng = random.Random(f"{seed}/workloads")
        self.domain = domain
        self.out_dir = out_dir
        self.failure_timeout = failure_timeout
        self.log = log
        self.accounts: dict[str, str] = {}
        self._processes = itertools.count()

    def new_process(self) -> int:
        """A process id no other operation of this run has used."""
        return next(self._processes)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    async def api(self, node: Node, method: str, path: str, body: Any = None,
                  timeout: float = 10) -> tuple[int, Any]:
        """(status, JSON body) from `node`'s admin API. Raises hosts.ApiUnreachable (not
        sent) or hosts.ApiIndeterminate (sent, no complete answer)."""
        return await node.api_async(method, path, body, timeout=timeout)

    async def create_account(self, user: str, password: str, timeout: float = 60) -> str:
        """Create `user@domain` (or a bare JID given whole) through the admin API, trying
        the nodes in turn until one commits it; an account that exists already counts."""
        jid = user if "@" in user else f"{user}@{self.domain}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "no attempt"
        while loop.time() < deadline:
            for node in self.rng.sample(self.nodes, len(self.nodes)):
                try:
                    status, body = await self.api(node, "POST", "/api/v1/users",
                                                  {"jid": jid, "password": password}, timeout=15)
                except ApiError as e:
                    last = str(e)
                    continue
                if status in (200, 201, 409):
                    self.accounts[jid] = password
                    return jid
                last = f"{node.name}: {status} {body}"
                if 400 <= status < 500:
                    raise RuntimeError(f"creating {jid}: {last}")
            await asyncio.sleep(0.5)
        raise TimeoutError(f"creating {jid}: {last}")

    async def create_accounts(self, users: list[str], password: str) -> list[str]:
        return [await self.create_account(u, password) for u in users]
