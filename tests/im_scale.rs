//! Issue 4's counts: a roster of 1,000 contacts, 10,000 offline messages for
//! one account (in order, none lost, none twice), and one presence broadcast
//! reaching 1,000 online contacts. The assertions are on counts, never time.

mod common;

use chorus::xmpp::ns;
use common::{Client, TestNode};

const ROSTER: &str = "jabber:iq:roster";

async fn wait_for(node: &TestNode, user: &str, field: &str, want: u64) {
    for _ in 0..600 {
        if node.api_get(&format!("/api/v1/users/{user}"))[field].as_u64() == Some(want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{user}'s {field} never reached {want}: {}",
        node.api_get(&format!("/api/v1/users/{user}"))
    );
}

#[tokio::test]
async fn roster_with_1000_contacts() {
    // All 1,000 sets are pipelined at once: let them all be under way
    // (tests/bounded_state.rs checks the bound itself).
    let node = TestNode::start_with(&["--set", "c2s.max_pending_requests=1000"]);
    node.add_user("alice@localhost", "pw");
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    // Pipelined: 1,000 roster sets, then their 1,000 results.
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!(
            "<iq type='set' id='s{i}'><query xmlns='jabber:iq:roster'><item jid='contact{i}@localhost' name='Contact {i}'><group>G{}</group></item></query></iq>",
            i % 10
        ));
    }
    alice.send(&batch).await;
    let mut results = 0;
    while results < 1000 {
        let e = alice.recv().await;
        if e.name() == "iq" && e.attr("id").is_some_and(|id| id.starts_with('s')) {
            assert_eq!(e.attr("type"), Some("result"), "{e:?}");
            results += 1;
        }
    }
    alice
        .send("<iq type='get' id='all'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let reply = alice.recv_until(|e| e.attr("id") == Some("all")).await;
    let items: Vec<_> = reply
        .get_child("query", ROSTER)
        .unwrap()
        .children()
        .collect();
    assert_eq!(items.len(), 1000);
    let mut jids: Vec<&str> = items.iter().filter_map(|i| i.attr("jid")).collect();
    jids.sort();
    jids.dedup();
    assert_eq!(jids.len(), 1000, "every contact once");
    assert_eq!(
        node.api_get("/api/v1/users/alice@localhost")["roster_items"].as_u64(),
        Some(1000)
    );
}

#[tokio::test]
async fn ten_thousand_offline_messages_in_order_once() {
    const N: usize = 10_000;
    // One sender sends all of them: its stanza rate limit (a hostile-client
    // defence, tests/rate_limits.rs) would only make the test slow.
    let node = TestNode::start_with(&["--set", "rate.session_stanzas_per_second=0"]);
    node.add_user("alice@localhost", "pw");
    node.add_user("bob@localhost", "pw");
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    for chunk in 0..(N / 500) {
        let mut batch = String::new();
        for i in chunk * 500..(chunk + 1) * 500 {
            batch.push_str(&format!(
                "<message to='bob@localhost' type='chat'><body>{i}</body></message>"
            ));
        }
        alice.send(&batch).await;
    }
    alice.sync("sent").await;
    wait_for(&node, "bob@localhost", "offline_messages", N as u64).await;

    let mut bob = Client::login(&node, "bob", "pw", "r").await;
    for i in 0..N {
        let m = bob.recv_until(|e| e.name() == "message").await;
        assert_eq!(
            m.get_child("body", ns::CLIENT).unwrap().text(),
            i.to_string(),
            "out of order or lost"
        );
    }
    wait_for(&node, "bob@localhost", "offline_messages", 0).await;
    // None twice: the next thing bob gets is the answer to his ping.
    bob.send("<iq type='get' id='after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let next = bob
        .recv_until(|e| e.name() == "message" || e.attr("id") == Some("after"))
        .await;
    assert_eq!(
        next.attr("id"),
        Some("after"),
        "a message came twice: {next:?}"
    );
}

#[tokio::test]
async fn presence_broadcast_reaches_1000_online_contacts() {
    const N: usize = 1000;
    // 1,001 accounts and logins: the RFC 7677 minimum keeps their PBKDF2 runs
    // (server and client side) from being most of the test's time. Alice's 1,000
    // pre-approvals are pipelined at once: let them all be under way.
    let node = TestNode::start_with(&[
        "--set",
        "auth.scram_iterations=4096",
        "--set",
        "c2s.max_pending_requests=1000",
    ]);
    node.add_user("alice@localhost", "pw");
    for i in 0..N {
        node.add_user(&format!("c{i}@localhost"), "pw");
    }
    // Alice pre-approves every contact (RFC 6121 3.4) ...
    let mut alice = Client::login(&node, "alice", "pw", "setup").await;
    let mut batch = String::new();
    for i in 0..N {
        batch.push_str(&format!(
            "<presence to='c{i}@localhost' type='subscribed'/>"
        ));
    }
    alice.send(&batch).await;
    alice.sync("approved").await;
    wait_for(&node, "alice@localhost", "roster_items", N as u64).await;
    drop(alice);

    // ... then each contact logs in and subscribes, and is approved at once.
    let mut contacts = Vec::new();
    for chunk in 0..(N / 50) {
        let logins: Vec<_> = (chunk * 50..(chunk + 1) * 50)
            .map(|i| {
                let node = &node;
                async move {
                    let mut c = Client::login(node, &format!("c{i}"), "pw", "r").await;
                    c.send("<presence to='alice@localhost' type='subscribe'/>")
                        .await;
                    c
                }
            })
            .collect();
        contacts.extend(futures::future::join_all(logins).await);
    }
    for c in contacts.iter_mut() {
        c.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"))
            .await;
    }

    // One initial presence from alice reaches every contact.
    let mut alice = Client::login(&node, "alice", "pw", "phone").await;
    let _ = &mut alice;
    let mut reached = 0;
    for c in contacts.iter_mut() {
        let p = c
            .recv_until(|e| {
                e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone")
            })
            .await;
        assert_eq!(p.attr("type"), None);
        reached += 1;
    }
    assert_eq!(reached, N);
}
