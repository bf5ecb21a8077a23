//! Committed commands a second through the proposer's group commit, on one node or
//! three in-process nodes over the real (TLS) cluster transport, each with its own
//! RocksDB: the rate the routing table and rosters can change at (docs/benchmarks.md).
//!
//! ```text
//! cargo bench -p chorus-raft --bench commit_rate -- [--nodes 1|3] [--secs S] [--writers N] [--kind bind|roster]
//! ```
//!
//! `--writers` tasks each propose one command at a time, as fast as the answers come:
//! `bind` binds and unbinds a resource of its own user, `roster` writes roster items.
//! Prints commands/s and the propose latency percentiles.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_raft::network::{ClusterIdentity, ClusterTls};
use chorus_raft::{Command, RaftConfig, RaftNode, Route, StartMode, UserRecord};
use openraft::BasicNode;

struct Args {
    nodes: usize,
    secs: u64,
    writers: usize,
    kind: String,
}

fn args() -> Args {
    let mut a = Args {
        nodes: 1,
        secs: 10,
        writers: 512,
        kind: "bind".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} wants a value"));
        match flag.as_str() {
            "--nodes" => a.nodes = value().parse().expect("--nodes N"),
            "--secs" => a.secs = value().parse().expect("--secs S"),
            "--writers" => a.writers = value().parse().expect("--writers N"),
            "--kind" => a.kind = value(),
            // cargo bench passes --bench; nothing else is ours.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(a.nodes == 1 || a.nodes == 3, "--nodes is 1 or 3");
    assert!(
        a.kind == "bind" || a.kind == "roster",
        "--kind is bind or roster"
    );
    a
}

fn config(dir: &std::path::Path, node_id: u64, identity: &ClusterIdentity) -> RaftConfig {
    RaftConfig {
        node_id,
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        identity: identity.clone(),
        ..RaftConfig::default()
    }
}

async fn cluster(nodes: usize, dirs: &[tempfile::TempDir]) -> Vec<Arc<RaftNode>> {
    let tls = ClusterTls::self_signed().expect("certificate");
    let identity = ClusterIdentity::new("bench", b"bench secret", Some(Arc::new(tls)));
    let first = RaftNode::start(config(dirs[0].path(), 1, &identity))
        .await
        .expect("node 1");
    let mut all = vec![Arc::new(first)];
    for id in 2..=nodes as u64 {
        let node = RaftNode::start_with(
            config(dirs[id as usize - 1].path(), id, &identity),
            StartMode::Join,
        )
        .await
        .expect("joiner");
        all[0]
            .raft()
            .add_learner(id, BasicNode::new(node.listen_addr()), true)
            .await
            .expect("add learner");
        all.push(Arc::new(node));
    }
    if nodes > 1 {
        all[0]
            .raft()
            .change_membership((1..=nodes as u64).collect::<BTreeSet<_>>(), false)
            .await
            .expect("membership");
    }
    all
}

fn record() -> UserRecord {
    // Any bytes do: nothing here logs in.
    let cred = chorus_raft::ScramCredential {
        salt: vec![1; 16],
        iterations: 4096,
        stored_key: vec![2; 32],
        server_key: vec![3; 32],
    };
    UserRecord {
        scram_sha1: cred.clone(),
        scram_sha256: cred,
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(a));
}

async fn run(a: Args) {
    let dirs: Vec<_> = (0..a.nodes).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(a.nodes, &dirs).await;
    let leader = nodes[0].clone();
    for w in 0..a.writers {
        leader
            .propose(Command::CreateUser {
                user: format!("w{w}@bench"),
                record: record(),
            })
            .await
            .expect("create user");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.writers {
        let (leader, stop, kind) = (leader.clone(), stop.clone(), a.kind.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("w{w}@bench");
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let command = match (kind.as_str(), n % 2) {
                    ("bind", 0) => Command::BindResource {
                        full_jid: format!("{user}/r"),
                        route: Route {
                            node: 1,
                            session: format!("s{n}"),
                        },
                    },
                    ("bind", _) => Command::UnbindResource {
                        full_jid: format!("{user}/r"),
                        session: format!("s{}", n - 1),
                    },
                    _ => Command::DataWrite {
                        user: user.clone(),
                        kind: "roster".into(),
                        clear: false,
                        deletes: Vec::new(),
                        puts: vec![(format!("c{}@bench", n % 50), vec![0u8; 64])],
                        expect_version: None,
                    },
                };
                let t = Instant::now();
                leader.propose(command).await.expect("propose");
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                n += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let status = leader.status();
    println!(
        "commit_rate: {} node(s), {} writers, {}: {} commands in {:.2} s = {:.0} commands/s; \
         propose latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; log index {}",
        a.nodes,
        a.writers,
        a.kind,
        all.len(),
        elapsed,
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        status.last_log_index.unwrap_or(0),
    );
    for node in nodes {
        let _ = node.shutdown().await;
    }
}
