//! Column families and key layout (documented in docs/raft.md).

use crate::types::NodeId;

/// Log entries: key = index as u64 big-endian (byte order = numeric order).
pub const CF_LOG: &str = "log";
/// Vote, committed and purged log ids of the log store.
pub const CF_RAFT_META: &str = "raft_meta";
/// key = bare JID.
pub const CF_USERS: &str = "sm_users";
/// key = full JID.
pub const CF_ROUTES: &str = "sm_routes";
/// Index of routes by node: key = node id u64 big-endian ++ full JID, empty value.
pub const CF_NODE_ROUTES: &str = "sm_node_routes";
/// key = setting name.
pub const CF_SETTINGS: &str = "sm_settings";
/// Last applied log id, last membership and the per-client dedup records.
pub const CF_SM_META: &str = "sm_meta";
/// The current snapshot: its meta and its data in chunks.
pub const CF_SNAPSHOT: &str = "snapshot";

pub const ALL_CFS: [&str; 8] = [
    CF_LOG,
    CF_RAFT_META,
    CF_USERS,
    CF_ROUTES,
    CF_NODE_ROUTES,
    CF_SETTINGS,
    CF_SM_META,
    CF_SNAPSHOT,
];

/// The column families that make up the state machine: a snapshot replaces all of them.
pub const SM_CFS: [&str; 5] = [CF_USERS, CF_ROUTES, CF_NODE_ROUTES, CF_SETTINGS, CF_SM_META];

pub const VOTE: &[u8] = b"vote";
pub const COMMITTED: &[u8] = b"committed";
pub const PURGED: &[u8] = b"purged";

pub const LAST_APPLIED: &[u8] = b"last_applied";
pub const MEMBERSHIP: &[u8] = b"membership";
pub const CLIENT_PREFIX: &[u8] = b"client/";

pub const SNAPSHOT_META: &[u8] = b"meta";
pub const SNAPSHOT_CHUNK_PREFIX: &[u8] = b"data/";

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub fn node_route_key(node: NodeId, full_jid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + full_jid.len());
    k.extend_from_slice(&node.to_be_bytes());
    k.extend_from_slice(full_jid.as_bytes());
    k
}

pub fn node_route_prefix(node: NodeId) -> [u8; 8] {
    node.to_be_bytes()
}

pub fn client_key(client: u64) -> Vec<u8> {
    let mut k = CLIENT_PREFIX.to_vec();
    k.extend_from_slice(&client.to_be_bytes());
    k
}

pub fn client_id(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(CLIENT_PREFIX)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

pub fn snapshot_chunk_key(n: u32) -> Vec<u8> {
    let mut k = SNAPSHOT_CHUNK_PREFIX.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}
