"""XEP scenarios run against Chorus and Prosody and compared (issue 4):
pre-approval, directed presence, client state indication, vcard-temp,
private XML storage. See README.md."""

import asyncio
from xml.etree import ElementTree as ET

from compare import Scene, run, stanza_type

ROSTER = "jabber:iq:roster"
VCARD = "vcard-temp"
PRIVATE = "jabber:iq:private"
CSI = "urn:xmpp:csi:0"


def pushed(**want):
    def ok(el):
        q = el.find(f"{{{ROSTER}}}query")
        if not (el.tag.endswith("}iq") and stanza_type(el) == "set" and q is not None):
            return False
        it = q.find(f"{{{ROSTER}}}item")
        return all(it.get(k) == v for k, v in want.items())
    return ok


def test_pre_approval(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            alice, bob = await scene.alice_and_bob("home", "work")
            await alice.iq(None, ET.Element(f"{{{ROSTER}}}query"))
            await bob.iq(None, ET.Element(f"{{{ROSTER}}}query"))
            # RFC 6121 3.4: subscribed before any request pre-approves it.
            bob.send_presence(pto="alice@localhost", ptype="subscribed")
            push = await bob.expect("iq", "set", where=pushed(jid="alice@localhost"))
            transcript.stanza("pre-approval push", bob, push, attrs=())
            alice.send_presence(pto="bob@localhost", ptype="subscribe")
            push = await alice.expect("iq", "set", where=pushed(subscription="to"))
            transcript.fact("answered for the contact", alice, "subscription to", must_agree=True)
            request = await bob.maybe("presence", "subscribe")
            transcript.fact("contact asked", bob, request is not None)

    run(scenario())


def test_directed_presence(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            alice, bob = await scene.alice_and_bob("home", "work")
            alice.send_presence(pto="bob@localhost/work", pstatus="just for you")
            got = await bob.expect("presence", "available", where=lambda e: e.get("from") == "alice@localhost/home")
            transcript.stanza("directed presence delivered", bob, got, must_agree=True, attrs=("from",),
                              children=("status",))
            await alice.close()
            gone = await bob.expect("presence", "unavailable", where=lambda e: e.get("from") == "alice@localhost/home")
            # RFC 6121 4.6.3: who got directed presence hears the resource go.
            transcript.stanza("unavailable after close", bob, gone, must_agree=True, attrs=("from",), children=False)

    run(scenario())


def test_client_state_indication(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            alice, bob = await scene.alice_and_bob("home", "phone")
            bob.xmpp.send_raw(f"<inactive xmlns='{CSI}'/>")
            await bob.sync()
            alice.send_presence(pto="bob@localhost/phone", pshow="away")
            await alice.sync()
            held = await bob.maybe("presence", where=lambda e: e.get("from") == "alice@localhost/home", timeout=1.0)
            transcript.fact("presence while inactive", bob, "delivered" if held is not None else "held")
            alice.send_message("bob@localhost/phone", "wake up")
            msg = await bob.expect("message", "chat")
            transcript.stanza("message while inactive", bob, msg, must_agree=True, attrs=("from",),
                              children=("body",))
            bob.xmpp.send_raw(f"<active xmlns='{CSI}'/>")
            await bob.sync()
            seen = held or await bob.maybe("presence", where=lambda e: e.get("from") == "alice@localhost/home")
            transcript.fact("presence delivered by the end", bob, seen is not None, must_agree=True)

    run(scenario())


def test_vcard_and_private_storage(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            alice, bob = await scene.alice_and_bob("home", "work")
            vcard = ET.Element(f"{{{VCARD}}}vCard")
            ET.SubElement(vcard, f"{{{VCARD}}}FN").text = "Alice Liddell"
            transcript.stanza("vcard set", alice, await alice.iq(None, vcard, type="set"), must_agree=True, attrs=())
            got = await bob.iq("alice@localhost", ET.Element(f"{{{VCARD}}}vCard"))
            fn = got.find(f"{{{VCARD}}}vCard/{{{VCARD}}}FN")
            transcript.fact("vcard read by another account", bob, fn.text if fn is not None else None,
                            must_agree=True)

            query = ET.Element(f"{{{PRIVATE}}}query")
            ET.SubElement(ET.SubElement(query, "{urn:example:prefs}prefs"), "{urn:example:prefs}theme").text = "dark"
            transcript.stanza("private set", alice, await alice.iq(None, query, type="set"), must_agree=True,
                              attrs=())
            ask = ET.Element(f"{{{PRIVATE}}}query")
            ET.SubElement(ask, "{urn:example:prefs}prefs")
            got = await alice.iq(None, ask)
            theme = got.find(f"{{{PRIVATE}}}query/{{urn:example:prefs}}prefs/{{urn:example:prefs}}theme")
            transcript.fact("private get", alice, theme.text if theme is not None else None, must_agree=True)
            other = await bob.iq("alice@localhost", ask)
            transcript.stanza("private of another account", bob, other, attrs=())

    run(scenario())


BLOCKING = "urn:xmpp:blocking"
LAST = "jabber:iq:last"


def test_blocking(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            alice, bob = await scene.alice_and_bob("home", "work")
            block = ET.Element(f"{{{BLOCKING}}}block")
            ET.SubElement(block, f"{{{BLOCKING}}}item", {"jid": "bob@localhost"})
            transcript.stanza("block", alice, await alice.iq(None, block, type="set"), must_agree=True, attrs=())
            got = await alice.iq(None, ET.Element(f"{{{BLOCKING}}}blocklist"))
            items = [i.get("jid") for i in got.iter(f"{{{BLOCKING}}}item")]
            transcript.facts("block list", alice, items, must_agree=True)

            bob.send_message("alice@localhost/home", "let me in")
            await bob.sync()
            delivered = await alice.maybe("message", "chat", timeout=1.0)
            transcript.fact("blocked contact's message delivered", alice, delivered is not None, must_agree=True)
            bounce = await bob.maybe("message", "error")
            transcript.stanza("blocked contact's message bounced", bob, bounce, attrs=())

            alice.send_message("bob@localhost", "going out")
            refused = await alice.expect("message", "error")
            # XEP-0191 section 3.5: not-acceptable with <blocked/>.
            transcript.stanza("message to a blocked JID", alice, refused, must_agree=True, attrs=())

    run(scenario())


def test_last_activity_of_the_server(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            alice = await scene.login("alice", "a-pass", "home")
            got = await alice.iq("localhost", ET.Element(f"{{{LAST}}}query"))
            seconds = got.find(f"{{{LAST}}}query")
            # XEP-0012 section 5 lets a server answer its uptime; Prosody needs mod_uptime for it.
            transcript.fact("uptime answered", alice, seconds is not None and seconds.get("seconds") is not None)
            transcript.stanza("uptime as received", alice, got, attrs=())

    run(scenario())
