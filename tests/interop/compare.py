"""Chorus and Prosody side by side (issue 4).

A comparison scenario runs once against each server (the `server` fixture in
conftest.py) and records what each client received in a `Transcript`:
normalized entries with the volatile parts (ids, stream ids, timestamps,
SASL data, server version strings, error texts) left out. At the end of the
session the differences between Chorus's and Prosody's transcripts are printed
in the terminal summary. A step recorded with `must_agree=True` is one where the
RFC leaves no choice: if the two servers differ there, the Chorus run of the
scenario fails (the Prosody run goes first, see `prosody_first`).

This module holds three things:
- normalization (`describe`, `error_of`) and the transcript (`Transcript`);
- the session collector and the pytest glue the conftest hooks call;
- a small slixmpp client for scenarios (`Scene`, `Client`, `run`).
See tests/interop/README.md for how to write a scenario.
"""

from __future__ import annotations

import asyncio
import copy
import difflib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable
from xml.etree import ElementTree as ET

import pytest

# --- normalization -----------------------------------------------------------

CLIENT_NS = "jabber:client"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"

# Short prefixes for the namespaces of the stream itself, so transcripts read
# "sasl:failure" rather than "{urn:ietf:params:xml:ns:xmpp-sasl}failure".
NS_PREFIX = {
    CLIENT_NS: "",
    "http://etherx.jabber.org/streams": "stream:",
    "urn:ietf:params:xml:ns:xmpp-tls": "tls:",
    SASL_NS: "sasl:",
    "urn:ietf:params:xml:ns:xmpp-bind": "bind:",
    "urn:ietf:params:xml:ns:xmpp-session": "session:",
    STANZAS_NS: "",
    "urn:ietf:params:xml:ns:xmpp-streams": "",
}

# Elements whose children's order carries no meaning (stream features).
UNORDERED = {"http://etherx.jabber.org/streams"}

# Children whose text is kept (everything else is reduced to its name).
KEEP_TEXT = ("body", "subject")


def split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def qname(tag: str, parent_ns: str | None = None) -> str:
    ns, local = split(tag)
    if ns is None or ns == parent_ns:
        return local
    if ns in NS_PREFIX:
        return NS_PREFIX[ns] + local
    return "{%s}%s" % (ns, local)


def element(x) -> ET.Element:
    """A slixmpp stanza or an ElementTree element, as an element."""
    return getattr(x, "xml", x)


def error_of(x) -> str | None:
    """"cancel/service-unavailable" for a stanza error (or a SASL/stream
    failure: "not-authorized"), None if `x` carries no error."""
    el = element(x)
    ns, local = split(el.tag)
    if ns == SASL_NS and local == "failure" or local == "error" and ns != CLIENT_NS:
        conds = [split(c.tag)[1] for c in el if split(c.tag)[1] != "text"]
        return "/".join(conds) or "(no condition)"
    err = el.find(f"{{{CLIENT_NS}}}error")
    if err is None:
        err = el.find("error")
    if err is None:
        return None
    conds = [split(c.tag)[1] for c in err if split(c.tag)[0] == STANZAS_NS and split(c.tag)[1] != "text"]
    return f"{err.get('type', '?')}/{'/'.join(conds) or '(no condition)'}"


def stanza_type(el: ET.Element) -> str:
    kind = split(el.tag)[1]
    t = el.get("type")
    if t is None:
        # The RFC defaults, so an absent type and the explicit default agree.
        return {"message": "normal", "presence": "available"}.get(kind, "") if split(el.tag)[0] == CLIENT_NS else ""
    return t


def describe_child(parent: ET.Element, c: ET.Element, text: Iterable[str], depth: int) -> str | None:
    parent_ns = split(parent.tag)[0]
    ns, local = split(c.tag)
    name = qname(c.tag, parent_ns)
    if local == "text" and ns in (STANZAS_NS, SASL_NS, "urn:ietf:params:xml:ns:xmpp-streams"):
        return None  # human-readable wording
    if local in text and ns == CLIENT_NS:
        return f"{local}={(c.text or '')!r}"
    if ns == SASL_NS and local == "mechanisms":
        mechs = sorted((m.text or "").strip() for m in c)
        return f"{name}({','.join(mechs)})"
    if depth > 1 and len(c):
        inner = sorted({qname(g.tag, ns) for g in c})
        return f"{name}({','.join(inner)})"
    return name


