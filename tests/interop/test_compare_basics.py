"""Basic scenarios run against Chorus and Prosody and compared (issue 4).

Each test runs twice (`server` is "chorus" or "prosody"); what the clients
receive goes into `transcript`. Asserts are for what a scenario needs to go on
(a login that must work); what the servers answer is recorded, and recorded
with `must_agree=True` where the RFC leaves no choice. See README.md.
"""

from xml.etree import ElementTree as ET

from compare import Scene, run

DISCO_INFO = "http://jabber.org/protocol/disco#info"
PING = "urn:xmpp:ping"
UNKNOWN_NS = "urn:example:chorus-interop:unknown"


def test_scram_sha256_login_over_starttls(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "wonderland")
            alice = await scene.login("alice", "wonderland", "py")
            transcript.fact("session", alice, f"logged in with {alice.mechanism()}")
            transcript.fact("session", alice, f"bound {alice.bound}")
            # Stream features, TLS and SASL exchange, bind: informational.
            transcript.stanzas("login exchange", alice, alice.login_log, attrs=())

    run(scenario())


def test_scram_sha256_login_over_direct_tls(server, transcript):
    server.require("direct_tls")

    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "wonderland")
            alice = await scene.login("alice", "wonderland", "tls", direct_tls=True)
            transcript.fact("session", alice, f"logged in with {alice.mechanism()}")
            transcript.stanzas("login exchange", alice, alice.login_log, attrs=())

    run(scenario())


def test_wrong_password_gets_not_authorized(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "wonderland")
            alice = scene.client("alice", "looking-glass", "py")
            started = await alice.connect()
            transcript.fact("outcome", alice, "session started" if started else "login refused", must_agree=True)
            failure = next((el for el in alice.login_log if el.tag.endswith("}failure")), None)
            # RFC 6120 6.5.10: a wrong password is <not-authorized/>.
            transcript.stanza("SASL failure", alice, failure, must_agree=True, attrs=())

    run(scenario())


def test_chat_to_full_and_bare_jid(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            alice, bob = await scene.alice_and_bob("home", "work")

            # To the full JID: delivered to that resource (RFC 6121 8.5.3.1).
            alice.send_message("bob@localhost/work", "to your resource")
            got = await bob.expect("message", "chat")
            transcript.stanza("full JID: delivered", bob, got, must_agree=True, attrs=("from",), children=("body",))
            transcript.stanza("full JID: as received", bob, got)

            # To the bare JID, one available resource: delivered to it (RFC 6121 8.5.2.1.1).
            alice.send_message("bob@localhost", "to your account")
            got = await bob.expect("message", "chat")
            transcript.stanza("bare JID: delivered", bob, got, must_agree=True, attrs=("from",), children=("body",))
            transcript.stanza("bare JID: as received", bob, got)

            # And back, to alice's full JID.
            bob.send_message(alice.jid, "back to you")
            got = await alice.expect("message", "chat")
            transcript.stanza("reply: delivered", alice, got, must_agree=True, attrs=("from",), children=("body",))

            # Nothing else for either (no errors, no echoes).
            await alice.sync()
            await bob.sync()
            for c in (alice, bob):
                transcript.stanzas("nothing else", c, c.take_all("message"), attrs=("from",))

    run(scenario())


def test_message_to_unknown_account(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            alice = await scene.login("alice", "a-pass", "home")
            alice.send_message("nobody@localhost", "anyone there?")
            # No such account: RFC 6121 8.5.1 allows silence or <service-unavailable/>;
            # Chorus answers (as Prosody does), so the two are held to agree.
            got = await alice.maybe("message", "error", timeout=10)
            transcript.stanza("error back", alice, got, must_agree=True, attrs=(), children=False)
            transcript.stanza("error back: as received", alice, got)

    run(scenario())


def test_iq_with_unknown_namespace(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            scene.account("bob", "b-pass")
            alice = await scene.login("alice", "a-pass", "home")
            # RFC 6120 8.4: an iq get/set the entity does not understand:
            # <service-unavailable/>. To the server itself...
            got = await alice.iq("localhost", ET.Element(f"{{{UNKNOWN_NS}}}query"))
            transcript.stanza("to the server", alice, got, must_agree=True, attrs=("from",), children=False)
            transcript.stanza("to the server: as received", alice, got)
            # ... and to an online account's bare JID, answered by the server on
            # the account's behalf (RFC 6121 8.5.2.1.3), here with type set.
            got = await alice.iq("bob@localhost", ET.Element(f"{{{UNKNOWN_NS}}}query"), type="set")
            transcript.stanza("to a bare JID", alice, got, must_agree=True, attrs=("from",), children=False)
            transcript.stanza("to a bare JID: as received", alice, got)

    run(scenario())


def test_server_disco_info(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            alice = await scene.login("alice", "a-pass", "home")
            got = await alice.iq("localhost", ET.Element(f"{{{DISCO_INFO}}}query"))
            transcript.stanza("response", alice, got, must_agree=True, attrs=("from",), children=False)
            query = got.find(f"{{{DISCO_INFO}}}query")
            features = sorted(f.get("var") for f in query.iter(f"{{{DISCO_INFO}}}feature")) if query is not None else []
            identities = sorted(
                f"identity {i.get('category')}/{i.get('type')}" for i in query.iter(f"{{{DISCO_INFO}}}identity")
            ) if query is not None else []
            transcript.fact("advertises ping", alice, f"{PING} listed: {PING in features}", must_agree=True)
            transcript.fact("advertises disco#info", alice, f"{DISCO_INFO} listed: {DISCO_INFO in features}", must_agree=True)
            transcript.facts("identities", alice, identities)
            transcript.facts("features", alice, features)

    run(scenario())


def test_ping_the_server(server, transcript):
    async def scenario():
        async with Scene(server) as scene:
            scene.account("alice", "a-pass")
            alice = await scene.login("alice", "a-pass", "home")
            # XEP-0199 4.2: the server answers an empty result.
            got = await alice.iq("localhost", ET.Element(f"{{{PING}}}ping"))
            transcript.stanza("pong", alice, got, must_agree=True, attrs=("from", "to"))

    run(scenario())
