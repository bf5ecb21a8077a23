//! One real `chorus` process, driven by the project's own client: login over
//! STARTTLS and direct TLS, chat, bind conflict, server iqs, restart after
//! SIGKILL, timeouts.

mod common;

use std::time::Duration;

use chorus::xmpp::ns;
use common::{Client, TestNode};

#[tokio::test]
async fn scram_sha256_login_over_starttls() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "wonderland");
    let mut c = Client::starttls(&node).await;
    let mechs = c.mechanisms();
    assert!(mechs.contains(&"SCRAM-SHA-256".to_string()), "{mechs:?}");
    assert!(mechs.contains(&"SCRAM-SHA-1".to_string()), "{mechs:?}");
    assert!(
        mechs.contains(&"PLAIN".to_string()),
        "PLAIN is offered under TLS: {mechs:?}"
    );
    let outcome = c.scram_sha256("alice", "wonderland").await;
    assert_eq!(outcome.name(), "success", "{outcome:?}");
    let bound = c.bind(Some("laptop")).await;
    assert_eq!(bound.attr("type"), Some("result"));
    assert_eq!(c.jid.as_deref(), Some("alice@localhost/laptop"));
}

#[tokio::test]
async fn scram_sha256_login_over_direct_tls() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "wonderland");
    let mut c = Client::direct_tls(&node).await;
    assert!(c
        .features
        .as_ref()
        .unwrap()
        .get_child("starttls", ns::TLS)
        .is_none());
    let outcome = c.scram_sha256("alice", "wonderland").await;
    assert_eq!(outcome.name(), "success", "{outcome:?}");
    // No resource asked for: the server makes one.
    c.bind(None).await;
    let jid = c.jid.clone().unwrap();
    assert!(
        jid.starts_with("alice@localhost/") && jid.len() > "alice@localhost/".len(),
        "{jid}"
    );
}

#[tokio::test]
async fn wrong_password_gets_not_authorized() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "wonderland");
    let mut c = Client::starttls(&node).await;
    let outcome = c.scram_sha256("alice", "looking-glass").await;
    assert_eq!(outcome.name(), "failure");
    assert!(
        outcome.get_child("not-authorized", ns::SASL).is_some(),
        "{outcome:?}"
    );
    // Unknown users fail the same way, at the same step.
    let outcome = c.scram_sha256("nobody", "x").await;
    assert!(
        outcome.get_child("not-authorized", ns::SASL).is_some(),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn plaintext_auth_is_refused_before_tls() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "wonderland");
    let mut c = Client::tcp(node.c2s, "localhost").await;
    c.open().await;
    let starttls = c
        .features
        .as_ref()
        .unwrap()
        .get_child("starttls", ns::TLS)
        .unwrap();
    assert!(starttls.get_child("required", ns::TLS).is_some());
    assert!(c.mechanisms().is_empty(), "no mechanisms before TLS");
    c.send(&format!(
        "<auth xmlns='{}' mechanism='PLAIN'>AGFsaWNlAHdvbmRlcmxhbmQ=</auth>",
        ns::SASL
    ))
    .await;
    let failure = c.recv().await;
    assert!(
        failure.get_child("encryption-required", ns::SASL).is_some(),
        "{failure:?}"
    );
}

#[tokio::test]
async fn chat_between_two_accounts() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    node.add_user("bob@localhost", "b-pass");
    let mut alice = Client::login(&node, "alice", "a-pass", "home").await;
    let mut bob = Client::login(&node, "bob", "b-pass", "work").await;
    // To a full JID.
    alice
        .send(
            "<message to='bob@localhost/work' type='chat' id='m1'><body>hello bob</body></message>",
        )
        .await;
    let got = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("from"), Some("alice@localhost/home"));
    assert_eq!(
        got.get_child("body", ns::CLIENT).unwrap().text(),
        "hello bob"
    );
    // To a bare JID: the available resource gets it.
    bob.send("<message to='alice@localhost' type='chat' id='m2'><body>hi alice</body></message>")
        .await;
    let got = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("from"), Some("bob@localhost/work"));
    assert_eq!(
        got.get_child("body", ns::CLIENT).unwrap().text(),
        "hi alice"
    );
    // A client cannot forge its sender.
    alice.send("<message to='bob@localhost' from='alice@localhost/home' type='chat'><body>ok</body></message>").await;
    let got = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("from"), Some("alice@localhost/home"));
}