def describe(x, *, attrs: Iterable[str] = ("from", "to"), text: Iterable[str] = KEEP_TEXT,
             children: bool | Iterable[str] = True, depth: int = 2) -> tuple[str, str, tuple[str, ...]]:
    """(kind, type, details) of a received element: kind is its qualified
    name ("message", "iq", "sasl:failure", "stream:features"); details are
    the chosen attributes, the error (type/condition) if any, and the children
    by name: all of them, none (children=False), or those with the given
    local names; the text of `text` children is kept, grandchildren are
    listed by name up to `depth`. Ids, other texts (server versions, SASL
    data, timestamps) and error wording are left out."""
    el = element(x)
    ns, local = split(el.tag)
    details = [f"{a}={el.get(a)}" for a in attrs if el.get(a) is not None]
    err = error_of(el)
    if err is not None:
        details.append(f"error={err}")
    if children and not (ns == SASL_NS and local == "failure" or local == "error" and ns != CLIENT_NS):
        wanted = None if children is True else set(children)
        parts = []
        for c in el:
            c_ns, c_local = split(c.tag)
            if c_ns == CLIENT_NS and c_local == "error":
                continue
            if wanted is not None and c_local not in wanted:
                continue
            d = describe_child(el, c, tuple(text), depth)
            if d is not None:
                parts.append(d)
        if ns in UNORDERED:
            parts.sort()
        details += parts
    return qname(el.tag), stanza_type(el), tuple(details)


# --- transcripts ---------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    step: str
    receiver: str
    kind: str
    type: str
    detail: tuple[str, ...]
    must_agree: bool = False

    def line(self) -> str:
        if self.kind == "fact":
            return f"{self.receiver}: {' '.join(self.detail)}"
        head = f"{self.receiver} <- {self.kind}"
        if self.type:
            head += f" type={self.type}"
        return " ".join([head, *self.detail])

    def key(self) -> tuple:
        return (self.receiver, self.kind, self.type, self.detail)


def who(receiver) -> str:
    return getattr(receiver, "role", None) or str(receiver)


@dataclass
class Transcript:
    """What one scenario saw on one server, step by step."""

    scenario: str
    server: str
    entries: list[Entry] = field(default_factory=list, repr=False)
    complete: bool = False  # set when the scenario's test passed

    def stanza(self, step: str, receiver, x, *, must_agree: bool = False, **opts) -> Entry:
        """Record a received stanza (normalized by `describe(x, **opts)`), or,
        if `x` is None, that nothing arrived."""
        if x is None:
            return self.nothing(step, receiver, must_agree=must_agree)
        kind, typ, detail = describe(x, **opts)
        e = Entry(step, who(receiver), kind, typ, detail, must_agree)
        self.entries.append(e)
        return e

    def stanzas(self, step: str, receiver, xs: Iterable, *, must_agree: bool = False, **opts):
        """Record several received stanzas; "(nothing)" if there are none."""
        xs = list(xs)
        if not xs:
            self.nothing(step, receiver, must_agree=must_agree)
        for x in xs:
            self.stanza(step, receiver, x, must_agree=must_agree, **opts)

    def fact(self, step: str, receiver, value, *, must_agree: bool = False) -> Entry:
        """Record an observation made by the scenario ("advertises urn:xmpp:ping")."""
        e = Entry(step, who(receiver), "fact", "", (str(value),), must_agree)
        self.entries.append(e)
        return e

    def facts(self, step: str, receiver, values: Iterable, *, must_agree: bool = False):
        for v in values:
            self.fact(step, receiver, v, must_agree=must_agree)

    def nothing(self, step: str, receiver, *, must_agree: bool = False) -> Entry:
        e = Entry(step, who(receiver), "(nothing)", "", (), must_agree)
        self.entries.append(e)
        return e

    def steps(self) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = {}
        for e in self.entries:
            out.setdefault(e.step, []).append(e)
        return out


@dataclass
class Difference:
    step: str
    must_agree: bool
    left: list[str]  # lines of the first transcript (Chorus)
    right: list[str]  # lines of the second (Prosody)
    missing: str | None = None  # which side never reached the step


def differences(a: Transcript, b: Transcript) -> list[Difference]:
    """Steps where `a` and `b` recorded different entries, in step order."""
    sa, sb = a.steps(), b.steps()
    order = list(sa) + [s for s in sb if s not in sa]
    out = []
    for step in order:
        ea, eb = sa.get(step, []), sb.get(step, [])
        if [e.key() for e in ea] == [e.key() for e in eb]:
            continue
        missing = a.server if step not in sa else b.server if step not in sb else None
        out.append(Difference(
            step, any(e.must_agree for e in ea + eb),
            [e.line() for e in ea], [e.line() for e in eb], missing,
        ))
    return out


