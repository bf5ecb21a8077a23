//! Node settings and every internal limit, with their defaults, in one place.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::network::ClusterIdentity;
use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    pub node_id: NodeId,
    /// RocksDB lives in `data_dir/raft`.
    pub data_dir: PathBuf,
    /// The cluster RPC address this node listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_threshold: u64,
    /// Entries kept after a snapshot before they are purged.
    pub logs_to_keep: u64,
    /// Most commands packed into one log entry.
    pub max_batch: usize,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Cluster name and secret every cluster connection must prove.
    pub identity: ClusterIdentity,
    /// Inbound connections from one address that may be in their handshake at once.
    pub max_pending_per_address: usize,
    /// Time a new inbound connection has to finish TLS and prove the secret.
    pub handshake_timeout: Duration,
    /// Data kinds asked about on every stanza: which users hold any is kept in memory
    /// (`StateReader::has_data`).
    pub memory_kinds: Vec<String>,
    /// Data kinds read whole several times per login and presence: the last reads of
    /// them are kept in memory (`DataCache`), at most `data_cache_bytes` (0: none).
    pub cached_kinds: Vec<String>,
    pub data_cache_bytes: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            node_id: 0,
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 7070)),
            snapshot_threshold: 5000,
            logs_to_keep: 1000,
            max_batch: 1024,
            heartbeat_ms: 250,
            election_min_ms: 1000,
            election_max_ms: 2000,
            identity: ClusterIdentity::default(),
            max_pending_per_address: MAX_PENDING_PER_ADDRESS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            memory_kinds: Vec::new(),
            cached_kinds: Vec::new(),
            data_cache_bytes: 0,
        }
    }
}

impl RaftConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        if self.snapshot_threshold == 0 {
            return Err("snapshot_threshold must be at least 1".into());
        }
        if self.election_min_ms <= self.heartbeat_ms {
            return Err(format!(
                "election_min_ms ({}) must be greater than heartbeat_ms ({})",
                self.election_min_ms, self.heartbeat_ms
            ));
        }
        if self.election_max_ms <= self.election_min_ms {
            return Err(format!(
                "election_max_ms ({}) must be greater than election_min_ms ({})",
                self.election_max_ms, self.election_min_ms
            ));
        }
        Ok(())
    }

    pub(crate) fn openraft_config(&self) -> Result<openraft::Config, String> {
        openraft::Config {
            cluster_name: "chorus".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_threshold),
            max_in_snapshot_log_to_keep: self.logs_to_keep,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }

    /// How long `start` waits for a leader to be known before returning anyway.
    pub(crate) fn leader_wait(&self) -> Duration {
        Duration::from_millis(self.election_max_ms * 5).max(LEADER_WAIT_MIN)
    }
}

/// Capacity of the `subscribe()` broadcast channel; a slower subscriber sees `Lagged`.
pub const EVENT_CHANNEL_CAPACITY: usize = 4096;
/// Proposals waiting for the proposer; callers wait (backpressure) when it is full.
pub const PROPOSAL_QUEUE_CAPACITY: usize = 16 * 1024;
/// Log entries the proposer keeps in flight at once; while they are in flight the next
/// batch accumulates.
pub const MAX_ENTRIES_IN_FLIGHT: usize = 1;
/// Largest single command (encoded); a larger one is refused before it is proposed.
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// The proposer stops adding commands to an entry once it holds this many bytes, so that an
/// entry is replicated within a heartbeat interval (`MAX_APPEND_BYTES`).
pub const MAX_ENTRY_BYTES: usize = 512 * 1024;
/// Pause between attempts to reach the leader when a forwarded proposal found none.
pub const FORWARD_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// A proposal that is not committed and applied within this time fails with `Timeout`
/// (it may still commit later).
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on `ensure_linearizable` and `snapshot_now`.
pub const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(10);
pub const SNAPSHOT_BUILD_TIMEOUT: Duration = Duration::from_secs(60);
pub const LEADER_WAIT_MIN: Duration = Duration::from_secs(5);
/// How long `shutdown` waits for openraft to release the storage.
pub const STORAGE_RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-chunk deadline of a snapshot transfer (openraft's default of 200 ms is too tight
/// for a chunk that is fsynced on arrival).
pub const INSTALL_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);
/// Snapshot transfer chunk; well below `MAX_FRAME_BYTES`.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 * 1024 * 1024;
/// Entries per AppendEntries RPC: with `max_batch` commands per entry this keeps a
/// replication message far below the frame cap.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Snapshot data is stored in RocksDB values of at most this size.
pub const SNAPSHOT_STORE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// WAL kept before RocksDB flushes the column families that pin it: rarely written
/// families (vote, snapshot) would otherwise keep old WAL files for a long time.
pub const MAX_TOTAL_WAL_BYTES: u64 = 256 * 1024 * 1024;

/// Table files RocksDB keeps open at most (its table cache closes the least used):
/// without a cap it opens every file of a growing database, and a node counts its
/// client connections against the open-file limit less what it keeps back for itself.
pub const MAX_OPEN_TABLE_FILES: i32 = 128;

/// The table cache is split into 2^bits shards, each holding an equal share of
/// `MAX_OPEN_TABLE_FILES`. RocksDB's default, 6 bits, leaves two files per shard: two
/// files of one shard then close each other, and every read of them opens a table file
/// again (one login storm spent a quarter of a node's CPU opening table files, with 23
/// files and room for 128: this sharing explains it, not reproduced on demand). Three
/// bits leave 14.
pub const TABLE_CACHE_SHARD_BITS: i32 = 3;

/// Bytes of entries in one AppendEntries, past which it goes in parts (one entry alone
/// may be larger): openraft allows it one heartbeat interval, and a follower must
/// receive, store and answer it within that on a loaded machine.
pub const MAX_APPEND_BYTES: usize = 512 * 1024;

/// Largest RPC frame accepted or sent.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Largest hello frame accepted before the peer has identified itself.
pub const MAX_HELLO_BYTES: usize = 1024;
/// A new inbound connection must finish TLS and prove the cluster secret within this
/// time, or it is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Inbound connections from one address that may be in their handshake at once (anyone
/// can open them; a flood from one address must not take the slots peers need).
pub const MAX_PENDING_PER_ADDRESS: usize = 16;
/// An inbound connection on which no complete frame arrives for this long is closed, so
/// that connections from vanished peers do not hold slots forever.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on establishing a connection (TCP connect plus hello exchange).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Inbound cluster connections served at once; more are closed at accept.
pub const MAX_INBOUND_CONNECTIONS: usize = 256;
/// Idle outbound connections kept per peer for reuse.
pub const MAX_IDLE_CONNECTIONS_PER_PEER: usize = 4;
