// Shared by several test crates; each uses a different subset.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use chorus_raft::network::ClusterIdentity;

use chorus_raft::{
    Command, NodeId, QueueMeta, RaftConfig, Route, ScramCredential, StateReader, UserRecord,
};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Short timeouts so that elections in tests take well under a second, but not so short
/// that a slow fsync on a loaded 2-core machine starts elections.
pub fn test_config(data_dir: &Path, node_id: NodeId) -> RaftConfig {
    RaftConfig {
        node_id,
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        snapshot_threshold: 5000,
        logs_to_keep: 0,
        max_batch: 1024,
        heartbeat_ms: 100,
        election_min_ms: 500,
        election_max_ms: 1000,
        identity: identity(),
        ..RaftConfig::default()
    }
}

/// The test cluster's identity, TLS on; made once (the key derivation is slow on purpose).
pub fn identity() -> ClusterIdentity {
    static ID: std::sync::OnceLock<ClusterIdentity> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let tls = chorus_raft::network::ClusterTls::self_signed().unwrap();
        ClusterIdentity::new("test", b"test secret", Some(std::sync::Arc::new(tls)))
    })
    .clone()
}

pub fn credential(n: u8) -> ScramCredential {
    ScramCredential {
        salt: vec![n; 16],
        iterations: 4096,
        stored_key: vec![n; 20],
        server_key: vec![n.wrapping_add(1); 20],
    }
}

pub fn record(n: u8) -> UserRecord {
    UserRecord {
        scram_sha1: credential(n),
        scram_sha256: credential(n.wrapping_add(100)),
    }
}

pub fn create_user(user: &str) -> Command {
    Command::CreateUser {
        user: user.into(),
        record: record(1),
    }
}

pub fn bind(full_jid: &str, node: NodeId, session: &str) -> Command {
    Command::BindResource {
        full_jid: full_jid.into(),
        route: Route {
            node,
            session: session.into(),
        },
    }
}

/// An unconditional `DataWrite` of `puts`.
pub fn put_data(user: &str, kind: &str, puts: &[(&str, &[u8])]) -> Command {
    data_write(user, kind, false, &[], puts, None)
}

pub fn data_write(
    user: &str,
    kind: &str,
    clear: bool,
    deletes: &[&str],
    puts: &[(&str, &[u8])],
    expect_version: Option<u64>,
) -> Command {
    Command::DataWrite {
        user: user.into(),
        kind: kind.into(),
        clear,
        deletes: deletes.iter().map(|k| k.to_string()).collect(),
        puts: puts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
        expect_version,
    }
}

pub fn push(user: &str, queue: &str, value: &[u8], limit: u64) -> Command {
    Command::QueuePush {
        user: user.into(),
        queue: queue.into(),
        value: value.to_vec(),
        limit,
    }
}

pub fn remove(user: &str, queue: &str, through_seq: u64) -> Command {
    Command::QueueRemove {
        user: user.into(),
        queue: queue.into(),
        through_seq,
    }
}

/// One (user, kind) as a reader lists it: version and items.
pub type DataDump = (String, String, u64, Vec<(String, Vec<u8>)>);
/// One (user, queue) as a reader lists it: meta and items.
pub type QueueDump = (String, String, QueueMeta, Vec<(u64, Vec<u8>)>);

/// Everything a reader can list, for comparing replicas.
#[derive(Debug, PartialEq, Eq)]
pub struct Dump {
    pub users: Vec<(String, UserRecord)>,
    pub routes: Vec<(String, Route)>,
    pub settings: Vec<(String, String)>,
    pub data: Vec<DataDump>,
    pub queues: Vec<QueueDump>,
}

pub fn dump(reader: &StateReader) -> Dump {
    let mut data = Vec::new();
    let mut queues = Vec::new();
    for user in reader.users().unwrap() {
        for (kind, version) in reader.data_kinds(&user).unwrap() {
            let items = reader.data_all(&user, &kind).unwrap();
            data.push((user.clone(), kind, version, items));
        }
        for (queue, meta) in reader.queues_of(&user).unwrap() {
            let items = reader.queue(&user, &queue, 0, usize::MAX).unwrap();
            queues.push((user.clone(), queue, meta, items));
        }
    }
    Dump {
        data,
        queues,
        users: reader
            .users()
            .unwrap()
            .into_iter()
            .map(|u| {
                let r = reader.user(&u).unwrap().expect("listed user has a record");
                (u, r)
            })
            .collect(),
        routes: reader.routes().unwrap(),
        settings: reader.settings().unwrap(),
    }
}

/// Polls `cond` until it holds; panics with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
