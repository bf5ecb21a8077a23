//! Account changes and the admin API under faults (issue 11, item 8): a
//! password change ends the account's other streams on every node (the one
//! that changed it goes on; configurable); an account write the cluster cannot
//! commit in time is a 504 "may still commit"; the admin HTTP listener closes
//! a connection that does not send its headers in time.

mod common;

use std::time::Duration;

use common::cluster::{api, start_cluster, Find};
use common::{unsafe_kill, Client, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REGISTER: &str = "jabber:iq:register";

fn change_password(id: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='{REGISTER}'><username>alice</username><password>{password}</password></query></iq>"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_accounts_other_streams_on_every_node() {
    let nodes = start_cluster(
        &format!("passwd-{}", rand::random::<u32>()),
        2,
        Find::Seeds,
        &[],
    );
    nodes[0].add_user("alice@localhost", "old");
    common::cluster::eventually_has_user(&nodes[1], "alice@localhost").await;
    let mut changer = Client::login(&nodes[0], "alice", "old", "laptop").await;
    let mut same_node = Client::login(&nodes[0], "alice", "old", "tablet").await;
    let mut other_node = Client::login(&nodes[1], "alice", "old", "phone").await;
    changer.sync("bound").await;
    same_node.sync("bound").await;
    other_node.sync("bound").await;

    let reply = changer.iq(&change_password("c1", "new")).await;
    common::assert_result(&reply);
    assert_eq!(
        same_node.expect_stream_error().await.as_deref(),
        Some("not-authorized")
    );
    assert_eq!(
        other_node.expect_stream_error().await.as_deref(),
        Some("not-authorized")
    );
    // The stream that changed it goes on, and the new password works everywhere.
    changer.sync("still").await;
    Client::login(&nodes[1], "alice", "new", "again")
        .await
        .sync("in")
        .await;

    // An operator's change through the admin API ends every stream.
    let (status, _) = api(
        &nodes[1],
        "PUT",
        "/api/v1/users/alice@localhost/password",
        Some(serde_json::json!({ "password": "newest" })),
    );
    assert_eq!(status, 204);
    assert_eq!(
        changer.expect_stream_error().await.as_deref(),
        Some("not-authorized")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_setting_off_a_password_change_ends_no_stream() {
    let node = common::node_with(
        &["alice"],
        &["--set", "auth.password_change_ends_sessions=false"],
    );
    let mut changer = Client::login(&node, "alice", "pw", "laptop").await;
    let mut other = Client::login(&node, "alice", "pw", "phone").await;
    common::assert_result(&changer.iq(&change_password("c1", "new")).await);
    // A ping round trip on each after the change committed: both still served.
    changer.sync("after").await;
    other.sync("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_write_that_cannot_commit_in_time_is_a_504() {
    let nodes = start_cluster(
        &format!("stall-{}", rand::random::<u32>()),
        3,
        Find::Seeds,
        &[],
    );
    let leader = nodes
        .iter()
        .position(|n| n.metric("chorus_raft_is_leader") == 1)
        .expect("a leader");
    // The two followers stop answering: the leader cannot reach a quorum.
    for (i, n) in nodes.iter().enumerate() {
        if i != leader {
            unsafe_kill(n.pid(), "STOP");
        }
    }
    let (status, body) = api(
        &nodes[leader],
        "POST",
        "/api/v1/users",
        Some(serde_json::json!({ "jid": "late@localhost", "password": "pw" })),
    );
    for (i, n) in nodes.iter().enumerate() {
        if i != leader {
            unsafe_kill(n.pid(), "CONT");
        }
    }
    // The entry is in the leader's log: it may commit once the followers are back.
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("may still commit"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_closes_a_connection_that_trickles_its_headers() {
    let node = TestNode::start_with(&["--set", "http.header_read_timeout_secs=2"]);
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", node.http))
        .await
        .unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The rest of the headers never come: the node closes the connection.
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node kept a half-sent request open");
    // Other requests are served meanwhile and after.
    assert!(node.api_get("/api/v1/status").is_object());
}
