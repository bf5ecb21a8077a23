//! XEP-0191 Blocking Command and XEP-0012 Last Activity against a real
//! `chorus` process, driven by the project's own client.

mod common;

use std::time::Duration;

use chorus::xmpp::element::Element;
use chorus::xmpp::ns;
use common::{assert_error, assert_result, node_with, Client, TestNode};

const BLOCKING: &str = "urn:xmpp:blocking";
const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
const LAST: &str = "jabber:iq:last";

async fn login(node: &TestNode, user: &str, resource: &str) -> Client {
    Client::login(node, user, "pw", resource).await
}

/// The JIDs of the block list, read with a get (which also asks for pushes).
async fn blocklist(c: &mut Client) -> Vec<String> {
    let reply = c
        .iq(&format!(
            "<iq type='get' id='bl'><blocklist xmlns='{BLOCKING}'/></iq>"
        ))
        .await;
    assert_result(&reply);
    reply
        .get_child("blocklist", BLOCKING)
        .expect("a blocklist in the result")
        .children()
        .filter_map(|i| i.attr("jid").map(str::to_string))
        .collect()
}

async fn block(c: &mut Client, id: &str, jids: &[&str]) -> Element {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    c.iq(&format!(
        "<iq type='set' id='{id}'><block xmlns='{BLOCKING}'>{items}</block></iq>"
    ))
    .await
}

async fn unblock(c: &mut Client, id: &str, jids: &[&str]) -> Element {
    let items: String = jids.iter().map(|j| format!("<item jid='{j}'/>")).collect();
    c.iq(&format!(
        "<iq type='set' id='{id}'><unblock xmlns='{BLOCKING}'>{items}</unblock></iq>"
    ))
    .await
}

/// A block list push (`block` or `unblock`) and its items.
fn push_of(e: &Element, name: &str) -> Option<Vec<String>> {
    if e.name() != "iq" || e.attr("type") != Some("set") {
        return None;
    }
    let el = e.get_child(name, BLOCKING)?;
    Some(
        el.children()
            .filter_map(|i| i.attr("jid").map(str::to_string))
            .collect(),
    )
}

async fn next_push(c: &mut Client, name: &str) -> Vec<String> {
    let push = c.recv_until(|e| push_of(e, name).is_some()).await;
    push_of(&push, name).unwrap()
}

