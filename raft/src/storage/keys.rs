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
/// Per-user keyed data: key = `pair_key(user, kind)` ++ key bytes, raw value bytes.
pub const CF_DATA: &str = "sm_data";
/// Version of each (user, kind): key = `pair_key(user, kind)`, value = codec `u64`.
pub const CF_DATA_META: &str = "sm_data_meta";
/// Queue items: key = `pair_key(user, queue)` ++ seq u64 big-endian, raw value bytes.
pub const CF_QUEUE: &str = "sm_queue";
/// Queue bookkeeping: key = `pair_key(user, queue)`, value = codec `QueueMeta`.
pub const CF_QUEUE_META: &str = "sm_queue_meta";

/// Every column family `Storage::open` opens, creating the missing ones: a data directory
/// from before a column family was added gains it, empty, on open.
pub const ALL_CFS: [&str; 12] = [
    CF_LOG,
    CF_RAFT_META,
    CF_USERS,
    CF_ROUTES,
    CF_NODE_ROUTES,
    CF_SETTINGS,
    CF_SM_META,
    CF_SNAPSHOT,
    CF_DATA,
    CF_DATA_META,
    CF_QUEUE,
    CF_QUEUE_META,
];

/// The column families that make up the state machine: a snapshot replaces all of them.
pub const SM_CFS: [&str; 9] = [
    CF_USERS,
    CF_ROUTES,
    CF_NODE_ROUTES,
    CF_SETTINGS,
    CF_SM_META,
    CF_DATA,
    CF_DATA_META,
    CF_QUEUE,
    CF_QUEUE_META,
];

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

// Per-user data and queue keys. Each name is written as its length (u32 big-endian) then
// its bytes, so that a key prefix names exactly one user, or one (user, kind), whatever the
// names contain: "al@x" never matches "al@x.y", kind "r" never matches "roster". The last
// component (data key, seq) needs no length. Length-prefixing orders names by length
// first, so lists of kinds or queues are sorted after they are read.

fn push_name(k: &mut Vec<u8>, name: &str) {
    // Commands are at most 1 MiB and decoded values at most 64 MiB, so a name never
    // reaches 4 GiB.
    let len = u32::try_from(name.len()).expect("name longer than 4 GiB");
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
}

/// The prefix of every data meta and queue meta key of `user`.
pub fn user_prefix(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + user.len());
    push_name(&mut k, user);
    k
}

/// The key of (user, kind) in `sm_data_meta` or (user, queue) in `sm_queue_meta`, and the
/// prefix of its items in `sm_data` or `sm_queue`.
pub fn pair_key(user: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + user.len() + name.len());
    push_name(&mut k, user);
    push_name(&mut k, name);
    k
}

pub fn data_key(user: &str, kind: &str, key: &str) -> Vec<u8> {
    let mut k = pair_key(user, kind);
    k.extend_from_slice(key.as_bytes());
    k
}

pub fn queue_item_key(user: &str, queue: &str, seq: u64) -> Vec<u8> {
    let mut k = pair_key(user, queue);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Splits one length-prefixed name off the front of `bytes`.
fn take_name(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let rest = &bytes[4..];
    let name = std::str::from_utf8(rest.get(..len)?).ok()?;
    Some((name, &rest[len..]))
}

/// (user, name) of a `pair_key`, or `None` if `key` is not exactly one.
pub fn parse_pair_key(key: &[u8]) -> Option<(String, String)> {
    let (user, rest) = take_name(key)?;
    let (name, rest) = take_name(rest)?;
    rest.is_empty().then(|| (user.to_owned(), name.to_owned()))
}

/// (user, kind, key) of a `data_key`.
pub fn parse_data_key(key: &[u8]) -> Option<(String, String, String)> {
    let (user, rest) = take_name(key)?;
    let (kind, rest) = take_name(rest)?;
    let key = std::str::from_utf8(rest).ok()?;
    Some((user.to_owned(), kind.to_owned(), key.to_owned()))
}

/// (user, queue, seq) of a `queue_item_key`.
pub fn parse_queue_item_key(key: &[u8]) -> Option<(String, String, u64)> {
    let (user, rest) = take_name(key)?;
    let (queue, rest) = take_name(rest)?;
    let seq = u64::from_be_bytes(rest.try_into().ok()?);
    Some((user.to_owned(), queue.to_owned(), seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_prefixes_are_exact() {
        assert_eq!(
            parse_pair_key(&pair_key("al@x", "roster")),
            Some(("al@x".into(), "roster".into()))
        );
        assert_eq!(
            parse_data_key(&data_key("al@x", "r", "k/ü")),
            Some(("al@x".into(), "r".into(), "k/ü".into()))
        );
        assert_eq!(
            parse_queue_item_key(&queue_item_key("al@x", "q", 7)),
            Some(("al@x".into(), "q".into(), 7))
        );
        assert!(!pair_key("al@x.y", "r").starts_with(&user_prefix("al@x")));
        assert!(!data_key("al@x", "roster", "k").starts_with(&pair_key("al@x", "r")));
        assert!(!data_key("al@x", "r\0x", "k").starts_with(&pair_key("al@x", "r")));
        assert_eq!(parse_pair_key(&[0, 0, 0, 9, b'a']), None);
    }
}
