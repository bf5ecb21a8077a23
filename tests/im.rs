//! RFC 6121 on one node, driven by the project's own client: roster,
//! subscriptions, presence, offline messages.

mod common;

use chorus::xmpp::element::Element;
use chorus::xmpp::ns;
use common::{Client, TestNode};

const ROSTER: &str = "jabber:iq:roster";

async fn iq(c: &mut Client, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

async fn roster(c: &mut Client) -> Vec<Element> {
    let reply = iq(
        c,
        "r",
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    reply
        .get_child("query", ROSTER)
        .unwrap()
        .children()
        .cloned()
        .collect()
}

fn is_push(e: &Element) -> bool {
    e.name() == "iq" && e.attr("type") == Some("set") && e.get_child("query", ROSTER).is_some()
}

fn push_item(e: &Element) -> Element {
    e.get_child("query", ROSTER)
        .unwrap()
        .get_child("item", ROSTER)
        .unwrap()
        .clone()
}

fn presence_from(from: &'static str, ty: Option<&'static str>) -> impl Fn(&Element) -> bool {
    move |e: &Element| {
        e.name() == "presence" && e.attr("from") == Some(from) && e.attr("type") == ty
    }
}

async fn login(node: &TestNode, user: &str, resource: &str) -> Client {
    Client::login(node, user, "pw", resource).await
}

fn node_with(users: &[&str]) -> TestNode {
    let node = TestNode::start();
    for u in users {
        node.add_user(&format!("{u}@localhost"), "pw");
    }
    node
}

#[tokio::test]
async fn roster_set_get_remove_with_pushes_and_versions() {
    let node = node_with(&["alice", "bob"]);
    let mut a1 = login(&node, "alice", "one").await;
    let mut a2 = login(&node, "alice", "two").await;
    assert!(roster(&mut a1).await.is_empty());
    roster(&mut a2).await; // both resources are now interested

    let set = "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Friends</group></item></query></iq>";
    assert_eq!(iq(&mut a1, "s1", set).await.attr("type"), Some("result"));
    for c in [&mut a1, &mut a2] {
        let item = push_item(&c.recv_until(is_push).await);
        assert_eq!(item.attr("jid"), Some("bob@localhost"));
        assert_eq!(item.attr("name"), Some("Bob"));
        assert_eq!(item.attr("subscription"), Some("none"));
    }
    let items = roster(&mut a1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].get_child("group", ROSTER).unwrap().text(),
        "Friends"
    );

    // XEP-0237: the current version gets an empty result.
    let reply = iq(
        &mut a1,
        "v",
        "<iq type='get' id='v'><query xmlns='jabber:iq:roster' ver=''/></iq>",
    )
    .await;
    let ver = reply
        .get_child("query", ROSTER)
        .unwrap()
        .attr("ver")
        .unwrap()
        .to_string();
    let same = format!("<iq type='get' id='v2'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>");
    let reply = iq(&mut a1, "v2", &same).await;
    assert_eq!(reply.attr("type"), Some("result"));
    assert!(
        reply.get_child("query", ROSTER).is_none(),
        "unchanged roster must come back empty: {reply:?}"
    );

    // Errors the RFC names.
    let two = "<iq type='set' id='e1'><query xmlns='jabber:iq:roster'><item jid='a@localhost'/><item jid='b@localhost'/></query></iq>";
    assert!(iq(&mut a1, "e1", two)
        .await
        .get_child("error", ns::CLIENT)
        .unwrap()
        .get_child("bad-request", ns::STANZAS)
        .is_some());
    let dup = "<iq type='set' id='e2'><query xmlns='jabber:iq:roster'><item jid='c@localhost'><group>G</group><group>G</group></item></query></iq>";
    assert!(iq(&mut a1, "e2", dup)
        .await
        .get_child("error", ns::CLIENT)
        .unwrap()
        .get_child("bad-request", ns::STANZAS)
        .is_some());

    let remove = "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>";
    assert_eq!(iq(&mut a1, "s2", remove).await.attr("type"), Some("result"));
    let item = push_item(
        &a2.recv_until(|e| is_push(e) && push_item(e).attr("subscription") == Some("remove"))
            .await,
    );
    assert_eq!(item.attr("jid"), Some("bob@localhost"));
    assert!(roster(&mut a1).await.is_empty());
}

/// The whole RFC 6121 section 3 dance between two online users, then presence.
#[tokio::test]
async fn mutual_subscription_then_presence_flows_both_ways() {
    let node = node_with(&["alice", "bob"]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = login(&node, "bob", "b").await;
    roster(&mut alice).await;
    roster(&mut bob).await;

    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    let push = push_item(&alice.recv_until(is_push).await);
    assert_eq!(
        (push.attr("subscription"), push.attr("ask")),
        (Some("none"), Some("subscribe"))
    );
    let request = bob
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(
        request.attr("from"),
        Some("alice@localhost"),
        "stamped with the bare JID"
    );

    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let push = push_item(&bob.recv_until(is_push).await);
    assert_eq!(push.attr("subscription"), Some("from"));
    let push = push_item(
        &alice
            .recv_until(|e| is_push(e) && push_item(e).attr("subscription") == Some("to"))
            .await,
    );
    assert_eq!(push.attr("ask"), None);
    alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"))
        .await;
    // Approval sends bob's current presence to alice (RFC 6121 3.1.5).
    alice
        .recv_until(presence_from("bob@localhost/b", None))
        .await;

    // And back: bob subscribes to alice, who approves.
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    bob.recv_until(|e| is_push(e) && push_item(e).attr("subscription") == Some("both"))
        .await;
    alice
        .recv_until(|e| is_push(e) && push_item(e).attr("subscription") == Some("both"))
        .await;

    // A presence change reaches the contact.
    alice
        .send("<presence><show>away</show><status>lunch</status></presence>")
        .await;
    let p = bob
        .recv_until(|e| {
            presence_from("alice@localhost/a", None)(e) && e.get_child("show", ns::CLIENT).is_some()
        })
        .await;
    assert_eq!(p.get_child("status", ns::CLIENT).unwrap().text(), "lunch");

    // A dropped connection is unavailable presence for the contact (RFC 6121 4.5.3.2).
    drop(alice);
    bob.recv_until(presence_from("alice@localhost/a", Some("unavailable")))
        .await;

    // Logging in again: bob sees alice's initial presence; alice gets bob's by probe.
    let mut alice = login(&node, "alice", "again").await;
    bob.recv_until(presence_from("alice@localhost/again", None))
        .await;
    alice
        .recv_until(presence_from("bob@localhost/b", None))
        .await;
}

#[tokio::test]
async fn pending_request_is_redelivered_at_login_and_can_be_denied() {
    let node = node_with(&["alice", "bob"]);
    let mut alice = login(&node, "alice", "a").await;
    roster(&mut alice).await;
    alice.send("<presence to='bob@localhost' type='subscribe'><status>hi, it is alice</status></presence>").await;
    alice.recv_until(is_push).await;
    // Bob was offline; the request waits for him.
    let mut bob = login(&node, "bob", "b").await;
    let request = bob
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(
        request.get_child("status", ns::CLIENT).unwrap().text(),
        "hi, it is alice"
    );
    bob.send("<presence to='alice@localhost' type='unsubscribed'/>")
        .await;
    let push = push_item(
        &alice
            .recv_until(|e| is_push(e) && push_item(e).attr("ask").is_none())
            .await,
    );
    assert_eq!(push.attr("subscription"), Some("none"));
    // Denied: not redelivered next time.
    drop(bob);
    let mut bob = login(&node, "bob", "b2").await;
    bob.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let next = bob
        .recv_until(|e| e.attr("id") == Some("p") || e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(
        next.attr("id"),
        Some("p"),
        "a denied request came again: {next:?}"
    );
}

#[tokio::test]
async fn pre_approval_answers_for_the_user() {
    let node = node_with(&["alice", "bob"]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = login(&node, "bob", "b").await;
    roster(&mut bob).await;
    roster(&mut alice).await;
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let push = push_item(&bob.recv_until(is_push).await);
    assert_eq!(push.attr("approved"), Some("true"));
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    alice
        .recv_until(|e| is_push(e) && push_item(e).attr("subscription") == Some("to"))
        .await;
    bob.recv_until(|e| is_push(e) && push_item(e).attr("subscription") == Some("from"))
        .await;
}

#[tokio::test]
async fn directed_presence_is_cleaned_up_on_close() {
    let node = node_with(&["alice", "bob"]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = login(&node, "bob", "b").await;
    // No subscription: alice tells bob's resource directly.
    alice.send("<presence to='bob@localhost/b'/>").await;
    bob.recv_until(presence_from("alice@localhost/a", None))
        .await;
    drop(alice);
    bob.recv_until(presence_from("alice@localhost/a", Some("unavailable")))
        .await;
}

#[tokio::test]
async fn offline_messages_wait_with_delay_stamps_in_order() {
    let node = node_with(&["alice", "bob"]);
    let mut alice = login(&node, "alice", "a").await;
    for i in 0..20 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body></message>"
            ))
            .await;
    }
    // A headline is not kept.
    alice
        .send("<message to='bob@localhost' type='headline'><body>news</body></message>")
        .await;
    alice
        .send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    alice.recv_until(|e| e.attr("id") == Some("sync")).await;
    let offline =
        |node: &TestNode| node.api_get("/api/v1/users/bob@localhost")["offline_messages"].clone();
    common::cluster::eventually("the 20 messages are stored", || {
        offline(&node) == serde_json::json!(20)
    })
    .await;
    let mut bob = login(&node, "bob", "b").await;
    for i in 0..20 {
        let m = bob.recv_until(|e| e.name() == "message").await;
        assert_eq!(
            m.get_child("body", ns::CLIENT).unwrap().text(),
            i.to_string()
        );
        let delay = m
            .get_child("delay", "urn:xmpp:delay")
            .expect("XEP-0203 delay stamp");
        assert_eq!(delay.attr("from"), Some("localhost"));
        assert!(delay.attr("stamp").unwrap().ends_with('Z'));
    }
    // Removed once written: a second login finds nothing. (Without stream management a
    // stream that drops before its writes are confirmed gets them again: at least once.)
    common::cluster::eventually("the delivered messages are removed", || {
        offline(&node) == serde_json::json!(0)
    })
    .await;
    drop(bob);
    let mut bob = login(&node, "bob", "b2").await;
    bob.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let next = bob
        .recv_until(|e| e.name() == "message" || e.attr("id") == Some("p"))
        .await;
    assert_eq!(
        next.attr("id"),
        Some("p"),
        "an offline message came twice: {next:?}"
    );
}

#[tokio::test]
async fn full_offline_store_refuses_with_service_unavailable() {
    let node = TestNode::start_with(&["--set", "limits.offline_messages=3"]);
    node.add_user("alice@localhost", "pw");
    node.add_user("bob@localhost", "pw");
    let mut alice = login(&node, "alice", "a").await;
    for i in 0..4 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='m{i}'><body>{i}</body></message>"
            ))
            .await;
    }
    let err = alice.recv_until(|e| e.attr("id") == Some("m3")).await;
    assert_eq!(err.attr("type"), Some("error"));
    assert!(err
        .get_child("error", ns::CLIENT)
        .unwrap()
        .get_child("service-unavailable", ns::STANZAS)
        .is_some());
}

#[tokio::test]
async fn raising_priority_delivers_what_waited() {
    let node = node_with(&["alice", "bob"]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = Client::starttls(&node).await;
    assert_eq!(bob.scram_sha256("bob", "pw").await.name(), "success");
    bob.bind(Some("b")).await;
    // Available, but with a negative priority: messages to the bare JID wait (RFC 6121 8.5.2.2.1).
    bob.send("<presence><priority>-1</priority></presence>")
        .await;
    bob.sync("neg").await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>waited</body></message>")
        .await;
    alice.sync("sent").await;
    bob.send("<presence><priority>1</priority></presence>")
        .await;
    let m = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "waited");
    assert!(m.get_child("delay", "urn:xmpp:delay").is_some());
}
