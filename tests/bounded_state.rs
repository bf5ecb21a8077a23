//! Bounded per-account state (issue 11, item 3): private XML items, roster items made
//! by outbound subscriptions, pending inbound subscription requests (kept without what
//! a client hung on them), directed presence, and requests under way on one stream.
//! Each bound refuses with an error and keeps what was within it.

mod common;

use common::{assert_error, assert_result, condition, node_with, Client};

const PRIVATE: &str = "jabber:iq:private";

fn private_set(id: &str, name: &str, value: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='{PRIVATE}'><{name} xmlns='urn:example:{name}'>{value}</{name}></query></iq>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_storage_holds_a_bounded_number_of_elements() {
    let node = node_with(&["alice"], &["--set", "limits.private_items=2"]);
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    assert_result(&alice.iq(&private_set("p1", "one", "1")).await);
    assert_result(&alice.iq(&private_set("p2", "two", "2")).await);
    assert_error(
        &alice.iq(&private_set("p3", "three", "3")).await,
        "not-acceptable",
    );
    // Replacing one that is kept is no new element.
    assert_result(&alice.iq(&private_set("p4", "one", "again")).await);
    // Deleting one (an empty element) makes room.
    assert_result(
        &alice
            .iq(&format!(
                "<iq type='set' id='p5'><query xmlns='{PRIVATE}'><two xmlns='urn:example:two'/></query></iq>"
            ))
            .await,
    );
    assert_result(&alice.iq(&private_set("p6", "three", "3")).await);
}

fn roster_len(roster: &chorus::xmpp::element::Element) -> usize {
    roster
        .get_child("query", "jabber:iq:roster")
        .map(|q| q.children().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_would_grow_a_full_roster_is_refused() {
    let node = node_with(
        &["alice", "c1", "c2", "c3"],
        &["--set", "limits.roster_items=2"],
    );
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    for c in ["c1", "c2", "c3"] {
        alice
            .send(&format!(
                "<presence to='{c}@localhost' type='subscribe' id='s-{c}'/>"
            ))
            .await;
    }
    let refused = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(refused.attr("id"), Some("s-c3"), "{refused:?}");
    assert_eq!(condition(&refused).as_deref(), Some("not-allowed"));
    let roster = alice
        .iq("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert_eq!(roster_len(&roster), 2, "{roster:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_subscription_requests_are_bounded_and_kept_small() {
    let node = node_with(
        &["bob", "u1", "u2", "u3"],
        &["--set", "limits.pending_subscriptions=2"],
    );
    // u1's request carries a status and 100 KB of something else.
    let mut u1 = Client::login(&node, "u1", "pw", "r").await;
    let bulk = "x".repeat(100_000);
    u1.send(&format!(
        "<presence to='bob@localhost' type='subscribe'><status>it is me</status><x xmlns='urn:example:bulk'>{bulk}</x></presence>"
    ))
    .await;
    u1.sync("sent").await;
    let mut u2 = Client::login(&node, "u2", "pw", "r").await;
    u2.send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    u2.sync("sent").await;
    let mut u3 = Client::login(&node, "u3", "pw", "r").await;
    u3.send("<presence to='bob@localhost' type='subscribe' id='third'/>")
        .await;
    let refused = u3
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(refused.attr("id"), Some("third"));
    assert_eq!(condition(&refused).as_deref(), Some("resource-constraint"));
    assert_eq!(
        node.api_get("/api/v1/users/bob@localhost")["pending_subscription_requests"],
        2
    );
    // Bob hears the two kept requests at login; u1's keeps its status, not the bulk.
    let mut bob = Client::login(&node, "bob", "pw", "r").await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let p = bob
            .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
            .await;
        seen.push(p);
    }
    let from_u1 = seen
        .iter()
        .find(|p| p.attr("from") == Some("u1@localhost"))
        .expect("u1's request redelivered");
    let xml = from_u1.to_xml();
    assert!(xml.contains("it is me"), "{xml}");
    assert!(
        !xml.contains("urn:example:bulk"),
        "the bulk was stored: {} bytes",
        xml.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directed_presence_goes_to_a_bounded_number_of_jids() {
    let node = node_with(&["alice"], &["--set", "limits.directed_presences=2"]);
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    alice.send("<presence to='x1@elsewhere.example/r'/>").await;
    alice.send("<presence to='x2@elsewhere.example/r'/>").await;
    alice
        .send("<presence to='x3@elsewhere.example/r' id='third'/>")
        .await;
    let refused = alice
        .recv_until(|e| e.name() == "presence" && e.attr("id") == Some("third"))
        .await;
    assert_eq!(condition(&refused).as_deref(), Some("policy-violation"));
    // Unavailable to one makes room for another.
    alice
        .send("<presence to='x1@elsewhere.example/r' type='unavailable'/>")
        .await;
    alice
        .send("<presence to='x3@elsewhere.example/r' id='again'/>")
        .await;
    alice
        .send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    // Until the ping's answer: whatever comes back for "again" (the router may bounce a
    // JID of another domain) is not the bound's refusal.
    loop {
        let el = alice.recv().await;
        if el.attr("id") == Some("after") {
            break;
        }
        if el.attr("id") == Some("again") {
            assert_ne!(
                condition(&el).as_deref(),
                Some("policy-violation"),
                "{el:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_under_way_on_one_stream_are_bounded() {
    let node = node_with(&["alice"], &["--set", "c2s.max_pending_requests=2"]);
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    let mut batch = String::new();
    for i in 0..20 {
        batch.push_str(&format!(
            "<iq type='set' id='s{i}'><query xmlns='jabber:iq:roster'><item jid='c{i}@localhost'/></query></iq>"
        ));
    }
    alice.send(&batch).await;
    let (mut done, mut waited) = (0, 0);
    while done + waited < 20 {
        let reply = alice
            .recv_until(|e| e.name() == "iq" && e.attr("id").is_some_and(|i| i.starts_with('s')))
            .await;
        match reply.attr("type") {
            Some("result") => done += 1,
            _ => {
                assert_eq!(condition(&reply).as_deref(), Some("resource-constraint"));
                waited += 1;
            }
        }
    }
    assert!(done >= 2, "{done} done");
    assert!(
        waited >= 1,
        "every one of 20 pipelined writes was taken at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_messages_are_bounded_in_bytes_as_well_as_count() {
    let node = node_with(&["alice", "bob"], &["--set", "limits.offline_bytes=20000"]);
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    let body = "x".repeat(3000);
    for i in 0..10 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='o{i}'><body>{i} {body}</body></message>"
            ))
            .await;
    }
    alice.sync("sent").await;
    let user = |field: &str| {
        node.api_get("/api/v1/users/bob@localhost")[field]
            .as_u64()
            .unwrap()
    };
    let mut refused = 0;
    while (user("offline_messages") as usize) + refused < 10 {
        let bounce = alice
            .recv_until(|e| e.name() == "message" && e.attr("type") == Some("error"))
            .await;
        assert_eq!(condition(&bounce).as_deref(), Some("service-unavailable"));
        refused += 1;
    }
    let kept = user("offline_messages");
    assert!(refused >= 1 && kept >= 1, "kept {kept}, refused {refused}");
    assert!(user("offline_bytes") <= 20_000, "{}", user("offline_bytes"));
    // What was kept is delivered, and its bytes are given back.
    let mut bob = Client::login(&node, "bob", "pw", "r").await;
    for _ in 0..kept {
        bob.recv_until(|e| e.name() == "message").await;
    }
    common::cluster::eventually("the delivered bytes were given back", || {
        user("offline_bytes") == 0 && user("offline_messages") == 0
    })
    .await;
}