def format_difference(d: Difference, left: str = "chorus", right: str = "prosody", indent: str = "    ") -> list[str]:
    tag = "MUST AGREE" if d.must_agree else "differs"
    lines = [f"{indent}[{tag}] {d.step}" + (f"  ({d.missing} never got here)" if d.missing else "")]
    width = max(len(left), len(right))
    sm = difflib.SequenceMatcher(a=d.left, b=d.right, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            lines += [f"{indent}  {'both'.ljust(width)} | {x}" for x in d.left[i1:i2]]
            continue
        lines += [f"{indent}  {left.ljust(width)} | {x}" for x in d.left[i1:i2]]
        lines += [f"{indent}  {right.ljust(width)} | {x}" for x in d.right[j1:j2]]
    for side, got in ((left, d.left), (right, d.right)):
        if not got:
            lines.append(f"{indent}  {side.ljust(width)} | (nothing recorded)")
    return lines


# --- the session collector and pytest glue ----------------------------------


class Collector:
    """Transcripts of the session, per (scenario, server)."""

    def __init__(self):
        self.transcripts: dict[tuple[str, str], Transcript] = {}
        self.notes: list[str] = []

    def add(self, t: Transcript):
        self.transcripts[(t.scenario, t.server)] = t

    def get(self, scenario: str, server: str) -> Transcript | None:
        return self.transcripts.get((scenario, server))

    def note_skip(self, text: str):
        if text not in self.notes:
            self.notes.append(text)

    def scenarios(self) -> list[str]:
        seen = []
        for scenario, _ in self.transcripts:
            if scenario not in seen:
                seen.append(scenario)
        return seen


_KEY = pytest.StashKey[Collector]()


def collector(config) -> Collector:
    c = config.stash.get(_KEY, None)
    if c is None:
        c = config.stash[_KEY] = Collector()
    return c


def server_param(item) -> str | None:
    cs = getattr(item, "callspec", None)
    return cs.params.get("server") if cs else None


def scenario_name(item) -> str:
    """The test's id without the server: the same for its Chorus and Prosody runs."""
    name = item.nodeid.split("[", 1)[0].rsplit("/", 1)[-1]
    cs = getattr(item, "callspec", None)
    others = {k: v for k, v in (cs.params.items() if cs else ()) if k != "server"}
    if others:
        name += "[" + ",".join(f"{k}={v!r}" for k, v in sorted(others.items())) + "]"
    return name


def prosody_first(items: list):
    """Run each scenario's Prosody run just before its Chorus run, so the Chorus
    run can be checked against it; other tests keep their order."""
    groups: dict[str, dict[str, object]] = {}
    for it in items:
        p = server_param(it)
        if p is not None:
            groups.setdefault(scenario_name(it), {})[p] = it
    placed: set[int] = set()
    ordered = []
    for it in items:
        if id(it) in placed:
            continue
        p = server_param(it)
        if p is not None and p != "prosody":
            partner = groups[scenario_name(it)].get("prosody")
            if partner is not None and id(partner) not in placed:
                ordered.append(partner)
                placed.add(id(partner))
        ordered.append(it)
        placed.add(id(it))
    items[:] = ordered


def after_scenario(item):
    """Called when a scenario's test body passed: marks its transcript complete
    and, on the Chorus run, fails it if a must-agree step differs from Prosody."""
    t = item.funcargs.get("transcript") if hasattr(item, "funcargs") else None
    if not isinstance(t, Transcript):
        return
    t.complete = True
    if t.server != "chorus":
        return
    other = collector(item.config).get(t.scenario, "prosody")
    if other is None or not other.complete:
        return
    bad = [d for d in differences(t, other) if d.must_agree]
    if bad:
        lines = ["Chorus and Prosody differ where the RFC leaves no choice:"]
        for d in bad:
            lines += format_difference(d, indent="  ")
        pytest.fail("\n".join(lines), pytrace=False)


def print_summary(terminalreporter, config):
    c = config.stash.get(_KEY, None)
    if c is None or not c.transcripts:
        return
    tr = terminalreporter
    both, single, incomplete = [], [], []
    for scenario in c.scenarios():
        a, b = c.get(scenario, "chorus"), c.get(scenario, "prosody")
        if a is None or b is None:
            single.append(scenario)
            continue
        if not (a.complete and b.complete):
            incomplete.append((scenario, [s.server for s in (a, b) if not s.complete]))
        both.append((scenario, differences(a, b)))
    differing = [(s, ds) for s, ds in both if ds]
    if both:
        tr.write_sep("=", f"Chorus vs Prosody: {len(differing)} of {len(both)} scenarios differ")
    else:
        tr.write_sep("=", "Chorus vs Prosody: no scenario ran on both servers")
    for scenario, ds in differing:
        tr.write_line(scenario)
        for d in ds:
            for line in format_difference(d):
                tr.write_line(line)
    same = [s for s, ds in both if not ds]
    if same:
        tr.write_line(f"same on both ({len(same)}): " + ", ".join(s.split("::")[-1] for s in same))
    for scenario, servers in incomplete:
        tr.write_line(f"note: {scenario}: the {' and '.join(servers)} run failed, its transcript is partial")
    if single:
        tr.write_line(f"ran on one server only ({len(single)}): " + ", ".join(s.split("::")[-1] for s in single))
    for note in c.notes:
        tr.write_line(f"note: {note}")
    if os.environ.get("INTEROP_TRANSCRIPTS"):
        tr.write_sep("-", "transcripts (INTEROP_TRANSCRIPTS is set)")
        for (scenario, server), t in c.transcripts.items():
            tr.write_line(f"{scenario} on {server}" + ("" if t.complete else " (partial)"))
            for step, entries in t.steps().items():
                tr.write_line(f"    {step}" + ("  [must agree]" if any(e.must_agree for e in entries) else ""))
                for e in entries:
                    tr.write_line(f"        {e.line()}")


# --- a slixmpp client for scenarios ------------------------------------------

TIMEOUT = 30  # for what must arrive
QUIET = 3  # how long to wait before deciding that nothing arrives


def run(coro):
    """Run a scenario coroutine with an overall time limit."""
    return asyncio.run(asyncio.wait_for(coro, 120))


def kind_of(el: ET.Element) -> str:
    return qname(el.tag)


class Client:
    """One slixmpp client: keeps a copy of every element the server sends it
    (from the stream features on), for `expect` and for transcripts."""

    def __init__(self, server, user: str, password: str, resource: str = "interop", *,
                 role: str | None = None, mech: str | None = "SCRAM-SHA-256",
                 direct_tls: bool = False, available: bool = True,
                 plugins: Iterable[str] = ("xep_0030", "xep_0199")):
        from slixmpp import ClientXMPP

        self.server = server
        self.role = role or user
        self.direct_tls = direct_tls
        self.available = available
        self.jid = f"{user}@{server.domain}/{resource}"
        self.bare = f"{user}@{server.domain}"
        kwargs = {"sasl_mech": mech} if mech else {}
        self.xmpp = ClientXMPP(self.jid, password, **kwargs)
        self.xmpp.ca_certs = server.cert
        self.xmpp.enable_direct_tls = direct_tls
        self.xmpp.enable_starttls = not direct_tls
        self.xmpp.enable_plaintext = False
        for p in plugins:
            self.xmpp.register_plugin(p)
        self.received: list[ET.Element] = []  # everything, in order
        self.login_log: list[ET.Element] = []  # what arrived until the session started (or auth failed)
        self.auth_failures: list[str] = []
        self._pending: list[ET.Element] = []  # not yet taken by `expect`
        self._arrived = asyncio.Event()
        self.outcome = asyncio.get_running_loop().create_future()
        self.xmpp.add_filter("in", self._incoming)
        self.xmpp.add_event_handler("session_start", self._started)
        self.xmpp.add_event_handler("failed_auth", self._failed)
        self.xmpp.add_event_handler("failed_all_auth", lambda _: self._settle(False))
        self.xmpp.add_event_handler("disconnected", lambda _: self._settle(False))

    def _incoming(self, stanza):
        el = copy.deepcopy(stanza.xml)
        self.received.append(el)
        self._pending.append(el)
        self._arrived.set()
        return stanza

    def _settle(self, value: bool):
        if not self.outcome.done():
            self.login_log = list(self.received)
            self.outcome.set_result(value)

    async def _started(self, _):
        if self.available:
            self.xmpp.send_presence()
        self._settle(True)

    def _failed(self, failure):
        self.auth_failures.append(failure["condition"])
        self._settle(False)

    async def connect(self) -> bool:
        """True once the session started, False if authentication failed or
        the stream closed first."""
        port = self.server.c2s_tls if self.direct_tls else self.server.c2s
        self.xmpp.connect(host="127.0.0.1", port=port)
        ok = await asyncio.wait_for(self.outcome, TIMEOUT)
        if ok:
            # The initial presence is processed before anything sent later.
            await self.sync()
        return ok

    def mechanism(self) -> str:
        return self.xmpp.plugin["feature_mechanisms"].mech.name

    @property
    def bound(self) -> str:
        return str(self.xmpp.boundjid)

    # -- waiting for what arrives --

    async def expect(self, kind: str | None = None, type: str | None = None,
                     where: Callable[[ET.Element], bool] | None = None,
                     timeout: float = TIMEOUT) -> ET.Element:
        """The next received element (not yet taken) of this kind/type that
        satisfies `where`; raises TimeoutError if none arrives in time."""
        def ok(el):
            return ((kind is None or kind_of(el) == kind)
                    and (type is None or stanza_type(el) == type)
                    and (where is None or where(el)))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, el in enumerate(self._pending):
                if ok(el):
                    return self._pending.pop(i)
            self._arrived.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"{self.role}: no {kind or 'element'} type={type} within {timeout}s")
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def maybe(self, kind: str | None = None, type: str | None = None,
                    where: Callable[[ET.Element], bool] | None = None,
                    timeout: float = QUIET) -> ET.Element | None:
        """Like `expect`, but None if nothing matching arrives within `timeout`."""
        try:
            return await self.expect(kind, type, where, timeout)
        except TimeoutError:
            return None

    def take_all(self, kind: str | None = None) -> list[ET.Element]:
        """Everything received and not yet taken (of this kind)."""
        got = [el for el in self._pending if kind is None or kind_of(el) == kind]
        self._pending = [el for el in self._pending if el not in got]
        return got

    # -- sending --

    def send_message(self, to: str, body: str, type: str = "chat"):
        self.xmpp.send_message(mto=to, mbody=body, mtype=type)

    def send_presence(self, **kw):
        self.xmpp.send_presence(**kw)

    async def iq(self, to: str | None, payload: ET.Element | None = None, type: str = "get",
                 timeout: float = TIMEOUT) -> ET.Element:
        """Send an iq and return the response (result or error), not raising."""
        iq = self.xmpp.make_iq(ito=to, itype=type)
        iq["id"] = self.xmpp.new_id()
        if payload is not None:
            iq.append(payload)
        self.xmpp.send(iq)
        want = iq["id"]
        return await self.expect(
            "iq", where=lambda el: el.get("id") == want and stanza_type(el) in ("result", "error"),
            timeout=timeout,
        )

    async def sync(self):
        """A ping round trip to the server: what this client sent before has
        been processed by the server when it returns."""
        await self.iq(self.server.domain, ET.Element("{urn:xmpp:ping}ping"))

    async def close(self):
        self.xmpp.auto_reconnect = False
        try:
            await asyncio.wait_for(self.xmpp.disconnect(wait=1), 5)
        except (asyncio.TimeoutError, Exception):
            self.xmpp.abort()


class Scene:
    """The clients of one scenario on one server; all closed at the end.

        async with Scene(server) as scene:
            alice = await scene.login("alice", "pw", "home")
    """

    def __init__(self, server):
        self.server = server
        self.clients: list[Client] = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for c in self.clients:
            await c.close()

    async def alice_and_bob(self, alice_resource: str = "home", bob_resource: str = "work"):
        """The two accounts most scenarios need, both logged in."""
        self.account("alice", "a-pass")
        self.account("bob", "b-pass")
        alice = await self.login("alice", "a-pass", alice_resource)
        bob = await self.login("bob", "b-pass", bob_resource)
        return alice, bob

    def account(self, user: str, password: str):
        self.server.add_user(f"{user}@{self.server.domain}", password)

    def client(self, user: str, password: str, resource: str = "interop", **kw) -> Client:
        c = Client(self.server, user, password, resource, **kw)
        self.clients.append(c)
        return c

    async def login(self, user: str, password: str, resource: str = "interop", **kw) -> Client:
        """A client whose session has started (asserts it did)."""
        c = self.client(user, password, resource, **kw)
        assert await c.connect(), f"{user} could not log in to {self.server.name}: {c.auth_failures}"
        return c
