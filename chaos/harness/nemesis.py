"""Nemeses: faults injected into the test hosts on a schedule, as Jepsen's nemeses.

Every nemesis has `start()` (inject) and `stop()` (heal); each records one history event
when it has acted (`History.nemesis("start"|"stop", name, detail)`), so the event's time
is when the fault became active or was healed. `stop()` copes with a `start()` that did
not finish.

| name             | start                                                   | stop              |
|------------------|---------------------------------------------------------|-------------------|
| partition-halves | random halves, each side drops the other's packets      | flush INPUT       |
| isolate-node     | one random node cut from every other node               | flush INPUT       |
| isolate-leader   | the leader cut from every other node                    | flush INPUT       |
| majorities-ring  | every node sees a majority, no two see the same one     | flush INPUT       |
| bridge           | two halves, one node in the middle sees both            | flush INPUT       |
| kill-node        | SIGKILL one random node                                 | start it again    |
| kill-minority    | SIGKILL a random minority ((n-1)/2 nodes)               | start them again  |
| kill-leader      | SIGKILL the leader                                      | start it again    |
| kill-all         | SIGKILL every node at once                              | start them all    |
| pause-node       | SIGSTOP one random node                                 | SIGCONT           |
| pause-leader     | SIGSTOP the leader                                      | SIGCONT           |
| clock-skew       | each node's wall clock offset by a random [-300, +300] s| offsets back to 0 |
| membership       | remove a random non-leader (DELETE /api/v1/cluster/members/{id}, through another node) | once the removal is confirmed: wipe its raft store and start it (it rejoins by multicast) |

Partitions are iptables DROP rules in INPUT of the receiving host namespaces (a "grudge":
host -> hosts it does not hear). The client namespace is never cut off from anyone.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import hosts
from history import History
from hosts import ApiError, Net, Node

NAMES = ["partition-halves", "isolate-node", "isolate-leader", "majorities-ring", "bridge",
         "kill-node", "kill-minority", "kill-leader", "kill-all", "pause-node", "pause-leader",
         "clock-skew", "membership"]
MAX_SKEW_SECS = 300
LEADER_WAIT_SECS = 5


@dataclass
class NemesisContext:
    net: Net
    nodes: list[Node]
    history: History
    rng: random.Random
    log: Callable[[str], None] = hosts.log
    lock: threading.RLock = field(default_factory=threading.RLock)

    def find_leader(self, wait: float = LEADER_WAIT_SECS) -> Node | None:
        deadline = time.monotonic() + wait
        while True:
            found = hosts.leader(self.nodes)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.3)


def names(nodes) -> list[str]:
    return sorted(n.name for n in nodes)


# --- grudges (pure: node lists in, {node: nodes it drops} out) -------------------------

def complete_grudge(components: list[list]) -> dict:
    """Every component drops every node outside it."""
    everyone = [n for c in components for n in c]
    return {n: [m for m in everyone if m not in c] for c in components for n in c}


def halves(nodes: list, rng: random.Random) -> list[list]:
    shuffled = rng.sample(nodes, len(nodes))
    mid = len(nodes) // 2
    return [shuffled[:mid], shuffled[mid:]]


def majorities_ring(nodes: list, rng: random.Random) -> dict:
    """Jepsen's majorities ring: nodes in a random ring; each sees the majority-sized
    window of the ring around itself and drops the rest. No two windows are equal; for
    an odd number of nodes the grudges are symmetric, for an even one some are one-way."""
    ring = rng.sample(nodes, len(nodes))
    n = len(ring)
    m = n // 2 + 1
    grudge = {}
    for i, node in enumerate(ring):
        window = {ring[(i + k) % n] for k in range(-(m // 2), m - m // 2)}
        grudge[node] = [x for x in ring if x not in window]
    return grudge


def bridge(nodes: list, rng: random.Random) -> tuple[dict, object]:
    """Two halves that do not hear each other, and one node (the bridge) heard by all."""
    shuffled = rng.sample(nodes, len(nodes))
    mid = len(nodes) // 2
    left, middle, right = shuffled[:mid], shuffled[mid], shuffled[mid + 1:]
    grudge = {n: list(right) for n in left}
    grudge.update({n: list(left) for n in right})
    grudge[middle] = []
    return grudge, middle


# --- nemeses -------------------------------------------------------------------------

class Nemesis:
    name = "?"

    def __init__(self, cx: NemesisContext):
        self.cx = cx
        self.active = False
        self.injected = False  # a "start" was recorded; its "stop" is due

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def record(self, event: str, detail) -> None:
        """History event. A "stop" is recorded only after a recorded "start" (a skipped
        start, e.g. no leader known, has nothing to heal)."""
        if event == "stop":
            if not self.injected:
                return
            self.injected = False
        elif event == "start":
            self.injected = True
        self.cx.history.nemesis(event, self.name, detail)
        self.cx.log(f"nemesis {self.name} {event}: {detail}")


class Partition(Nemesis):
    def grudge(self) -> tuple[dict, dict] | None:
        """({node: nodes it drops}, extra detail), or None to skip."""
        raise NotImplementedError

    def start(self) -> None:
        self.active = True
        planned = self.grudge()
        if planned is None:
            return
        grudge, extra = planned
        self.cx.net.apply_grudge({n.host: [m.host for m in ms] for n, ms in grudge.items()})
        self.record("start", {**extra, "grudge": {n.name: names(ms) for n, ms in
                                                  sorted(grudge.items(), key=lambda x: x[0].name)}})

    def stop(self) -> None:
        self.cx.net.heal()
        self.active = False
        self.record("stop", {"healed": "iptables -F INPUT on every host"})


class PartitionHalves(Partition):
    name = "partition-halves"

    def grudge(self):
        parts = halves(self.cx.nodes, self.cx.rng)
        return complete_grudge(parts), {"halves": [names(p) for p in parts]}


class IsolateNode(Partition):
    name = "isolate-node"

    def target(self) -> Node | None:
        return self.cx.rng.choice(self.cx.nodes)

    def grudge(self):
        victim = self.target()
        if victim is None:
            self.record("info", {"skipped": "no leader known"})
            return None
        others = [n for n in self.cx.nodes if n is not victim]
        return complete_grudge([[victim], others]), {"isolated": victim.name}


class IsolateLeader(IsolateNode):
    name = "isolate-leader"

    def target(self) -> Node | None:
        return self.cx.find_leader()


class MajoritiesRing(Partition):
    name = "majorities-ring"

    def grudge(self):
        return majorities_ring(self.cx.nodes, self.cx.rng), {}


class Bridge(Partition):
    name = "bridge"

    def grudge(self):
        grudge, middle = bridge(self.cx.nodes, self.cx.rng)
        return grudge, {"bridge": middle.name}


class Kill(Nemesis):
    def targets(self) -> list[Node] | None:
        raise NotImplementedError

    def start(self) -> None:
        self.active = True
        self.killed: list[Node] = []
        targets = self.targets()
        if not targets:
            self.record("info", {"skipped": "no leader known"})
            return
        # All SIGKILLs first, then reap: "at once".
        for n in targets:
            if n.signal(signal.SIGKILL):
                self.killed.append(n)
        for n in self.killed:
            n.proc.wait()
            n.paused = False
        self.record("start", {"killed": names(self.killed)})

    def stop(self) -> None:
        restarted = []
        for n in getattr(self, "killed", []):
            if not n.running:
                n.start()
                restarted.append(n)
        self.active = False
        self.record("stop", {"restarted": names(restarted)})


class KillNode(Kill):
    name = "kill-node"

    def targets(self):
        return [self.cx.rng.choice(self.cx.nodes)]


class KillMinority(Kill):
    name = "kill-minority"

    def targets(self):
        return self.cx.rng.sample(self.cx.nodes, max(1, (len(self.cx.nodes) - 1) // 2))


class KillLeader(Kill):
    name = "kill-leader"

    def targets(self):
        found = self.cx.find_leader()
        return [found] if found else None


class KillAll(Kill):
    name = "kill-all"

    def targets(self):
        return list(self.cx.nodes)


class Pause(Nemesis):
    def target(self) -> Node | None:
        raise NotImplementedError

    def start(self) -> None:
        self.active = True
        self.paused: list[Node] = []
        victim = self.target()
        if victim is None:
            self.record("info", {"skipped": "no leader known"})
            return
        if victim.pause():
            self.paused.append(victim)
        self.record("start", {"paused": names(self.paused)})

    def stop(self) -> None:
        for n in getattr(self, "paused", []):
            n.resume()
        self.active = False
        self.record("stop", {"resumed": names(getattr(self, "paused", []))})


class PauseNode(Pause):
    name = "pause-node"

    def target(self):
        return self.cx.rng.choice(self.cx.nodes)


class PauseLeader(Pause):
    name = "pause-leader"

    def target(self):
        return self.cx.find_leader()


class ClockSkew(Nemesis):
    name = "clock-skew"

    def start(self) -> None:
        self.active = True
        offsets = {}
        for n in self.cx.nodes:
            offsets[n.name] = self.cx.rng.randint(-MAX_SKEW_SECS, MAX_SKEW_SECS)
            n.skew(offsets[n.name])
        self.record("start", {"offsets": offsets})

    def stop(self) -> None:
        for n in self.cx.nodes:
            n.skew(0)
        self.active = False
        self.record("stop", {"offsets": "all 0"})


class Membership(Nemesis):
    """Remove a non-leader member; at stop, once the removal is confirmed by the leader's
    member list, wipe its raft store and start it: it rejoins as a fresh node by multicast.
    A removal that cannot be confirmed leaves its data alone (wiping a voter's log would
    be a fault Raft does not tolerate, not one we mean to test)."""

    name = "membership"
    REMOVE_TIMEOUT = 40  # cluster.task.timeout (30 s) and some
    CONFIRM_SECS = 30

    def start(self) -> None:
        self.active = True
        self.target: Node | None = None
        chief = self.cx.find_leader()
        candidates = [n for n in self.cx.nodes if n is not chief and n.running and n.node_id]
        if not candidates or chief is None:
            self.record("info", {"skipped": "no leader known" if chief is None else "no candidate"})
            return
        self.target = self.cx.rng.choice(candidates)
        via = self.cx.rng.choice([n for n in self.cx.nodes if n is not self.target and n.running])
        detail = {"node": self.target.name, "id": self.target.node_id, "via": via.name}
        try:
            status, body = via.api("DELETE", f"/api/v1/cluster/members/{self.target.node_id}",
                                   timeout=self.REMOVE_TIMEOUT)
            detail.update(status=status, answer=body)
        except ApiError as e:
            detail.update(error=str(e))
        self.record("start", detail)

    def membership_view(self) -> list[str] | None:
        """Member ids as the leader reports them (asked of nodes other than the target)."""
        others = [n for n in self.cx.nodes if n is not self.target]
        deadline = time.monotonic() + self.CONFIRM_SECS
        while time.monotonic() < deadline:
            sts = hosts.statuses(others, timeout=3)
            for st in sts.values():
                if st and st.get("leader") is not None and st.get("leader") == st.get("node_id"):
                    return [str(m.get("id")) for m in st.get("members", [])]
            time.sleep(0.5)
        return None

    def stop(self) -> None:
        target = getattr(self, "target", None)
        if target is None:
            self.active = False
            return
        members = self.membership_view()
        detail = {"node": target.name}
        if members is not None and target.node_id not in members:
            # It was told and stops by itself (wiping its own store); wait a little.
            deadline = time.monotonic() + 15
            while target.running and time.monotonic() < deadline:
                time.sleep(0.2)
            if target.running:
                target.terminate()
                detail["terminated"] = True
            target.wipe()
            target.start()
            detail.update(removed=True, rejoin="raft store wiped, started fresh")
        else:
            detail.update(removed=False if members is not None else "unknown (no leader view)")
            if not target.running:
                target.start()
                detail["restarted"] = "same data"
        self.active = False
        self.target = None
        self.record("stop", detail)


NEMESES: dict[str, type[Nemesis]] = {c.name: c for c in [
    PartitionHalves, IsolateNode, IsolateLeader, MajoritiesRing, Bridge, KillNode, KillMinority,
    KillLeader, KillAll, PauseNode, PauseLeader, ClockSkew, Membership]}
assert sorted(NEMESES) == sorted(NAMES)


def parse(names_csv: str) -> list[str]:
    chosen = [s.strip() for s in names_csv.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in NEMESES]
    if unknown:
        raise ValueError(f"unknown nemesis {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return chosen


# --- the schedule --------------------------------------------------------------------

class Scheduler:
    """`interval` s of one randomly chosen fault, then `interval` s of calm, until the
    deadline; `heal_all()` then undoes everything and `settle()` waits for the cluster."""

    def __init__(self, cx: NemesisContext, chosen: list[str], interval: float):
        self.cx = cx
        self.nemeses = [NEMESES[name](cx) for name in chosen]
        self.interval = interval
        self.active: Nemesis | None = None
        # Held by every start/stop/heal: a heal waits for a start already under way (a
        # thread cannot be cancelled) instead of racing it.
        self.lock = threading.Lock()

    def _start(self, nem: Nemesis) -> None:
        with self.lock:
            self.active = nem
            try:
                nem.start()
            except Exception as e:  # a nemesis that fails must not end the run
                self.cx.history.nemesis("info", nem.name, {"start-error": repr(e)})
                self.cx.log(f"nemesis {nem.name} start failed: {e!r}")

    def _stop(self, nem: Nemesis) -> None:
        with self.lock:
            try:
                nem.stop()
            except Exception as e:
                self.cx.history.nemesis("info", nem.name, {"stop-error": repr(e)})
                self.cx.log(f"nemesis {nem.name} stop failed: {e!r}")
            finally:
                self.active = None
            self.check_processes()

    def check_processes(self) -> None:
        """In calm: every node should run. One that exited on its own is recorded and
        started again (with its data)."""
        for n in self.cx.nodes:
            if n.proc is not None and not n.running:
                self.cx.history.nemesis("info", "node-exited",
                                        {"node": n.name, "returncode": n.proc.returncode})
                self.cx.log(f"{n.name} exited by itself ({n.proc.returncode}); starting it again; "
                            f"log tail:\n{n.log_tail(8)}")
                n.start()

    async def run(self, deadline: float) -> None:
        """Alternate fault and calm until `deadline` (time.monotonic())."""
        if not self.nemeses:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return
        while time.monotonic() < deadline:
            nem = self.cx.rng.choice(self.nemeses)
            await asyncio.to_thread(self._start, nem)
            await asyncio.sleep(max(0.0, min(self.interval, deadline - time.monotonic())))
            await asyncio.to_thread(self._stop, nem)
            await asyncio.sleep(max(0.0, min(self.interval, deadline - time.monotonic())))

    def heal_all(self) -> dict:
        """Stop the active nemesis, resume paused nodes, start dead ones, reset clocks,
        flush every INPUT chain."""
        with self.lock:
            done = {}
            if self.active is not None:
                nem, self.active = self.active, None
                try:
                    nem.stop()
                    done["stopped"] = nem.name
                except Exception as e:
                    done["stop-error"] = f"{nem.name}: {e!r}"
            self.cx.net.heal()
            resumed, started = [], []
            for n in self.cx.nodes:
                if n.paused and n.resume():
                    resumed.append(n.name)
                n.skew(0)
                if not n.running:
                    n.start()
                    started.append(n.name)
            done.update(resumed=resumed, started=started, clocks="all 0", iptables="flushed")
            self.cx.history.nemesis("stop", "heal-all", done)
            self.cx.log(f"healed: {done}")
            return done

    def settle(self, timeout: float = 120) -> tuple[bool, str]:
        """Until every node serves, lists every node as a member, all up, one leader."""
        t0 = time.monotonic()
        ok, why, _ = hosts.wait_cluster(self.cx.nodes, timeout, check=hosts.settled)
        secs = round(time.monotonic() - t0, 2)
        self.cx.history.nemesis("info", "settle", {"settled": ok, "why": why, "seconds": secs})
        self.cx.log(f"settle: {why} after {secs} s" if ok else f"NOT settled after {secs} s: {why}")
        return ok, why