/// Ping the server and return the first stanza that is the answer or that
/// `unwanted` picks: everything queued for the client before the ping comes first.
async fn ping_unless(c: &mut Client, id: &str, unwanted: impl Fn(&Element) -> bool) -> Element {
    c.send(&format!(
        "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    c.recv_until(|e| e.attr("id") == Some(id) || unwanted(e))
        .await
}

fn from_bare(e: &Element, bare: &str) -> bool {
    e.attr("from")
        .is_some_and(|f| f == bare || f.starts_with(&format!("{bare}/")))
}

/// `subscriber` subscribes to `contact`'s presence and `contact` approves.
async fn subscribe(subscriber: &mut Client, contact: &mut Client, contact_full: &str) {
    let (sub_bare, contact_bare) = (bare_of(subscriber), bare_of(contact));
    subscriber
        .send(&format!("<presence to='{contact_bare}' type='subscribe'/>"))
        .await;
    contact
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    contact
        .send(&format!("<presence to='{sub_bare}' type='subscribed'/>"))
        .await;
    // Approval sends the contact's current presence (RFC 6121 3.1.5).
    subscriber
        .recv_until(|e| {
            e.name() == "presence"
                && e.attr("from") == Some(contact_full)
                && e.attr("type").is_none()
        })
        .await;
}

fn bare_of(c: &Client) -> String {
    let jid = c.jid.as_deref().expect("bound");
    jid.split('/').next().unwrap().to_string()
}

#[tokio::test]
async fn block_list_is_read_changed_and_pushed_to_interested_resources() {
    let node = node_with(&["alice"], &[]);
    let mut a1 = login(&node, "alice", "one").await;
    let mut a2 = login(&node, "alice", "two").await;
    let mut a3 = login(&node, "alice", "three").await;
    assert!(blocklist(&mut a1).await.is_empty());
    blocklist(&mut a2).await;

    assert_result(&block(&mut a1, "b1", &["bob@localhost", "Carol@localhost"]).await);
    for c in [&mut a1, &mut a2] {
        assert_eq!(
            next_push(c, "block").await,
            vec!["bob@localhost".to_string(), "carol@localhost".to_string()]
        );
    }
    // a2 has its push, so a3's would already be queued: a3 never asked for the list.
    let first = ping_unless(&mut a3, "p3", |e| push_of(e, "block").is_some()).await;
    assert_eq!(first.attr("id"), Some("p3"), "a push reached a3: {first:?}");

    assert_eq!(
        blocklist(&mut a2).await,
        vec!["bob@localhost".to_string(), "carol@localhost".to_string()]
    );

    assert_error(&block(&mut a1, "b2", &[]).await, "bad-request");
    assert_error(
        &block(&mut a1, "b3", &["@localhost"]).await,
        "jid-malformed",
    );

    assert_result(&unblock(&mut a1, "u1", &["bob@localhost"]).await);
    for c in [&mut a1, &mut a2] {
        assert_eq!(
            next_push(c, "unblock").await,
            vec!["bob@localhost".to_string()]
        );
    }
    assert_eq!(
        blocklist(&mut a1).await,
        vec!["carol@localhost".to_string()]
    );

    // An empty unblock unblocks everything, and its push is empty too (section 3.5).
    assert_result(&unblock(&mut a2, "u2", &[]).await);
    for c in [&mut a1, &mut a2] {
        assert!(next_push(c, "unblock").await.is_empty());
    }
    assert!(blocklist(&mut a1).await.is_empty());

    // Another account's list is not the sender's to read: answered as for no
    // such account, so it does not tell whether bob exists.
    let reply = a1
        .iq(&format!(
            "<iq type='get' id='other' to='bob@localhost'><blocklist xmlns='{BLOCKING}'/></iq>"
        ))
        .await;
    assert_error(&reply, "service-unavailable");
    let missing = a1
        .iq(&format!(
            "<iq type='get' id='other2' to='nobody@localhost'><blocklist xmlns='{BLOCKING}'/></iq>"
        ))
        .await;
    assert_eq!(
        missing.get_child("error", ns::CLIENT).map(|e| e.to_xml()),
        reply.get_child("error", ns::CLIENT).map(|e| e.to_xml())
    );
}

#[tokio::test]
async fn a_blocked_contact_is_bounced_and_its_presence_dropped_until_unblocked() {
    let node = node_with(&["alice", "bob"], &[]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = login(&node, "bob", "b").await;
    assert_result(&block(&mut alice, "b1", &["bob@localhost"]).await);

    // Presence first, so that the errors below prove the router has handled it.
    bob.send("<presence to='alice@localhost/a'/>").await;
    for (id, to) in [("m1", "alice@localhost"), ("m2", "alice@localhost/a")] {
        bob.send(&format!(
            "<message to='{to}' id='{id}' type='chat'><body>hi</body></message>"
        ))
        .await;
        let reply = bob.recv_until(|e| e.attr("id") == Some(id)).await;
        assert_error(&reply, "service-unavailable");
    }
    let reply = bob
        .iq("<iq type='get' id='q1' to='alice@localhost/a'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    assert_error(&reply, "service-unavailable");
    // Answered by the server for the account: as if there were no account (not `forbidden`).
    let reply = bob
        .iq(&format!(
            "<iq type='get' id='q2' to='alice@localhost'><query xmlns='{LAST}'/></iq>"
        ))
        .await;
    assert_error(&reply, "service-unavailable");

    let first = ping_unless(&mut alice, "p1", |e| from_bare(e, "bob@localhost")).await;
    assert_eq!(first.attr("id"), Some("p1"), "bob got through: {first:?}");

    assert_result(&unblock(&mut alice, "u1", &["bob@localhost"]).await);
    bob.send("<message to='alice@localhost' id='m3' type='chat'><body>again</body></message>")
        .await;
    let msg = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(msg.attr("id"), Some("m3"));
    assert_eq!(msg.get_child("body", ns::CLIENT).unwrap().text(), "again");
}

#[tokio::test]
async fn an_offline_user_keeps_nothing_from_a_blocked_contact() {
    let node = node_with(&["alice", "bob"], &[]);
    let mut alice = login(&node, "alice", "a").await;
    assert_result(&block(&mut alice, "b1", &["bob@localhost"]).await);
    drop(alice);
    let mut bob = login(&node, "bob", "b").await;
    // Offline storage would keep the message (XEP-0160); a block bounces it instead.
    bob.send("<message to='alice@localhost' id='m1' type='chat'><body>hi</body></message>")
        .await;
    assert_error(
        &bob.recv_until(|e| e.attr("id") == Some("m1")).await,
        "service-unavailable",
    );
    // A subscription request would wait in alice's roster for her next login.
    bob.iq("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    bob.recv_until(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .await;
    // Alice's side has screened the request out (the message before it was the first).
    common::cluster::eventually("the request was screened out", || {
        node.metric("chorus_delivery_screened_total") >= 2
    })
    .await;

    let mut alice = login(&node, "alice", "again").await;
    // Through the user actor after her initial presence, which delivers waiting requests.
    alice
        .send("<message to='alice@localhost' id='sync' type='chat'><body>me</body></message>")
        .await;
    let first = alice
        .recv_until(|e| e.attr("id") == Some("sync") || from_bare(e, "bob@localhost"))
        .await;
    assert_eq!(first.attr("id"), Some("sync"), "bob got through: {first:?}");
}

#[tokio::test]
async fn stanzas_to_a_blocked_jid_are_refused_with_the_blocked_condition() {
    let node = node_with(&["alice", "bob"], &[]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = login(&node, "bob", "b").await;
    assert_result(&block(&mut alice, "b1", &["bob@localhost"]).await);

    for (id, stanza) in [
        (
            "m1",
            "<message to='bob@localhost' id='m1' type='chat'><body>hi</body></message>",
        ),
        (
            "m2",
            "<message to='bob@localhost/b' id='m2' type='chat'><body>hi</body></message>",
        ),
        (
            "s1",
            "<presence to='bob@localhost' id='s1' type='subscribe'/>",
        ),
        (
            "q1",
            "<iq to='bob@localhost/b' id='q1' type='get'><query xmlns='jabber:iq:version'/></iq>",
        ),
    ] {
        alice.send(stanza).await;
        let reply = alice.recv_until(|e| e.attr("id") == Some(id)).await;
        assert_error(&reply, "not-acceptable");
        let error = reply.get_child("error", ns::CLIENT).unwrap();
        assert!(
            error.get_child("blocked", BLOCKING_ERRORS).is_some(),
            "no <blocked/> condition: {reply:?}"
        );
    }
    let first = ping_unless(&mut bob, "p1", |e| from_bare(e, "alice@localhost")).await;
    assert_eq!(first.attr("id"), Some("p1"), "alice got through: {first:?}");
}

#[tokio::test]
async fn a_full_jid_item_blocks_only_that_resource() {
    let node = node_with(&["alice", "bob"], &[]);
    let mut alice = login(&node, "alice", "a").await;
    let mut home = login(&node, "bob", "home").await;
    let mut work = login(&node, "bob", "work").await;
    assert_result(&block(&mut alice, "b1", &["bob@localhost/home"]).await);
    home.send("<message to='alice@localhost' id='h1' type='chat'><body>home</body></message>")
        .await;
    assert_error(
        &home.recv_until(|e| e.attr("id") == Some("h1")).await,
        "service-unavailable",
    );
    work.send("<message to='alice@localhost' id='w1' type='chat'><body>work</body></message>")
        .await;
    let msg = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(msg.attr("id"), Some("w1"));
}

#[tokio::test]
async fn blocking_a_subscriber_sends_unavailable_and_hides_presence_until_unblocked() {
    let node = node_with(&["alice", "bob"], &[]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = login(&node, "bob", "b").await;
    subscribe(&mut bob, &mut alice, "alice@localhost/a").await;

    assert_result(&block(&mut alice, "b1", &["bob@localhost"]).await);
    bob.recv_until(|e| {
        e.name() == "presence"
            && e.attr("from") == Some("alice@localhost/a")
            && e.attr("type") == Some("unavailable")
    })
    .await;

    // While bob is blocked, alice's presence changes do not reach him; on
    // unblock he gets her current presence (section 3.4), and nothing before it.
    alice
        .send("<presence><status>secret</status></presence>")
        .await;
    alice
        .send("<presence><status>public</status></presence>")
        .await;
    assert_result(&unblock(&mut alice, "u1", &["bob@localhost"]).await);
    let p = bob
        .recv_until(|e| {
            e.name() == "presence"
                && e.attr("from") == Some("alice@localhost/a")
                && e.attr("type").is_none()
        })
        .await;
    assert_eq!(p.get_child("status", ns::CLIENT).unwrap().text(), "public");
}

#[tokio::test]
async fn the_block_list_is_limited() {
    let node = node_with(&["alice"], &["--set", "limits.blocked_jids=2"]);
    let mut alice = login(&node, "alice", "a").await;
    assert_result(&block(&mut alice, "b1", &["a@localhost", "b@localhost"]).await);
    let reply = block(&mut alice, "b2", &["c@localhost"]).await;
    assert_error(&reply, "not-acceptable");
    // Blocking what is already blocked adds nothing, so it is not refused.
    assert_result(&block(&mut alice, "b3", &["a@localhost"]).await);
    assert_eq!(blocklist(&mut alice).await.len(), 2);
}

/// A last activity answer: seconds and status text.
fn last_of(reply: &Element) -> (u64, String) {
    assert_result(reply);
    let q = reply
        .get_child("query", LAST)
        .expect("a query in the result");
    (q.attr("seconds").unwrap().parse().unwrap(), q.text())
}

async fn last(c: &mut Client, id: &str, to: Option<&str>) -> Element {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.iq(&format!(
        "<iq type='get' id='{id}'{to}><query xmlns='{LAST}'/></iq>"
    ))
    .await
}

#[tokio::test]
async fn the_server_answers_its_uptime_and_lists_both_features() {
    let node = node_with(&["alice"], &[]);
    let mut alice = login(&node, "alice", "a").await;
    // Uptime counts in whole seconds: asked until the first has passed.
    let mut answer = (0, String::new());
    for i in 0..100 {
        answer = last_of(&last(&mut alice, &format!("l{i}"), Some("localhost")).await);
        if answer.0 >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (seconds, text) = answer;
    assert!((1..600).contains(&seconds), "uptime {seconds}");
    assert!(text.is_empty());

    let info = alice
        .iq("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let features: Vec<&str> = info
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .collect();
    for f in [BLOCKING, LAST] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
}

#[tokio::test]
async fn last_activity_of_an_account_follows_subscription_and_logout() {
    let node = node_with(&["alice", "bob", "carol"], &[]);
    let mut alice = login(&node, "alice", "a").await;
    let mut bob = login(&node, "bob", "b").await;
    let mut carol = login(&node, "carol", "c").await;
    subscribe(&mut bob, &mut alice, "alice@localhost/a").await;

    assert_eq!(
        last_of(&last(&mut bob, "l1", Some("alice@localhost")).await).0,
        0
    );
    assert_eq!(last_of(&last(&mut alice, "l2", None).await).0, 0);
    // Carol may not see alice: the same answer, to the byte, as for no account.
    let hidden = last(&mut carol, "l3", Some("alice@localhost")).await;
    let missing = last(&mut carol, "l3", Some("nobody@localhost")).await;
    assert_error(&hidden, "service-unavailable");
    assert_eq!(
        hidden.get_child("error", ns::CLIENT).map(|e| e.to_xml()),
        missing.get_child("error", ns::CLIENT).map(|e| e.to_xml())
    );

    alice
        .send("<presence type='unavailable'><status>gone fishing</status></presence>")
        .await;
    drop(alice);
    // The route goes once the closed stream's unbind commits (until then she counts as
    // online), and the idle time counts in whole seconds: asked until both have happened.
    let mut answer = (0, String::new());
    for i in 0..100 {
        answer = last_of(&last(&mut bob, &format!("w{i}"), Some("alice@localhost")).await);
        if answer.0 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.0 >= 1, "{answer:?}");
    assert_eq!(answer.1, "gone fishing");
    assert_error(
        &last(&mut carol, "l5", Some("alice@localhost")).await,
        "service-unavailable",
    );
}
