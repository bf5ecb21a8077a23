"""RFC 6121 scenarios run against Chorus and Prosody and compared (issue 4):
roster, subscriptions, presence, offline messages. See README.md."""

from xml.etree import ElementTree as ET

from compare import Scene, run, stanza_type

ROSTER = "jabber:iq:roster"
DELAY = "urn:xmpp:delay"


def roster_query(*items: ET.Element) -> ET.Element:
    q = ET.Element(f"{{{ROSTER}}}query")
    q.extend(items)
    return q


def item(jid: str, **attrs) -> ET.Element:
    el = ET.Element(f"{{{ROSTER}}}item", {"jid": jid, **attrs})
    return el


def is_push(el: ET.Element) -> bool:
    return el.tag.endswith("}iq") and stanza_type(el) == "set" and el.find(f"{{{ROSTER}}}query") is not None


def push_item(el: ET.Element) -> ET.Element:
    return el.find(f"{{{ROSTER}}}query/{{{ROSTER}}}item")


def pushed(**want):
    def ok(el):
        if not is_push(el):
            return False
        it = push_item(el)
        return all(it.get(k) == v for k, v in want.items())
    return ok


def test_roster_set_push_get_remove(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            alice = await scene.login("alice", "a-pass", "home")
            first = await alice.iq(None, roster_query())
            transcript.stanza("empty roster", alice, first, must_agree=True, attrs=(), children=("query",))

            contact = item("bob@localhost", name="Bob")
            ET.SubElement(contact, f"{{{ROSTER}}}group").text = "Friends"
            result = await alice.iq(None, roster_query(contact), type="set")
            transcript.stanza("set: result", alice, result, must_agree=True, attrs=())
            push = await alice.expect("iq", "set", where=is_push)
            # RFC 6121 2.3.2: the push carries the item with subscription none.
            transcript.stanza("set: push", alice, push_item(push), must_agree=True,
                              attrs=("jid", "name", "subscription", "ask"))

            got = await alice.iq(None, roster_query())
            items = got.findall(f"{{{ROSTER}}}query/{{{ROSTER}}}item")
            transcript.facts("get: items", alice, [f"{i.get('jid')} {i.get('subscription')}" for i in items],
                             must_agree=True)

            result = await alice.iq(None, roster_query(item("bob@localhost", subscription="remove")), type="set")
            transcript.stanza("remove: result", alice, result, must_agree=True, attrs=())
            push = await alice.expect("iq", "set", where=pushed(subscription="remove"))
            transcript.stanza("remove: push", alice, push_item(push), must_agree=True, attrs=("jid", "subscription"))

            two = roster_query(item("c@localhost"), item("d@localhost"))
            transcript.stanza("two items: error", alice, await alice.iq(None, two, type="set"), must_agree=True,
                              attrs=())

    run(scenario())


def test_subscription_handshake_and_presence(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            alice, bob = await scene.alice_and_bob("home", "work")
            await alice.iq(None, roster_query())
            await bob.iq(None, roster_query())

            alice.send_presence(pto="bob@localhost", ptype="subscribe")
            push = await alice.expect("iq", "set", where=pushed(ask="subscribe"))
            transcript.stanza("subscribe: user's push", alice, push_item(push), must_agree=True,
                              attrs=("jid", "subscription", "ask"))
            request = await bob.expect("presence", "subscribe")
            # RFC 6121 3.1.2: stamped with the user's bare JID.
            transcript.stanza("subscribe: contact gets request", bob, request, must_agree=True, attrs=("from",))

            bob.send_presence(pto="alice@localhost", ptype="subscribed")
            push = await bob.expect("iq", "set", where=pushed(subscription="from"))
            transcript.stanza("subscribed: contact's push", bob, push_item(push), must_agree=True,
                              attrs=("jid", "subscription"))
            push = await alice.expect("iq", "set", where=pushed(subscription="to"))
            transcript.stanza("subscribed: user's push", alice, push_item(push), must_agree=True,
                              attrs=("jid", "subscription", "ask"))
            answer = await alice.expect("presence", "subscribed")
            transcript.stanza("subscribed: user gets answer", alice, answer, must_agree=True, attrs=("from",))
            presence = await alice.expect("presence", "available", where=lambda e: e.get("from") == "bob@localhost/work")
            # RFC 6121 3.1.5: the contact's presence follows the approval (a delay
            # stamp on it is the server's choice, so only the sender is compared).
            transcript.stanza("subscribed: user gets contact's presence", alice, presence, must_agree=True,
                              attrs=("from",), children=False)
            transcript.stanza("subscribed: contact's presence as received", alice, presence)

            bob.send_presence(pstatus="busy", pshow="dnd")
            presence = await alice.expect("presence", where=lambda e: e.get("from") == "bob@localhost/work"
                                          and e.find("{jabber:client}show") is not None)
            transcript.stanza("presence change reaches subscriber", alice, presence, must_agree=True,
                              attrs=("from",), children=("show", "status"))

            await bob.close()
            gone = await alice.expect("presence", "unavailable", where=lambda e: e.get("from") == "bob@localhost/work")
            transcript.stanza("closing sends unavailable", alice, gone, must_agree=True, attrs=("from",),
                              children=False)

    run(scenario())


def test_pending_request_waits_for_login(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            scene.account("bob", "b-pass")
            alice = await scene.login("alice", "a-pass", "home")
            alice.send_presence(pto="bob@localhost", ptype="subscribe", pstatus="it is alice")
            await alice.sync()
            bob = await scene.login("bob", "b-pass", "later")
            request = await bob.expect("presence", "subscribe")
            transcript.stanza("request redelivered at login", bob, request, must_agree=True,
                              attrs=("from",), children=("status",))
            transcript.stanza("request as received", bob, request)

    run(scenario())


def test_offline_messages_with_delay(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            scene.account("bob", "b-pass")
            alice = await scene.login("alice", "a-pass", "home")
            for i in range(3):
                alice.send_message("bob@localhost", f"offline {i}")
            alice.send_message("bob@localhost", "news", type="headline")
            await alice.sync()
            bob = await scene.login("bob", "b-pass", "phone")
            got = []
            for _ in range(3):
                got.append(await bob.expect("message", "chat"))
            transcript.stanzas("delivered in order", bob, got, must_agree=True, attrs=("from",), children=("body",))
            transcript.facts("delay stamps", bob, [m.find(f"{{{DELAY}}}delay") is not None for m in got],
                             must_agree=True)
            headline = await bob.maybe("message", "headline")
            transcript.fact("headline kept", bob, headline is not None)

    run(scenario())


CARBONS = "urn:xmpp:carbons:2"


def test_carbons(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            scene.account("bob", "b-pass")
            phone = await scene.login("alice", "a-pass", "phone")
            laptop = await scene.login("alice", "a-pass", "laptop")
            bob = await scene.login("bob", "b-pass", "b")
            enabled = await phone.iq(None, ET.Element(f"{{{CARBONS}}}enable"), type="set")
            transcript.stanza("enable", phone, enabled, must_agree=True, attrs=())

            bob.send_message("alice@localhost/laptop", "to the laptop")
            await laptop.expect("message", "chat")
            carbon = await phone.expect("message", where=lambda e: e.find(f"{{{CARBONS}}}received") is not None)
            # XEP-0280 section 6: from the bare JID, the original forwarded inside.
            transcript.stanza("received carbon", phone, carbon, must_agree=True, attrs=("from",))

            laptop.send_message("bob@localhost", "from the laptop")
            await bob.expect("message", "chat")
            carbon = await phone.expect("message", where=lambda e: e.find(f"{{{CARBONS}}}sent") is not None)
            transcript.stanza("sent carbon", phone, carbon, must_agree=True, attrs=("from",))

    run(scenario())
