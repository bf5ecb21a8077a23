//! Refused input (issue 3, part 3): each gets the stream error RFC 6120 names,
//! the node keeps serving others, and its memory stays flat while it refuses a
//! 100 MB stanza, 10,000-deep nesting and a billion-laughs DOCTYPE.

mod common;

use common::{Client, TestNode};

const HEADER: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// Send `payload` on a fresh plain connection and return the stream error.
async fn refused(node: &TestNode, payload: &[u8]) -> Option<String> {
    let mut c = Client::tcp(node.c2s, "localhost").await;
    c.try_send(payload).await;
    c.expect_stream_error().await
}

fn billion_laughs() -> String {
    let mut doc = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        doc.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    doc.push_str("]>");
    doc.push_str(HEADER);
    doc.push_str("<message><body>&lol9;</body></message>");
    doc
}

#[tokio::test]
async fn each_refused_input_gets_its_stream_error_and_the_node_survives() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut bystander = Client::login(&node, "alice", "a-pass", "watching").await;
    let rss_before = node.rss_kib();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("billion laughs", billion_laughs().into_bytes(), "restricted-xml"),
        ("comment", format!("{HEADER}<!-- hi -->").into_bytes(), "restricted-xml"),
        ("processing instruction", format!("{HEADER}<?evil x?>").into_bytes(), "restricted-xml"),
        ("unknown entity", format!("{HEADER}<message><body>&xxe;</body></message>").into_bytes(), "restricted-xml"),
        ("mismatched tags", format!("{HEADER}<message><body></message>").into_bytes(), "not-well-formed"),
        (
            "wrong stream namespace",
            b"<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>".to_vec(),
            "invalid-namespace",
        ),
        ("wrong default namespace", HEADER.replace("jabber:client", "jabber:server").into_bytes(), "invalid-namespace"),
        ("unknown host", HEADER.replace("to='localhost'", "to='elsewhere.example'").into_bytes(), "host-unknown"),
        (
            "too many attributes",
            format!("{HEADER}<message {}/>", (0..200).map(|i| format!("a{i}='x'")).collect::<Vec<_>>().join(" "))
                .into_bytes(),
            "policy-violation",
        ),
        ("10,000-deep nesting", format!("{HEADER}<message>{}", "<a>".repeat(10_000)).into_bytes(), "policy-violation"),
        ("stanza before auth", format!("{HEADER}<message to='alice@localhost'/>").into_bytes(), "policy-violation"),
    ];
    for (name, payload, expected) in cases {
        assert_eq!(
            refused(&node, &payload).await.as_deref(),
            Some(expected),
            "case: {name}"
        );
    }

    // 100 MB in one stanza, streamed: refused after about max_stanza_bytes.
    let mut c = Client::tcp(node.c2s, "localhost").await;
    c.send(HEADER).await;
    c.send("<message><body>").await;
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..100 {
        if !c.try_send(&chunk).await {
            break;
        }
        sent += chunk.len();
    }
    assert!(sent < 100 << 20, "the server kept reading a 100 MB stanza");
    assert_eq!(
        c.expect_stream_error().await.as_deref(),
        Some("policy-violation")
    );

    // One huge attribute value is refused the same way.
    let mut c = Client::tcp(node.c2s, "localhost").await;
    c.send(HEADER).await;
    c.send("<message to='").await;
    for _ in 0..100 {
        if !c.try_send(&chunk).await {
            break;
        }
    }
    assert_eq!(
        c.expect_stream_error().await.as_deref(),
        Some("policy-violation")
    );

    // Still serving: the bystander's session works, and new logins too.
    bystander
        .send("<iq type='get' id='still' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(
        bystander
            .recv_until(|e| e.attr("id") == Some("still"))
            .await
            .attr("type"),
        Some("result")
    );
    Client::login(&node, "alice", "a-pass", "again").await;

    let rss_after = node.rss_kib();
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 40,
        "memory grew by {growth_mib} MiB ({rss_before} KiB -> {rss_after} KiB)"
    );
}

#[tokio::test]
async fn unsupported_stanza_after_login_ends_the_stream() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut c = Client::login(&node, "alice", "a-pass", "r").await;
    c.send("<foo xmlns='jabber:client'/>").await;
    assert_eq!(
        c.expect_stream_error().await.as_deref(),
        Some("unsupported-stanza-type")
    );
}

#[tokio::test]
async fn forged_from_ends_the_stream() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut c = Client::login(&node, "alice", "a-pass", "r").await;
    c.send("<message from='bob@localhost/x' to='alice@localhost'><body>x</body></message>")
        .await;
    assert_eq!(
        c.expect_stream_error().await.as_deref(),
        Some("invalid-from")
    );
}

#[tokio::test]
async fn plaintext_injected_before_tls_is_refused() {
    let node = TestNode::start();
    let mut c = Client::tcp(node.c2s, "localhost").await;
    c.open().await;
    // The starttls request and a stanza in one write: the stanza must not
    // survive into the TLS session.
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message to='alice@localhost'/>")
        .await;
    let proceed = c.recv().await;
    assert_eq!(proceed.name(), "proceed");
    assert_eq!(
        c.expect_stream_error().await.as_deref(),
        Some("policy-violation")
    );
}

#[tokio::test]
async fn unauthenticated_peers_get_a_smaller_stanza_limit() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    // 20 KiB is over the 16 KiB allowed before authentication...
    let big = "x".repeat(20 * 1024);
    let mut c = Client::starttls(&node).await;
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{big}</auth>"
    ))
    .await;
    assert_eq!(
        c.expect_stream_error().await.as_deref(),
        Some("policy-violation")
    );
    // ...and well under the 256 KiB allowed after it.
    let mut alice = Client::login(&node, "alice", "a-pass", "r").await;
    let body = "y".repeat(100 * 1024);
    alice
        .send(&format!(
            "<message to='alice@localhost/r' id='big'><body>{body}</body></message>"
        ))
        .await;
    let got = alice.recv_until(|e| e.attr("id") == Some("big")).await;
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text().len(),
        body.len()
    );
}
