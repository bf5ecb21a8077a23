//! A state read that fails is never read as "absent": with every read of alice's block
//! list failing (the debug build's fault point, `TEST_CHORUS_FAIL_STATE_READS`), a stanza
//! for her is refused with `<internal-server-error/>` instead of delivered as if the list
//! were empty, and the refusals are counted in `/metrics`.

mod common;

use chorus::xmpp::element::Element;
use common::{assert_error, Client, TestNode};

fn node_with_unreadable_block_lists() -> TestNode {
    let mut node = TestNode::prepare(&[]);
    node.env.push((
        "TEST_CHORUS_FAIL_STATE_READS".into(),
        "blocklist:alice@localhost".into(),
    ));
    node.spawn();
    for u in ["alice", "mallory"] {
        node.add_user(&format!("{u}@localhost"), "pw");
    }
    node
}

/// A ping round trip that fails if anything `forbidden` arrives before its answer.
async fn nothing_before(client: &mut Client, id: &str, forbidden: impl Fn(&Element) -> bool) {
    client
        .send(&format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    loop {
        let el = client.recv().await;
        assert!(
            !forbidden(&el),
            "delivered despite an unreadable block list: {el:?}"
        );
        if el.attr("id") == Some(id) {
            return;
        }
    }
}

#[tokio::test]
async fn a_block_list_read_error_refuses_the_stanza_instead_of_delivering_it() {
    let node = node_with_unreadable_block_lists();
    let mut alice = Client::login(&node, "alice", "pw", "a").await;
    let mut mallory = Client::login(&node, "mallory", "pw", "m").await;

    mallory
        .send("<message to='alice@localhost/a' id='m1' type='chat'><body>hi</body></message>")
        .await;
    let reply = mallory.recv_until(|e| e.attr("id") == Some("m1")).await;
    assert_eq!(reply.attr("type"), Some("error"));
    assert_error(&reply, "internal-server-error");

    // To the bare JID (the user actor's path) as well.
    mallory
        .send("<message to='alice@localhost' id='m2' type='chat'><body>hi</body></message>")
        .await;
    let reply = mallory.recv_until(|e| e.attr("id") == Some("m2")).await;
    assert_error(&reply, "internal-server-error");

    // The router answered both before this ping reaches alice's stream: had it delivered
    // either, alice would read it first.
    nothing_before(&mut alice, "after", |e| e.name() == "message").await;

    assert!(node.metric("chorus_router_stanzas_refused_unreadable_state_total") >= 2);
    assert!(node.metric("chorus_state_read_errors_total") >= 2);
}

#[tokio::test]
async fn a_subscription_to_an_account_whose_block_list_cannot_be_read_is_refused() {
    let node = node_with_unreadable_block_lists();
    let mut alice = Client::login(&node, "alice", "pw", "a").await;
    alice.send("<presence/>").await;
    let mut mallory = Client::login(&node, "mallory", "pw", "m").await;

    // The contact's side of a subscription screens it as the router would.
    mallory
        .send("<presence to='alice@localhost' type='subscribe' id='s1'/>")
        .await;
    let reply = mallory.recv_until(|e| e.attr("id") == Some("s1")).await;
    assert_eq!(reply.attr("type"), Some("error"));
    assert_error(&reply, "internal-server-error");

    nothing_before(&mut alice, "r", |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribe")
    })
    .await;
    // Her block-list get answers an error too, not an empty list.
    let reply = alice
        .iq("<iq type='get' id='bl'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    assert_error(&reply, "internal-server-error");
}
