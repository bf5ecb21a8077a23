//! Clients cannot pin a node (issue 11, item 1): a client that stops reading
//! is closed and its socket and queue freed, whether its queue overflows or
//! its writes stall; a connection that stops reading during negotiation is
//! freed after the auth timeout; connection limits refuse politely and are
//! counted; client sockets have TCP keep-alive. Real sockets, a real process.

mod common;

use common::cluster::eventually;

use std::time::Duration;

use common::{connect_from, connect_tiny_buffer, Client, TestNode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const UNSHAPED: &[&str] = &[
    "--set",
    "rate.session_bytes_per_second=0",
    "--set",
    "rate.session_stanzas_per_second=0",
];

/// `count` headline messages of `bytes` each from `sender` to `to`, written by
/// a task so that a sender held back by the node's reading does not stall the test.
fn flood(
    mut sender: Client,
    to: &str,
    count: usize,
    bytes: usize,
) -> tokio::task::JoinHandle<Client> {
    let body = "x".repeat(bytes);
    let to = to.to_string();
    tokio::spawn(async move {
        let mut batch = String::new();
        for i in 0..count {
            batch.push_str(&format!(
                "<message to='{to}' type='headline' id='f{i}'><body>{body}</body></message>"
            ));
            if batch.len() > 256 * 1024 {
                sender.send(&batch).await;
                batch.clear();
            }
        }
        sender.send(&batch).await;
        sender
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_freed_when_its_queue_overflows() {
    // The sender's own rate limit off: the flood must reach the victim at full speed.
    let node = common::node_with(&["victim", "sender"], UNSHAPED);
    let mut sender = Client::login(&node, "sender", "pw", "s").await;
    sender.sync("warm").await;
    let fds_before = node.fd_count();
    let rss_before = node.rss_kib();

    let tcp = connect_tiny_buffer("127.0.0.1", node.c2s).await;
    let mut victim = Client::login_over(&node, tcp, "victim", "pw", "v").await;
    victim.sync("bound").await;
    // From here on the victim reads nothing.
    let sender = flood(sender, "victim@localhost/v", 10_000, 8 * 1024)
        .await
        .unwrap();
    let mut sender = sender;
    sender.sync("after-flood").await;

    eventually("the victim's socket was never freed", || {
        node.fd_count() <= fds_before
    })
    .await;
    assert!(node.metric("chorus_c2s_slow_clients_disconnected_total") >= 1);
    // What was queued for it went with it: 10,000 x 8 KiB passed through, a
    // bounded queue (2 MiB) was held at most. Allocator slack is allowed for.
    let rss_after = node.rss_kib();
    assert!(
        rss_after < rss_before + 48 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The node still serves: the sender and a new login.
    sender.sync("still").await;
    Client::login(&node, "victim", "pw", "again")
        .await
        .sync("back")
        .await;
    drop(victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_writes_stall_is_closed_after_the_write_timeout() {
    // A queue large enough never to overflow: only the stalled write can end it.
    let node = common::node_with(
        &["victim", "sender"],
        &[
            "--set",
            "c2s.write_timeout_secs=2",
            "--set",
            "c2s.outbound_queue_bytes=268435456",
            "--set",
            "rate.session_bytes_per_second=0",
            "--set",
            "rate.session_stanzas_per_second=0",
        ],
    );
    let mut sender = Client::login(&node, "sender", "pw", "s").await;
    sender.sync("warm").await;
    let fds_before = node.fd_count();
    let tcp = connect_tiny_buffer("127.0.0.1", node.c2s).await;
    let mut victim = Client::login_over(&node, tcp, "victim", "pw", "v").await;
    victim.sync("bound").await;
    // About 24 MiB: more than the kernel's send and receive buffers hold.
    let mut sender = flood(sender, "victim@localhost/v", 3000, 8 * 1024)
        .await
        .unwrap();
    eventually("the stalled client was never closed", || {
        node.metric("chorus_c2s_write_timeouts_total") >= 1
    })
    .await;
    eventually("the stalled client's socket was never freed", || {
        node.fd_count() <= fds_before
    })
    .await;
    assert_eq!(node.metric("chorus_c2s_slow_clients_disconnected_total"), 0);
    sender.sync("still").await;
    drop(victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_reading_before_auth_is_freed_at_the_auth_timeout() {
    let node = common::node_with(
        &[],
        &[
            "--set",
            "c2s.allow_plaintext_auth=true",
            "--set",
            "c2s.auth_timeout_secs=2",
            "--set",
            "c2s.write_timeout_secs=2",
        ],
    );
    let fds_before = node.fd_count();
    let mut tcp = connect_tiny_buffer("127.0.0.1", node.c2s).await;
    tcp.write_all(
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
          xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
    )
    .await
    .unwrap();
    // Requests whose answers pile up unread until the node's writes stall.
    let (_read, mut write) = tcp.into_split();
    let spam = tokio::spawn(async move {
        let iq = b"<iq type='get' id='r'><query xmlns='jabber:iq:register'/></iq>".repeat(1000);
        while write.write_all(&iq).await.is_ok() {}
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(node.fd_count() > fds_before);
    eventually(
        "the stalled unauthenticated connection was never freed",
        || node.fd_count() <= fds_before,
    )
    .await;
    assert!(node.metric("chorus_c2s_write_timeouts_total") >= 1);
    assert_eq!(node.metric("chorus_c2s_connections_open"), 0);
    spam.abort();
}

async fn refusal(c: TcpStream, node: &TestNode) -> Option<String> {
    let mut c = Client::from_tcp(c, &node.domain);
    c.expect_stream_error().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_refuse_with_a_stream_error_and_are_counted() {
    let node = common::node_with(
        &["alice", "bob"],
        &[
            "--set",
            "c2s.max_connections=4",
            "--set",
            "c2s.max_connections_per_ip=3",
            "--set",
            "c2s.max_unauthenticated=2",
        ],
    );
    // Two authenticated sessions from 127.0.0.1.
    let mut alice = Client::login(&node, "alice", "pw", "a").await;
    let bob = Client::login(&node, "bob", "pw", "b").await;
    // A third connection from the same address; the fourth is one too many from it.
    let u1 = connect_from("127.0.0.1", node.c2s).await;
    let mut u1 = Client::from_tcp(u1, &node.domain);
    u1.open().await;
    let refused = connect_from("127.0.0.1", node.c2s).await;
    assert_eq!(
        refusal(refused, &node).await.as_deref(),
        Some("policy-violation")
    );
    // Another address takes the fourth place; a fifth connection finds the node full.
    let u2 = connect_from("127.0.0.2", node.c2s).await;
    let mut u2 = Client::from_tcp(u2, &node.domain);
    u2.open().await;
    let refused = connect_from("127.0.0.3", node.c2s).await;
    assert_eq!(
        refusal(refused, &node).await.as_deref(),
        Some("resource-constraint")
    );
    // With room again, two unauthenticated connections are all that may wait.
    drop(bob);
    eventually("bob's connection was never closed", || {
        node.metric("chorus_c2s_connections_open") == 3
    })
    .await;
    let refused = connect_from("127.0.0.4", node.c2s).await;
    assert_eq!(
        refusal(refused, &node).await.as_deref(),
        Some("resource-constraint")
    );
    assert_eq!(node.metric("chorus_c2s_refused_per_ip_total"), 1);
    assert_eq!(node.metric("chorus_c2s_refused_max_connections_total"), 1);
    assert_eq!(node.metric("chorus_c2s_refused_unauthenticated_total"), 1);
    assert_eq!(node.metric("chorus_c2s_connections_unauthenticated"), 2);
    // The sessions already in are served throughout.
    alice.sync("served").await;
    drop((u1, u2));
    eventually("the waiting connections were never closed", || {
        node.metric("chorus_c2s_connections_open") == 1
    })
    .await;
    Client::login(&node, "bob", "pw", "b2")
        .await
        .sync("in")
        .await;
}

/// The timer of the node's end of an idle connection in /proc/net/tcp: 02 is
/// the keep-alive timer, 00 none (01, retransmission, means data is still in
/// flight: read again).
async fn server_side_timer(server_port: u16, client_port: u16) -> Option<String> {
    let read = || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        table.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
            (port(cols[1]) == Some(server_port) && port(cols[2]) == Some(client_port))
                .then(|| cols[5].split(':').next().unwrap_or("").to_string())
        })
    };
    for _ in 0..100 {
        match read() {
            Some(t) if t == "01" => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return other,
        }
    }
    read()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sockets_have_tcp_keepalive() {
    let node = common::node_with(&["alice"], &[]);
    let tcp = TcpStream::connect(("127.0.0.1", node.c2s)).await.unwrap();
    let local = tcp.local_addr().unwrap().port();
    let mut alice = Client::login_over(&node, tcp, "alice", "pw", "a").await;
    alice.sync("idle").await;
    assert_eq!(
        server_side_timer(node.c2s, local).await.as_deref(),
        Some("02")
    );

    let off = common::node_with(&["alice"], &["--set", "c2s.tcp_keepalive_secs=0"]);
    let tcp = TcpStream::connect(("127.0.0.1", off.c2s)).await.unwrap();
    let local = tcp.local_addr().unwrap().port();
    let mut alice = Client::login_over(&off, tcp, "alice", "pw", "a").await;
    alice.sync("idle").await;
    assert_eq!(
        server_side_timer(off.c2s, local).await.as_deref(),
        Some("00")
    );
}
