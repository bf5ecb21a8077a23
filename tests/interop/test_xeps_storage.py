"""What accounts keep on the server and how they come to be, driven by slixmpp's
own plugins: XEP-0054 vcard-temp, XEP-0049 private XML storage and XEP-0077
in-band registration."""

import asyncio

from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ElementBase

from test_single_node import TIMEOUT, Session, run


class Prefs(ElementBase):
    """An application's settings, as a client would keep them in private storage."""

    name = "prefs"
    namespace = "urn:example:prefs"
    plugin_attrib = "prefs"
    interfaces = {"theme"}
    sub_interfaces = interfaces


def with_plugins(session, *plugins):
    for plugin in plugins:
        session.xmpp.register_plugin(plugin)
    return session


def test_vcard_round_trip(node):
    node.add_user("alice@localhost", "a-pass")
    node.add_user("bob@localhost", "b-pass")
    node.add_user("carol@localhost", "c-pass")

    async def scenario():
        alice = with_plugins(Session(node, "alice", "a-pass", "home"), "xep_0054")
        bob = with_plugins(Session(node, "bob", "b-pass", "work"), "xep_0054")
        assert await alice.connect() and await bob.connect()
        vcard_temp = alice.xmpp.plugin["xep_0054"]
        card = vcard_temp.make_vcard()
        card["FN"] = "Alice Liddell"
        card["NICKNAME"] = "alice"
        await vcard_temp.publish_vcard(card, timeout=TIMEOUT)
        # Her own, from the server rather than slixmpp's cache.
        own = await vcard_temp.get_vcard(local=False, timeout=TIMEOUT)
        assert own["vcard_temp"]["FN"] == "Alice Liddell"
        # Bob reads it at her bare JID.
        seen = await bob.xmpp.plugin["xep_0054"].get_vcard(
            "alice@localhost", local=False, timeout=TIMEOUT
        )
        assert seen["vcard_temp"]["FN"] == "Alice Liddell"
        assert seen["vcard_temp"]["NICKNAME"] == ["alice"]
        # An account without a vCard answers an empty one.
        none = await bob.xmpp.plugin["xep_0054"].get_vcard(
            "carol@localhost", local=False, timeout=TIMEOUT
        )
        assert none["type"] == "result"
        assert none["vcard_temp"]["FN"] == ""
        alice.close()
        bob.close()

    run(scenario())


def test_private_storage_round_trip(node):
    node.add_user("alice@localhost", "a-pass")

    async def scenario():
        s = with_plugins(Session(node, "alice", "a-pass", "py"), "xep_0049")
        assert await s.connect()
        private = s.xmpp.plugin["xep_0049"]
        private.register(Prefs)
        prefs = Prefs()
        prefs["theme"] = "dark"
        await private.store(prefs, timeout=TIMEOUT)
        got = await private.retrieve("prefs", timeout=TIMEOUT)
        assert got["private"]["prefs"]["theme"] == "dark"
        prefs["theme"] = "light"
        await private.store(prefs, timeout=TIMEOUT)
        got = await private.retrieve("prefs", timeout=TIMEOUT)
        assert got["private"]["prefs"]["theme"] == "light"
        s.close()

    run(scenario())


def test_in_band_registration(open_node):
    node = open_node

    async def scenario():
        newcomer = with_plugins(Session(node, "dora", "explorer", "py"), "xep_0077")
        registered = asyncio.get_running_loop().create_future()

        async def register(form):
            # slixmpp asked for the form when it saw the <register/> stream feature.
            assert form["register"].xml.find("{jabber:iq:register}username") is not None
            assert form["register"].xml.find("{jabber:iq:register}password") is not None
            reply = newcomer.xmpp.Iq()
            reply["type"] = "set"
            reply["register"]["username"] = "dora"
            reply["register"]["password"] = "explorer"
            try:
                await reply.send(timeout=TIMEOUT)
                registered.set_result(True)
            except IqError as e:
                registered.set_result(e.iq["error"]["condition"])

        newcomer.xmpp.add_event_handler("register", register)
        # Registered over the stream, then authenticated with the new account.
        assert await newcomer.connect()
        assert await registered is True
        assert str(newcomer.xmpp.boundjid) == "dora@localhost/py"
        listed = node.cli("user", "list")
        assert listed.stdout.split() == ["dora@localhost"], listed

        # A second registration of the name is a conflict.
        rival = with_plugins(Session(node, "dora", "other", "rival"), "xep_0077")
        conflict = asyncio.get_running_loop().create_future()

        async def register_again(_form):
            reply = rival.xmpp.Iq()
            reply["type"] = "set"
            reply["register"]["username"] = "dora"
            reply["register"]["password"] = "other"
            try:
                await reply.send(timeout=TIMEOUT)
                conflict.set_result("accepted")
            except IqError as e:
                conflict.set_result(e.iq["error"]["condition"])

        rival.xmpp.add_event_handler("register", register_again)
        assert not await rival.connect()
        assert await conflict == "conflict"
        rival.close()

        # The account changes its password in-band and logs in with the new one.
        await newcomer.xmpp.plugin["xep_0077"].change_password("new-map", timeout=TIMEOUT)
        newcomer.close()
        again = Session(node, "dora", "new-map", "again")
        assert await again.connect()
        again.close()

    run(scenario())