#[tokio::test]
async fn message_to_unknown_or_offline_user_bounces() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    node.add_user("carol@localhost", "c-pass");
    let mut alice = Client::login(&node, "alice", "a-pass", "home").await;
    alice
        .send("<message to='nobody@localhost' type='chat' id='x1'><body>?</body></message>")
        .await;
    let err = alice.recv_until(|e| e.attr("id") == Some("x1")).await;
    assert_eq!(err.attr("type"), Some("error"));
    assert!(err
        .get_child("error", ns::CLIENT)
        .unwrap()
        .get_child("service-unavailable", ns::STANZAS)
        .is_some());
    alice
        .send(
            "<iq to='carol@localhost/phone' type='get' id='x2'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
    let err = alice.recv_until(|e| e.attr("id") == Some("x2")).await;
    assert_eq!(err.attr("type"), Some("error"), "{err:?}");
    alice
        .send(
            "<message to='someone@elsewhere.example' type='chat' id='x3'><body>?</body></message>",
        )
        .await;
    let err = alice.recv_until(|e| e.attr("id") == Some("x3")).await;
    assert!(err
        .get_child("error", ns::CLIENT)
        .unwrap()
        .get_child("remote-server-not-found", ns::STANZAS)
        .is_some());
}

#[tokio::test]
async fn bind_conflict_replaces_older_stream() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut first = Client::login(&node, "alice", "a-pass", "phone").await;
    let mut second = Client::login(&node, "alice", "a-pass", "phone").await;
    assert_eq!(
        first.expect_stream_error().await.as_deref(),
        Some("conflict")
    );
    // The newer stream owns the JID and still works.
    second
        .send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = second.recv_until(|e| e.attr("id") == Some("p1")).await;
    assert_eq!(pong.attr("type"), Some("result"));
}

