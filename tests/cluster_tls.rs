//! Cluster traffic is encrypted (issue 11, item 4): a capture of everything on the
//! loopback interface while an account's vCard is replicated between two nodes
//! does not hold the vCard's text; with `cluster.tls.enabled=false` (the control) it
//! does, so the capture does see cluster traffic. Client streams are TLS too, so the
//! text can only show up in clear on the cluster connections.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{eventually_has_user, start_cluster, Find};
use common::{assert_result, Client};
use socket2::{Domain, Protocol, Socket, Type};

/// Every frame seen on any interface (loopback included) until stopped. Needs root
/// (CAP_NET_RAW), as the test command runs in CI.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl Capture {
    fn start() -> Capture {
        const ETH_P_ALL: u16 = 0x0003;
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(ETH_P_ALL.to_be() as i32)),
        )
        .expect("a raw packet socket (run the tests as root, as CI does)");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = std::io::Read::read(&mut &socket, &mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                }
            }
            seen
        });
        Capture { stop, thread }
    }

    fn finish(self) -> Vec<u8> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Replicate a vCard holding `canary` between two nodes while capturing; the capture.
async fn replicate_canary(extra: &[&str], canary: &str) -> Vec<u8> {
    let nodes = start_cluster(
        &format!("tls-{}", rand::random::<u32>()),
        2,
        Find::Seeds,
        extra,
    );
    nodes[0].add_user("alice@localhost", "pw");
    eventually_has_user(&nodes[1], "alice@localhost").await;
    let mut alice = Client::login(&nodes[0], "alice", "pw", "a").await;
    let capture = Capture::start();
    let set = alice
        .iq(&format!(
            "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>{canary}</FN></vCard></iq>"
        ))
        .await;
    assert_result(&set);
    // Read back on the other node: the write crossed the cluster connections.
    let mut reader = Client::login(&nodes[1], "alice", "pw", "b").await;
    let mut found = false;
    for i in 0..100 {
        let got = reader
            .iq(&format!(
                "<iq type='get' id='g{i}' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>"
            ))
            .await;
        if got.to_xml().contains(canary) {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the vCard never reached the second node");
    capture.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_state_is_not_in_clear_on_the_cluster_network() {
    let canary = format!("canary-{:016x}", rand::random::<u64>());
    let seen = replicate_canary(&[], &canary).await;
    assert!(!seen.is_empty(), "the capture saw nothing");
    assert!(
        !contains(&seen, canary.as_bytes()),
        "the vCard's text crossed the network in clear"
    );

    // The control: with TLS off the same capture finds it.
    let canary = format!("canary-{:016x}", rand::random::<u64>());
    let seen = replicate_canary(&["--set", "cluster.tls.enabled=false"], &canary).await;
    assert!(
        contains(&seen, canary.as_bytes()),
        "the capture misses cluster traffic, so it proves nothing"
    );
}

/// Keeps `count` connections from `source` open to `port`, each sending nothing and
/// opened again (after a pause) once the node closes it, until `stop`.
fn hold_idle_connections(
    source: &'static str,
    port: u16,
    count: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut tcp = common::connect_from(source, port).await;
                    let mut buf = [0u8; 64];
                    let _ = tokio::time::timeout(
                        Duration::from_secs(30),
                        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
                    )
                    .await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_cluster_port_do_not_stop_the_cluster() {
    let nodes = start_cluster(
        &format!("idle-{}", rand::random::<u32>()),
        3,
        Find::Seeds,
        &[],
    );
    nodes[0].add_user("alice@localhost", "pw");
    for n in &nodes[1..] {
        eventually_has_user(n, "alice@localhost").await;
    }
    let terms: Vec<u64> = nodes.iter().map(|n| n.metric("chorus_raft_term")).collect();
    // 300 silent connections to every node's cluster port, more than it has slots.
    let stop = Arc::new(AtomicBool::new(false));
    let mut holders = Vec::new();
    for n in &nodes {
        holders.extend(hold_idle_connections(
            "127.0.0.2",
            n.cluster,
            300,
            stop.clone(),
        ));
    }
    // Three failure timeouts (the test cluster's is 3 s), with logins on every node.
    for round in 0..9 {
        for n in &nodes {
            Client::login(n, "alice", "pw", &format!("r{round}"))
                .await
                .sync("served")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = common::cluster::status(&nodes[0]);
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.abort();
    }
    for m in status["members"].as_array().unwrap() {
        assert_eq!(m["state"], "up", "a member was marked down: {status}");
    }
    let after: Vec<u64> = nodes.iter().map(|n| n.metric("chorus_raft_term")).collect();
    assert_eq!(
        after, terms,
        "an election happened under the idle connections"
    );
    for n in &nodes {
        assert!(n.metric("chorus_cluster_connections_refused_pending_total") > 0);
        assert!(n.metric("chorus_cluster_handshakes_failed_total") > 0);
    }
}

/// A CA, and a certificate it signs for 127.0.0.1 (both as server and client), as
/// PEM files in `dir`: (ca, cert, key).
fn operator_pki(dir: &std::path::Path, tag: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca).unwrap();
    let path = |name: &str| dir.join(format!("{tag}-{name}.pem")).display().to_string();
    std::fs::write(path("ca"), ca.pem()).unwrap();
    std::fs::write(path("cert"), cert.pem()).unwrap();
    std::fs::write(path("key"), key.serialize_pem()).unwrap();
    (path("ca"), path("cert"), path("key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_operator_certificates_a_node_of_another_ca_is_refused() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = operator_pki(pki.path(), "ours");
    let tls_flags = |ca: &str, cert: &str, key: &str| {
        vec![
            "--set".to_string(),
            format!("cluster.tls.ca={ca}"),
            "--set".to_string(),
            format!("cluster.tls.cert={cert}"),
            "--set".to_string(),
            format!("cluster.tls.key={key}"),
        ]
    };
    let ours = tls_flags(&ca, &cert, &key);
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    let name = format!("mtls-{}", rand::random::<u32>());
    let nodes = start_cluster(&name, 2, Find::Seeds, &ours);
    assert_eq!(
        common::cluster::member_ids(&common::cluster::status(&nodes[0])).len(),
        2,
        "two nodes of one CA formed a cluster"
    );
    // Accounts replicate over mutual TLS.
    nodes[0].add_user("alice@localhost", "pw");
    eventually_has_user(&nodes[1], "alice@localhost").await;

    // The right name and secret, but a certificate of another CA: refused, and it
    // does not form a cluster of its own beside this one.
    let (other_ca, other_cert, other_key) = operator_pki(pki.path(), "theirs");
    let mut intruder = common::TestNode::prepare(&[]);
    intruder.extra = common::cluster::cluster_flags(&name, 1, Find::Seeds, common::free_port());
    intruder
        .extra
        .extend(tls_flags(&other_ca, &other_cert, &other_key));
    intruder.extra.extend([
        "--seed".to_string(),
        format!("127.0.0.1:{}", nodes[0].cluster),
    ]);
    intruder.spawn_nowait();
    let status = intruder.child.as_mut().unwrap().wait().unwrap();
    intruder.child = None;
    assert!(!status.success(), "the intruder started");
    let log = intruder.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert_eq!(
        common::cluster::member_ids(&common::cluster::status(&nodes[0])).len(),
        2
    );
}
