//! Rate limits (issue 11, item 2): failed SASL attempts per IP and per
//! account, in-band registrations per IP, in-band password changes per
//! account, a session's stanza rate (reading pauses, nothing is dropped), and
//! password hashing on its own bounded pool: a flood of bad PLAIN logins
//! leaves a three-node cluster's leader and term alone while binds are served.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chorus::xmpp::ns;
use common::cluster::{start_cluster, Find};
use common::{assert_error, assert_result, connect_from, Client, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One PLAIN attempt over STARTTLS from `source`: "success" or the failure's condition.
async fn attempt(node: &TestNode, source: &str, user: &str, password: &str) -> String {
    let tcp = connect_from(source, node.c2s).await;
    let mut c = Client::starttls_over(node, tcp).await;
    let outcome = c.plain(user, password).await;
    if outcome.name() == "success" {
        return "success".into();
    }
    assert_eq!(outcome.name(), "failure", "{outcome:?}");
    let condition = outcome
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default();
    condition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_address() {
    let node = common::node_with(
        &["alice"],
        &[
            "--set",
            "rate.sasl_failures_per_ip_per_minute=3",
            "--set",
            "rate.sasl_failures_per_account_per_minute=0",
        ],
    );
    for user in ["alice", "nobody", "alice"] {
        assert_eq!(
            attempt(&node, "127.0.0.5", user, "wrong").await,
            "not-authorized"
        );
    }
    // The right password from that address now waits; from another it is fine.
    assert_eq!(
        attempt(&node, "127.0.0.5", "alice", "pw").await,
        "temporary-auth-failure"
    );
    assert_eq!(attempt(&node, "127.0.0.6", "alice", "pw").await, "success");
    assert_eq!(node.metric("chorus_rate_refused_sasl_per_ip_total"), 1);
    assert_eq!(node.metric("chorus_rate_refused_sasl_per_account_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_account_across_addresses() {
    let node = common::node_with(
        &["alice", "bob"],
        &["--set", "rate.sasl_failures_per_account_per_minute=2"],
    );
    assert_eq!(
        attempt(&node, "127.0.0.7", "alice", "x").await,
        "not-authorized"
    );
    assert_eq!(
        attempt(&node, "127.0.0.8", "Alice", "y").await,
        "not-authorized"
    );
    // Any address, any mechanism: alice's allowance is spent, bob's is not.
    assert_eq!(
        attempt(&node, "127.0.0.9", "alice", "pw").await,
        "temporary-auth-failure"
    );
    let mut scram = Client::starttls(&node).await;
    assert_eq!(scram.scram_sha256("alice", "pw").await.name(), "failure");
    assert_eq!(attempt(&node, "127.0.0.9", "bob", "pw").await, "success");
    assert_eq!(node.metric("chorus_rate_refused_sasl_per_account_total"), 2);
}

fn register_xml(id: &str, user: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'><username>{user}</username><password>secret</password></query></iq>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_registrations_are_limited_per_address() {
    let node = common::node_with(
        &[],
        &[
            "--set",
            "registration.open=true",
            "--set",
            "rate.registrations_per_ip_per_minute=2",
        ],
    );
    let mut c = Client::starttls_over(&node, connect_from("127.0.0.10", node.c2s).await).await;
    assert_result(&c.iq(&register_xml("r1", "new1")).await);
    assert_result(&c.iq(&register_xml("r2", "new2")).await);
    assert_error(
        &c.iq(&register_xml("r3", "new3")).await,
        "resource-constraint",
    );
    let mut other = Client::starttls_over(&node, connect_from("127.0.0.11", node.c2s).await).await;
    assert_result(&other.iq(&register_xml("r4", "new3")).await);
    assert_eq!(
        node.metric("chorus_rate_refused_registrations_per_ip_total"),
        1
    );
    // The refused account was not made; the others were.
    assert_eq!(
        attempt(&node, "127.0.0.12", "new2", "secret").await,
        "success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_password_changes_are_limited_per_account() {
    let node = common::node_with(
        &["alice"],
        &["--set", "rate.password_changes_per_account_per_minute=1"],
    );
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    let change = |id: &str, pw: &str| {
        format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'><username>alice</username><password>{pw}</password></query></iq>"
        )
    };
    assert_result(&alice.iq(&change("c1", "second")).await);
    assert_error(
        &alice.iq(&change("c2", "third")).await,
        "resource-constraint",
    );
    assert_eq!(node.metric("chorus_rate_refused_password_changes_total"), 1);
    assert_eq!(
        attempt(&node, "127.0.0.13", "alice", "second").await,
        "success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_its_stanza_rate_is_paused_not_dropped() {
    let node = common::node_with(
        &["alice"],
        &[
            "--set",
            "rate.session_stanzas_per_second=20",
            "--set",
            "rate.session_stanza_burst=20",
        ],
    );
    let mut alice = Client::login(&node, "alice", "pw", "r").await;
    let mut batch = String::new();
    for i in 0..100 {
        batch.push_str(&format!(
            "<iq type='get' id='p{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
    }
    alice.send(&batch).await;
    // Every ping is answered, in order.
    for i in 0..100 {
        let id = format!("p{i}");
        let reply = alice
            .recv_until(|e| e.name() == "iq" && e.attr("id").is_some_and(|x| x.starts_with('p')))
            .await;
        assert_eq!(reply.attr("id"), Some(id.as_str()));
    }
    assert!(node.metric("chorus_rate_session_pauses_total") >= 1);
}

/// Bad PLAIN logins for made-up names, over plain TCP, as fast as the node answers.
async fn bad_plain_logins(port: u16, stop: Arc<AtomicBool>) -> u64 {
    let mut tried = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
        if tcp.write_all(header.as_bytes()).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 8192];
        for _ in 0..3 {
            let user = format!("nobody{}", rand::random::<u32>());
            let auth = format!(
                "<auth xmlns='{}' mechanism='PLAIN'>{}</auth>",
                ns::SASL,
                B64.encode(format!("\0{user}\0wrong"))
            );
            if tcp.write_all(auth.as_bytes()).await.is_err() {
                break;
            }
            // Until the failure (or the close) comes back.
            let mut seen = String::new();
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                        if seen.contains("</failure>") {
                            break;
                        }
                    }
                }
            }
            tried += 1;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    tried
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plain_login_flood_keeps_the_cluster_leader_and_serves_binds() {
    // Expensive hashes, no rate limit in the way: only the hashing pool stands
    // between the flood and Raft's heartbeats.
    let nodes = start_cluster(
        &format!("flood-{}", rand::random::<u32>()),
        3,
        Find::Seeds,
        &[
            "--set",
            "auth.scram_iterations=100000",
            "--set",
            "c2s.allow_plaintext_auth=true",
            "--set",
            "rate.sasl_failures_per_ip_per_minute=0",
            "--set",
            "rate.sasl_failures_per_account_per_minute=0",
        ],
    );
    nodes[0].add_user("real@localhost", "pw");
    let term = |n: &TestNode| n.metric("chorus_raft_term");
    let leader = |nodes: &[TestNode]| -> Vec<u64> {
        nodes
            .iter()
            .map(|n| n.metric("chorus_raft_is_leader"))
            .collect()
    };
    // Binds before the flood: the cluster is settled.
    for node in &nodes {
        Client::login(node, "real", "pw", "before")
            .await
            .sync("ok")
            .await;
    }
    let terms_before: Vec<u64> = nodes.iter().map(term).collect();
    let leader_before = leader(&nodes);

    let stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for node in &nodes {
        for _ in 0..40 {
            flooders.push(tokio::spawn(bad_plain_logins(node.c2s, stop.clone())));
        }
    }
    // Binds on every node during the flood (each is a Raft write).
    for round in 0..5 {
        for node in &nodes {
            let mut c = Client::login(node, "real", "pw", &format!("during{round}")).await;
            c.sync("served").await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut tried = 0;
    for f in flooders {
        tried += f.await.unwrap();
    }

    let hashed: u64 = nodes
        .iter()
        .map(|n| n.metric("chorus_auth_hash_jobs_total"))
        .sum();
    assert!(
        tried > 0 && hashed > 0,
        "the flood did no work: {tried} attempts, {hashed} hashed"
    );
    let terms_after: Vec<u64> = nodes.iter().map(term).collect();
    assert_eq!(
        terms_after, terms_before,
        "an election happened during the flood"
    );
    assert_eq!(leader(&nodes), leader_before);
}