#[tokio::test]
async fn server_answers_ping_disco_version_and_refuses_the_rest() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut c = Client::login(&node, "alice", "a-pass", "r").await;
    c.send("<iq type='get' id='1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(
        c.recv_until(|e| e.attr("id") == Some("1"))
            .await
            .attr("type"),
        Some("result")
    );
    c.send("<iq type='get' id='2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    let info = c.recv_until(|e| e.attr("id") == Some("2")).await;
    let query = info.get_child("query", ns::DISCO_INFO).unwrap();
    let features: Vec<_> = query.children().filter_map(|f| f.attr("var")).collect();
    assert!(
        features.contains(&ns::PING) && features.contains(&ns::VERSION),
        "{features:?}"
    );
    assert_eq!(
        query
            .get_child("identity", ns::DISCO_INFO)
            .unwrap()
            .attr("category"),
        Some("server")
    );
    c.send("<iq type='get' id='3' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let version = c.recv_until(|e| e.attr("id") == Some("3")).await;
    assert_eq!(
        version
            .get_child("query", ns::VERSION)
            .unwrap()
            .get_child("name", ns::VERSION)
            .unwrap()
            .text(),
        "Chorus"
    );
    c.send("<iq type='get' id='4' to='localhost'><query xmlns='urn:example:unknown'/></iq>")
        .await;
    let err = c.recv_until(|e| e.attr("id") == Some("4")).await;
    assert_eq!(err.attr("type"), Some("error"));
    assert!(err
        .get_child("error", ns::CLIENT)
        .unwrap()
        .get_child("service-unavailable", ns::STANZAS)
        .is_some());
    c.send("<iq type='set' id='5'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    assert_eq!(
        c.recv_until(|e| e.attr("id") == Some("5"))
            .await
            .attr("type"),
        Some("result")
    );
    c.send("<iq type='get' id='6' to='localhost'/>").await;
    let err = c.recv_until(|e| e.attr("id") == Some("6")).await;
    assert!(
        err.get_child("error", ns::CLIENT)
            .unwrap()
            .get_child("bad-request", ns::STANZAS)
            .is_some(),
        "{err:?}"
    );
}

#[tokio::test]
async fn restart_after_sigkill_keeps_accounts_and_token() {
    let mut node = TestNode::start();
    for i in 0..20 {
        node.add_user(&format!("user{i}@localhost"), &format!("pw{i}"));
    }
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap();
    let node_id = std::fs::read_to_string(node.data_dir().join("node_id")).unwrap();
    node.kill9();
    node.spawn();
    assert_eq!(
        std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap(),
        token
    );
    assert_eq!(
        std::fs::read_to_string(node.data_dir().join("node_id")).unwrap(),
        node_id
    );
    let out = node.cli(&["user", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    for i in 0..20 {
        assert!(
            listed.lines().any(|l| l == format!("user{i}@localhost")),
            "user{i} lost:\n{listed}"
        );
    }
    let mut c = Client::login(&node, "user7", "pw7", "r").await;
    c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    assert_eq!(
        c.recv_until(|e| e.attr("id") == Some("p"))
            .await
            .attr("type"),
        Some("result")
    );
}

#[tokio::test]
async fn restart_restores_from_snapshot_and_log() {
    // A tiny snapshot threshold: the accounts live partly in a snapshot, partly in the log.
    let mut node = TestNode::start_with(&[
        "--set",
        "cluster.snapshot_threshold=10",
        "--set",
        "cluster.logs_to_keep=0",
    ]);
    for i in 0..25 {
        node.add_user(&format!("user{i}@localhost"), "pw");
    }
    let status = status(&node);
    let raft = &status["raft"];
    assert!(
        raft["snapshot_index"].as_u64().unwrap_or(0) > 0,
        "no snapshot was built: {raft}"
    );
    assert!(
        raft["first_log_index"].as_u64().unwrap_or(0) > 0,
        "the log was not purged: {raft}"
    );
    node.kill9();
    node.spawn();
    let listed = String::from_utf8(node.cli(&["user", "list"]).stdout).unwrap();
    assert_eq!(listed.lines().count(), 25, "{listed}");
    Client::login(&node, "user24", "pw", "r").await;
}

fn status(node: &TestNode) -> serde_json::Value {
    node.api_get("/api/v1/status")
}

#[tokio::test]
async fn silent_connections_time_out() {
    let node = TestNode::start_with(&[
        "--set",
        "c2s.auth_timeout_secs=2",
        "--set",
        "c2s.ping_interval_secs=1",
        "--set",
        "c2s.idle_timeout_secs=3",
    ]);
    node.add_user("alice@localhost", "a-pass");
    // Never authenticates.
    let mut lazy = Client::tcp(node.c2s, "localhost").await;
    lazy.open().await;
    assert_eq!(
        lazy.expect_stream_error().await.as_deref(),
        Some("connection-timeout")
    );
    // Bound, then silent: the server pings, then gives up.
    let mut quiet = Client::login(&node, "alice", "a-pass", "r").await;
    let ping = quiet.recv_until(|e| e.name() == "iq").await;
    assert!(ping.get_child("ping", ns::PING).is_some(), "{ping:?}");
    assert_eq!(
        quiet.expect_stream_error().await.as_deref(),
        Some("connection-timeout")
    );
}

#[tokio::test]
async fn clean_close_is_answered() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut c = Client::login(&node, "alice", "a-pass", "r").await;
    c.send("</stream:stream>").await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match c.next().await {
                Ok(chorus::xmpp::stream::StreamEvent::Closed) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap();
    assert!(end, "the server must close its stream too");
}

#[tokio::test]
async fn metrics_count_logins_sessions_and_raft_progress() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let _c = Client::login(&node, "alice", "a-pass", "r").await;
    let mut bad = Client::starttls(&node).await;
    bad.scram_sha256("alice", "wrong").await;
    let text = ureq::get(&format!("http://127.0.0.1:{}/metrics", node.http))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert_eq!(value("chorus_c2s_auth_successes_total"), 1.0);
    assert_eq!(value("chorus_c2s_auth_failures_total"), 1.0);
    assert_eq!(value("chorus_c2s_sessions"), 1.0);
    assert_eq!(value("chorus_raft_is_leader"), 1.0);
    assert!(
        value("chorus_raft_commands_proposed_total") >= value("chorus_raft_entries_proposed_total")
    );
    assert!(value("chorus_raft_last_applied") > 0.0);
}

#[tokio::test]
async fn concurrent_binds_share_raft_entries() {
    const CLIENTS: usize = 200;
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let before = status(&node)["raft"].clone();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let node = std::sync::Arc::new(node);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (node, barrier) = (node.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut c = Client::starttls(&node).await;
                assert_eq!(c.scram_sha256("alice", "a-pass").await.name(), "success");
                c.restart().await;
                // Every client asks to bind at the same moment.
                barrier.wait().await;
                let reply = c.bind_resource(Some(&format!("r{i}"))).await;
                assert_eq!(reply.attr("type"), Some("result"));
                c
            })
        })
        .collect();
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let after = status(&node)["raft"].clone();
    let entries =
        after["entries_proposed"].as_u64().unwrap() - before["entries_proposed"].as_u64().unwrap();
    let commands = after["commands_proposed"].as_u64().unwrap()
        - before["commands_proposed"].as_u64().unwrap();
    eprintln!("{CLIENTS} concurrent binds: {commands} commands in {entries} log entries");
    assert!(
        commands >= CLIENTS as u64,
        "{commands} commands for {CLIENTS} binds"
    );
    assert!(
        entries * 2 < commands,
        "{CLIENTS} binds took {entries} log entries for {commands} commands"
    );
    assert_eq!(
        node.api_get("/api/v1/status")["router"]["sessions"].as_u64(),
        Some(CLIENTS as u64)
    );
}

