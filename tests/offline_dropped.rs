//! Offline delivery is not lost by a dropped connection (issue 11, item 7): a
//! stored message is removed only once it was written to the recipient's
//! socket, so a client that logs in and drops before reading loses nothing
//! the node could not write.

mod common;

use std::time::Duration;

use common::{Client, TestNode};

fn offline_count(node: &TestNode, user: &str) -> u64 {
    node.api_get(&format!("/api/v1/users/{user}"))["offline_messages"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_not_yet_written_stay_stored_when_the_connection_drops() {
    const N: usize = 600;
    let node = common::node_with(
        &["alice", "bob"],
        &["--set", "rate.session_bytes_per_second=0"],
    );
    let mut alice = Client::login(&node, "alice", "pw", "a").await;
    let body = "x".repeat(4000);
    for i in 0..N {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='m{i}'><body>{i} {body}</body></message>"
            ))
            .await;
    }
    alice.sync("sent").await;
    common::cluster::eventually("the messages were stored", || {
        offline_count(&node, "bob@localhost") == N as u64
    })
    .await;

    // Bob logs in on a socket that takes almost nothing, sends his initial
    // presence (which starts delivery), and is gone before reading any of it.
    let tcp = common::connect_tiny_buffer("127.0.0.1", node.c2s).await;
    let bob = Client::login_over(&node, tcp, "bob", "pw", "flaky").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(bob);
    // The stream is gone (its route removed) and nothing that was not written is.
    common::cluster::eventually("bob's dropped stream ended", || {
        node.api_get("/api/v1/users/bob@localhost")["resources"]
            .as_array()
            .is_some_and(|r| r.is_empty())
    })
    .await;
    let left = offline_count(&node, "bob@localhost");
    assert!(
        left > 0,
        "every stored message was removed, though the dropped stream could not have been written most of them"
    );

    // The next login gets what is left, in order, from where it was.
    let mut bob = Client::login(&node, "bob", "pw", "steady").await;
    let mut seen = Vec::new();
    while seen.len() < left as usize {
        let m = bob.recv_until(|e| e.name() == "message").await;
        let text = m
            .children()
            .find(|c| c.name() == "body")
            .map(|b| b.text())
            .unwrap();
        seen.push(text.split(' ').next().unwrap().parse::<usize>().unwrap());
    }
    let first = N - left as usize;
    assert_eq!(seen, (first..N).collect::<Vec<_>>());
    common::cluster::eventually("the delivered messages were removed", || {
        offline_count(&node, "bob@localhost") == 0
    })
    .await;
}
