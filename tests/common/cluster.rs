//! Several real `chorus` processes forming one cluster on loopback.

use std::time::{Duration, Instant};

use super::TestNode;

pub const SECRET: &str = "cluster-test-secret";

/// How the nodes find each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Find {
    /// Every node gets every node's cluster address as `--seed`.
    Seeds,
    /// Multicast beacons on loopback, on a port of this test's own.
    Multicast,
}

/// Flags shared by the nodes of one test cluster: a name of its own (so parallel tests
/// never meet), the test secret, a short failure timeout.
pub fn cluster_flags(name: &str, expect: usize, find: Find, mcast_port: u16) -> Vec<String> {
    let mut flags: Vec<String> = vec![
        "--cluster-name".into(),
        name.into(),
        "--cluster-secret".into(),
        SECRET.into(),
        "--bootstrap-expect".into(),
        expect.to_string(),
        "--set".into(),
        "cluster.startup.delay=1".into(),
        "--set".into(),
        "cluster.startup.retry.seconds=1".into(),
        "--set".into(),
        "cluster.failure.timeout=3".into(),
        "--set".into(),
        "cluster.heartbeat_ms=100".into(),
        "--set".into(),
        "cluster.election_min_ms=500".into(),
        "--set".into(),
        "cluster.election_max_ms=1000".into(),
        "--set".into(),
        format!("cluster.multicast.port={mcast_port}"),
    ];
    if find == Find::Seeds {
        flags.extend(["--set".into(), "cluster.multicast.enabled=false".into()]);
    }
    flags
}

/// `n` nodes started at the same moment; returns once every one has joined.
pub fn start_cluster(name: &str, n: usize, find: Find, extra: &[&str]) -> Vec<TestNode> {
    let mcast_port = super::free_port();
    let mut nodes: Vec<TestNode> = (0..n).map(|_| TestNode::prepare(&[])).collect();
    let seeds: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.cluster))
        .collect();
    for node in nodes.iter_mut() {
        node.extra = cluster_flags(name, n, find, mcast_port);
        if find == Find::Seeds {
            for s in &seeds {
                node.extra.extend(["--seed".into(), s.clone()]);
            }
        }
        node.extra.extend(extra.iter().map(|s| s.to_string()));
    }
    for node in nodes.iter_mut() {
        node.spawn_nowait();
    }
    for node in nodes.iter_mut() {
        node.wait_ready();
    }
    nodes
}

/// The node's view of the cluster (`GET /api/v1/cluster`).
pub fn status(node: &TestNode) -> serde_json::Value {
    node.api_get("/api/v1/cluster")
}

pub fn member_ids(status: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

pub fn node_id(node: &TestNode) -> String {
    std::fs::read_to_string(node.data_dir().join("node_id"))
        .unwrap()
        .trim()
        .to_string()
}

/// Polls `check` until it holds; panics with `what` after a generous bound (a failure
/// bound, not a performance claim).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    // Waits on the runtime's timer, not the thread: the test's own clients (and, on a
    // current-thread runtime, everything else) keep running between checks.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The state the node's view gives a member ("up", "down", "unreachable"), if listed.
pub fn member_state(status: &serde_json::Value, id: &str) -> Option<String> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap_or_default().to_string())
}

/// One admin API request with the node's token; any status comes back (no panic on 4xx).
pub fn api(
    node: &TestNode,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{}{path}", node.http);
    let auth = format!("Bearer {}", token.trim());
    let mut resp = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
        ("PUT", Some(b)) => agent.put(&url).header("Authorization", &auth).send_json(b),
        ("POST", Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
        (m, b) => panic!("unsupported request {m} {b:?}"),
    }
    .unwrap();
    let status = resp.status().as_u16();
    let json = resp
        .body_mut()
        .read_json()
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Waits until `node`'s replica holds `user` (an account made through another node).
pub async fn eventually_has_user(node: &TestNode, user: &str) {
    eventually(&format!("{user} reached node {}", node.cluster), || {
        node.api_get("/api/v1/users")["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|j| j == user))
    })
    .await;
}
