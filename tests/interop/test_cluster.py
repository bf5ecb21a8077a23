"""slixmpp users on different nodes of one three-node cluster (issue 5): they
subscribe to each other, see each other's presence and chat."""

import asyncio

from test_single_node import Session, run

TIMEOUT = 30


class Friend(Session):
    """A Session that also records presence and roster changes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.presences = asyncio.Queue()
        self.xmpp.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))
        self.xmpp.add_event_handler("changed_status", lambda p: self.presences.put_nowait(p))

    async def presence_from(self, jid: str, show: str | None = None):
        while True:
            p = await asyncio.wait_for(self.presences.get(), TIMEOUT)
            if str(p["from"]) == jid and p["type"] != "unavailable" and (show is None or p["show"] == show):
                return p


async def message_from(s: Session, jid: str) -> str:
    while True:
        m = await asyncio.wait_for(s.messages.get(), TIMEOUT)
        if str(m["from"]).startswith(jid) and m["body"]:
            return m["body"]


def test_users_on_different_nodes_subscribe_see_presence_and_chat(cluster3):
    n0, n1, _ = cluster3
    n0.add_user("alice@localhost", "pw")
    n1.add_user("bob@localhost", "pw")

    async def scenario():
        alice = Friend(n0, "alice", "pw", "laptop")
        bob = Friend(n1, "bob", "pw", "phone")
        assert await alice.connect()
        assert await bob.connect()
        # slixmpp approves and subscribes back by itself (auto_authorize, auto_subscribe).
        alice.xmpp.send_presence_subscription(pto="bob@localhost")
        await alice.presence_from("bob@localhost/phone")
        await bob.presence_from("alice@localhost/laptop")
        # Both directions settle (each approval is its own round trip); slixmpp keeps
        # its roster from the server's roster pushes.
        await alice.xmpp.get_roster()
        for _ in range(100):
            if alice.xmpp.client_roster["bob@localhost"]["subscription"] == "both":
                break
            await asyncio.sleep(0.1)
        assert alice.xmpp.client_roster["bob@localhost"]["subscription"] == "both"

        alice.xmpp.send_message(mto="bob@localhost", mbody="hello across nodes", mtype="chat")
        assert await message_from(bob, "alice@localhost") == "hello across nodes"
        bob.xmpp.send_message(mto="alice@localhost/laptop", mbody="hello back", mtype="chat")
        assert await message_from(alice, "bob@localhost") == "hello back"

        bob.xmpp.send_presence(pshow="away")
        await alice.presence_from("bob@localhost/phone", show="away")
        alice.close()
        bob.close()

    run(scenario())