#[tokio::test]
async fn plaintext_auth_works_only_when_allowed() {
    let node = TestNode::start_with(&["--allow-plaintext-auth"]);
    node.add_user("alice@localhost", "a-pass");
    let mut c = Client::tcp(node.c2s, "localhost").await;
    c.open().await;
    let starttls = c
        .features
        .as_ref()
        .unwrap()
        .get_child("starttls", ns::TLS)
        .unwrap();
    assert!(
        starttls.get_child("required", ns::TLS).is_none(),
        "TLS is optional when plaintext auth is allowed"
    );
    assert!(
        c.mechanisms().contains(&"PLAIN".to_string()),
        "{:?}",
        c.mechanisms()
    );
    let plain = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"\0alice\0a-pass",
    );
    c.send(&format!(
        "<auth xmlns='{}' mechanism='PLAIN'>{plain}</auth>",
        ns::SASL
    ))
    .await;
    assert_eq!(c.recv().await.name(), "success");
    let bound = c.bind(Some("bench")).await;
    assert_eq!(bound.attr("type"), Some("result"));
}

#[tokio::test]
async fn configured_certificate_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["chat.example".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let mut node = TestNode::start_with(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    node.kill9();
    node.domain = "chat.example".into();
    node.spawn();
    node.add_user("alice@chat.example", "a-pass");
    // The client trusts only the configured certificate, for the configured name.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", node.c2s_tls))
        .await
        .unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("chat.example").unwrap();
    let tls = common::tls_connector(&cert).connect(name, tcp).await;
    assert!(
        tls.is_ok(),
        "the configured certificate was not served: {:?}",
        tls.err()
    );
    assert!(
        !node.data_dir().join("tls").exists(),
        "no self-signed certificate is made when one is configured"
    );
}
