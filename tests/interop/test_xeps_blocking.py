"""XEP-0191 Blocking Command and XEP-0012 Last Activity, driven by slixmpp's
own plugins (xep_0191, xep_0012)."""

import asyncio

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from test_single_node import TIMEOUT, Session, run

BLOCKING_ERRORS = "urn:xmpp:blocking:errors"


def with_plugins(session, *plugins):
    for plugin in plugins:
        session.xmpp.register_plugin(plugin)
    return session


def events(session, name):
    """A queue that receives every `name` event of the session."""
    queue = asyncio.Queue()
    session.xmpp.add_event_handler(name, lambda stanza: queue.put_nowait(stanza))
    return queue


async def next_of(queue):
    return await asyncio.wait_for(queue.get(), TIMEOUT)


def test_block_unblock_and_what_a_block_refuses(node):
    node.add_user("alice@localhost", "a-pass")
    node.add_user("bob@localhost", "b-pass")

    async def scenario():
        alice = with_plugins(Session(node, "alice", "a-pass", "home"), "xep_0191")
        bob = Session(node, "bob", "b-pass", "work")
        blocked, unblocked = events(alice, "blocked"), events(alice, "unblocked")
        alice_errors, bob_errors = events(alice, "message_error"), events(bob, "message_error")
        assert await alice.connect() and await bob.connect()
        blocking = alice.xmpp.plugin["xep_0191"]

        # Reading the list also asks for its pushes (section 3.3).
        assert await blocking.get_blocked_jids(timeout=TIMEOUT) == set()
        await blocking.block(JID("bob@localhost"), timeout=TIMEOUT)
        push = await next_of(blocked)
        assert [str(i["jid"]) for i in push["block"]] == ["bob@localhost"]
        assert await blocking.get_blocked_jids(timeout=TIMEOUT) == {JID("bob@localhost")}

        # Inbound: bob's message bounces as if alice were offline.
        bob.xmpp.send_message(mto="alice@localhost", mbody="hello?", mtype="chat")
        error = await next_of(bob_errors)
        assert error["error"]["condition"] == "service-unavailable"

        # Outbound: alice's message to bob is refused with <blocked/>.
        alice.xmpp.send_message(mto="bob@localhost", mbody="psst", mtype="chat")
        error = await next_of(alice_errors)
        assert error["error"]["condition"] == "not-acceptable"
        assert error.xml.find(f"{{jabber:client}}error/{{{BLOCKING_ERRORS}}}blocked") is not None
        assert alice.messages.empty()

        await blocking.unblock(JID("bob@localhost"), timeout=TIMEOUT)
        push = await next_of(unblocked)
        assert [str(i["jid"]) for i in push["unblock"]] == ["bob@localhost"]
        bob.xmpp.send_message(mto="alice@localhost", mbody="now?", mtype="chat")
        msg = await asyncio.wait_for(alice.messages.get(), TIMEOUT)
        assert msg["body"] == "now?"
        assert await blocking.get_blocked_jids(timeout=TIMEOUT) == set()
        alice.close()
        bob.close()

    run(scenario())


def test_last_activity_of_the_server_and_of_an_account(node):
    for user in ("alice", "bob", "carol"):
        node.add_user(f"{user}@localhost", "pw")

    async def scenario():
        alice = with_plugins(Session(node, "alice", "pw", "home"), "xep_0012")
        bob = with_plugins(Session(node, "bob", "pw", "work"), "xep_0012")
        carol = with_plugins(Session(node, "carol", "pw", "away"), "xep_0012")
        assert await alice.connect() and await bob.connect() and await carol.connect()
        last = bob.xmpp.plugin["xep_0012"]

        uptime = await last.get_last_activity(JID("localhost"), timeout=TIMEOUT)
        assert 0 <= uptime["last_activity"]["seconds"] < 600

        # Bob subscribes to alice; slixmpp approves for her (auto_authorize).
        subscribed = asyncio.get_running_loop().create_future()
        bob.xmpp.add_event_handler(
            "presence_subscribed",
            lambda p: subscribed.done() or subscribed.set_result(p),
        )
        bob.xmpp.send_presence(pto="alice@localhost", ptype="subscribe")
        await asyncio.wait_for(subscribed, TIMEOUT)

        online = await last.get_last_activity(JID("alice@localhost"), timeout=TIMEOUT)
        assert online["last_activity"]["seconds"] == 0

        with pytest.raises(IqError) as refused:
            await carol.xmpp.plugin["xep_0012"].get_last_activity(
                JID("alice@localhost"), timeout=TIMEOUT
            )
        # Answered as for no such account (docs/security.md: no enumeration).
        assert refused.value.iq["error"]["condition"] == "service-unavailable"
        with pytest.raises(IqError) as missing:
            await last.get_last_activity(JID("nobody@localhost"), timeout=TIMEOUT)
        assert missing.value.iq["error"]["condition"] == "service-unavailable"

        alice.xmpp.send_presence(ptype="unavailable", pstatus="gone fishing")
        await asyncio.sleep(0.2)
        alice.close()
        await asyncio.sleep(1.1)
        # Online until the closed stream's route is gone.
        for _ in range(50):
            gone = await last.get_last_activity(JID("alice@localhost"), timeout=TIMEOUT)
            if gone["last_activity"]["seconds"] > 0:
                break
            await asyncio.sleep(0.1)
        assert gone["last_activity"]["seconds"] >= 1
        assert gone["last_activity"]["status"] == "gone fishing"
        bob.close()
        carol.close()

    run(scenario())
