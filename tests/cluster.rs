//! Clustering with real `chorus` processes on loopback: formation (seeds, multicast,
//! `--bootstrap-expect`), refusal of a wrong secret, users on different nodes, failover
//! after SIGKILL, and the `chorus cluster` verbs. See docs/clustering.md.

mod common;

use chorus::xmpp::element::Element;
use chorus::xmpp::ns;
use common::cluster::{eventually, member_ids, node_id, start_cluster, status, Find};
use common::{Client, TestNode};

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn presence_from(from: &str, ty: Option<&str>) -> impl Fn(&Element) -> bool {
    let from = from.to_string();
    let ty = ty.map(String::from);
    move |e: &Element| {
        e.name() == "presence"
            && e.attr("from") == Some(from.as_str())
            && e.attr("type") == ty.as_deref()
    }
}

fn body_of(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(|b| b.text())
}

/// Every node sees the same members, one leader, one cluster id.
fn assert_one_cluster(nodes: &[TestNode]) {
    let ids: Vec<String> = nodes.iter().map(node_id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    eventually("every node lists every node", || {
        nodes.iter().all(|n| member_ids(&status(n)) == sorted)
    });
    let views: Vec<_> = nodes.iter().map(status).collect();
    let cluster_ids: std::collections::BTreeSet<_> =
        views.iter().map(|v| v["cluster_id"].to_string()).collect();
    assert_eq!(cluster_ids.len(), 1, "one cluster id: {views:?}");
    assert!(!views[0]["cluster_id"].is_null());
    let leaders: std::collections::BTreeSet<_> =
        views.iter().map(|v| v["leader"].to_string()).collect();
    assert_eq!(leaders.len(), 1, "one leader: {views:?}");
}

/// Alice on node 0 and bob on node 1 subscribe to each other, see each other's presence
/// and chat; a message to the bare JID reaches bob's resource on the other node.
async fn users_on_different_nodes_chat(nodes: &[TestNode]) {
    nodes[0].add_user("alice@localhost", "pw");
    nodes[2].add_user("bob@localhost", "pw");
    let mut alice = Client::login(&nodes[0], "alice", "pw", "a").await;
    let mut bob = Client::login(&nodes[1], "bob", "pw", "b").await;
    alice.sync("a0").await;
    bob.sync("b0").await;

    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    bob.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    alice
        .recv_until(presence_from("bob@localhost/b", None))
        .await;
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    bob.recv_until(presence_from("alice@localhost/a", None))
        .await;

    alice
        .send("<message to='bob@localhost/b' type='chat' id='m1'><body>hi bob</body></message>")
        .await;
    let m = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(body_of(&m).as_deref(), Some("hi bob"));
    assert_eq!(m.attr("from"), Some("alice@localhost/a"));
    bob.send("<message to='alice@localhost' type='chat' id='m2'><body>hi alice</body></message>")
        .await;
    let m = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(body_of(&m).as_deref(), Some("hi alice"));

    // Per sender-recipient pair, order is kept across the link.
    for i in 0..50 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat'><body>n{i}</body></message>"
            ))
            .await;
    }
    for i in 0..50 {
        let m = bob.recv_until(|e| e.name() == "message").await;
        assert_eq!(body_of(&m), Some(format!("n{i}")));
    }

    // A presence change crosses too.
    bob.send("<presence><show>away</show></presence>").await;
    let p = alice
        .recv_until(presence_from("bob@localhost/b", None))
        .await;
    assert!(p.get_child("show", ns::CLIENT).is_some(), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_at_once_with_seeds_form_one_cluster_and_users_chat_across_it() {
    let nodes = start_cluster(&unique("seeds"), 3, Find::Seeds, &[]);
    assert_one_cluster(&nodes);
    users_on_different_nodes_chat(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_find_each_other_by_multicast_and_form_one_cluster() {
    let nodes = start_cluster(&unique("mcast"), 3, Find::Multicast, &[]);
    assert_one_cluster(&nodes);
    // Accounts made on one node are known on all.
    nodes[1].add_user("carol@localhost", "pw");
    let mut carol = Client::login(&nodes[2], "carol", "pw", "c").await;
    carol.sync("c0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused() {
    let nodes = start_cluster(&unique("secret"), 1, Find::Seeds, &[]);
    let name = status(&nodes[0])["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut intruder = TestNode::prepare(&[
        "--cluster-name",
        &name,
        "--cluster-secret",
        "not-the-secret",
        "--seed",
        &format!("127.0.0.1:{}", nodes[0].cluster),
        "--set",
        "cluster.multicast.enabled=false",
        "--set",
        "cluster.startup.delay=0",
    ]);
    intruder.spawn_nowait();
    let status_code = intruder.child.as_mut().unwrap().wait().unwrap();
    intruder.child = None;
    assert!(!status_code.success(), "the intruder must not start");
    let log = intruder.log();
    assert!(log.contains("refused this node"), "{log}");
    assert!(log.contains("secret"), "{log}");
    assert_eq!(member_ids(&status(&nodes[0])).len(), 1);
}
