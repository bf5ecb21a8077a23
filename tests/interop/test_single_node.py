"""Chorus driven by slixmpp, a real XMPP client library (issue 3)."""

import asyncio

from slixmpp import ClientXMPP

TIMEOUT = 30


class Session:
    """A slixmpp client and the events a test waits for."""

    def __init__(self, node, user, password, resource, mech="SCRAM-SHA-256", direct_tls=False):
        self.node = node
        self.direct_tls = direct_tls
        self.xmpp = ClientXMPP(f"{user}@{node.domain}/{resource}", password, sasl_mech=mech)
        self.xmpp.ca_certs = node.cert
        self.xmpp.enable_direct_tls = direct_tls
        self.xmpp.enable_starttls = not direct_tls
        self.xmpp.enable_plaintext = False
        self.xmpp.register_plugin("xep_0199")
        self.xmpp.register_plugin("xep_0030")
        loop = asyncio.get_running_loop()
        self.outcome = loop.create_future()
        self.messages = asyncio.Queue()
        self.stream_errors = asyncio.Queue()
        self.auth_failures = []
        self.xmpp.add_event_handler("session_start", self._started)
        self.xmpp.add_event_handler("failed_auth", self._failed)
        self.xmpp.add_event_handler("failed_all_auth", lambda _: self._settle(False))
        self.xmpp.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.xmpp.add_event_handler("stream_error", lambda e: self.stream_errors.put_nowait(e))

    def _settle(self, value):
        if not self.outcome.done():
            self.outcome.set_result(value)

    async def _started(self, _):
        self.xmpp.send_presence()
        self._settle(True)

    def _failed(self, failure):
        self.auth_failures.append(failure["condition"])
        self._settle(False)

    async def connect(self) -> bool:
        port = self.node.c2s_tls if self.direct_tls else self.node.c2s
        self.xmpp.connect(host="127.0.0.1", port=port)
        return await asyncio.wait_for(self.outcome, TIMEOUT)

    def mechanism(self) -> str:
        return self.xmpp.plugin["feature_mechanisms"].mech.name

    def close(self):
        self.xmpp.auto_reconnect = False
        self.xmpp.disconnect()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_scram_sha256_login_over_starttls(node):
    node.add_user("alice@localhost", "wonderland")

    async def scenario():
        s = Session(node, "alice", "wonderland", "py")
        assert await s.connect()
        assert s.mechanism() == "SCRAM-SHA-256"
        assert str(s.xmpp.boundjid) == "alice@localhost/py"
        assert s.xmpp.is_connected()
        s.close()

    run(scenario())


def test_scram_sha256_login_over_direct_tls(node):
    node.add_user("alice@localhost", "wonderland")

    async def scenario():
        s = Session(node, "alice", "wonderland", "tls", direct_tls=True)
        assert await s.connect()
        assert s.mechanism() == "SCRAM-SHA-256"
        s.close()

    run(scenario())


def test_scram_sha1_and_plain_also_work(node):
    node.add_user("alice@localhost", "wonderland")

    async def scenario():
        for mech in ("SCRAM-SHA-1", "PLAIN"):
            s = Session(node, "alice", "wonderland", mech.lower(), mech=mech)
            assert await s.connect(), mech
            assert s.mechanism() == mech
            s.close()

    run(scenario())


def test_wrong_password_gets_not_authorized(node):
    node.add_user("alice@localhost", "wonderland")

    async def scenario():
        s = Session(node, "alice", "looking-glass", "py")
        assert not await s.connect()
        assert s.auth_failures and s.auth_failures[0] == "not-authorized"
        s.close()

    run(scenario())


def test_chat_between_two_accounts(node):
    node.add_user("alice@localhost", "a-pass")
    node.add_user("bob@localhost", "b-pass")

    async def scenario():
        alice = Session(node, "alice", "a-pass", "home")
        bob = Session(node, "bob", "b-pass", "work")
        assert await alice.connect() and await bob.connect()
        await asyncio.sleep(0.3)  # let initial presence reach the server
        alice.xmpp.send_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
        msg = await asyncio.wait_for(bob.messages.get(), TIMEOUT)
        assert msg["body"] == "hello bob"
        assert str(msg["from"]) == "alice@localhost/home"
        bob.xmpp.send_message(mto="alice@localhost/home", mbody="hi alice", mtype="chat")
        msg = await asyncio.wait_for(alice.messages.get(), TIMEOUT)
        assert msg["body"] == "hi alice"
        assert str(msg["from"]) == "bob@localhost/work"
        alice.close()
        bob.close()

    run(scenario())


def test_bind_conflict_ends_the_older_stream(node):
    node.add_user("alice@localhost", "a-pass")

    async def scenario():
        first = Session(node, "alice", "a-pass", "phone")
        assert await first.connect()
        first.xmpp.auto_reconnect = False
        second = Session(node, "alice", "a-pass", "phone")
        assert await second.connect()
        error = await asyncio.wait_for(first.stream_errors.get(), TIMEOUT)
        assert error["condition"] == "conflict"
        # The newer stream still works.
        pong = await second.xmpp.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        assert pong is not None
        second.close()

    run(scenario())


def test_server_disco_and_ping(node):
    node.add_user("alice@localhost", "a-pass")

    async def scenario():
        s = Session(node, "alice", "a-pass", "py")
        assert await s.connect()
        info = await s.xmpp.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)
        features = info["disco_info"]["features"]
        assert "urn:xmpp:ping" in features and "jabber:iq:version" in features
        assert ("server", "im", None, "Chorus") in info["disco_info"]["identities"]
        rtt = await s.xmpp.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
        assert rtt is not None
        s.close()

    run(scenario())
