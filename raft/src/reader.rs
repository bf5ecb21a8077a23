//! Reads of the local replica. Not linearizable by themselves: call
//! `RaftNode::ensure_linearizable` first when a read must see every committed write.

use std::sync::Arc;

use rocksdb::{IteratorMode, DB};
use serde::de::DeserializeOwned;

use crate::codec;
use crate::machine::{full_jid_prefix, invalid_name, QueueMeta};
use crate::storage::keys::{
    self, CF_DATA, CF_DATA_META, CF_NODE_ROUTES, CF_QUEUE, CF_QUEUE_META, CF_ROUTES, CF_SETTINGS,
    CF_SM_META, CF_USERS,
};
use crate::storage::{cf, scan_prefix};
use crate::types::{LogId, NodeId, Route, UserRecord};

/// A cheap handle on the local state machine. Every read sees whole applied batches, never
/// part of one.
#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
}

/// A corrupt value is logged and read as absent: readers have no error channel, and
/// openraft stops the node on the same corruption when it next applies or snapshots.
fn decode_or_log<T: DeserializeOwned>(cf_name: &str, key: &[u8], value: &[u8]) -> Option<T> {
    match codec::decode(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(cf = cf_name, key = ?String::from_utf8_lossy(key), error = %e, "undecodable state value");
            None
        }
    }
}

/// Names the state machine refuses to store (empty, NUL) are never found, rather than
/// looked up under a key they could not have been written to.
fn valid_names(names: &[&str]) -> bool {
    names.iter().all(|n| invalid_name("", n).is_none())
}

impl StateReader {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        StateReader { db }
    }

    fn get<T: DeserializeOwned>(&self, cf_name: &str, key: &[u8]) -> Option<T> {
        match self.db.get_cf(cf(&self.db, cf_name), key) {
            Ok(Some(v)) => decode_or_log(cf_name, key, &v),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(cf = cf_name, error = %e, "state read failed");
                None
            }
        }
    }

    fn scan<T: DeserializeOwned>(&self, cf_name: &str, prefix: &[u8]) -> Vec<(String, T)> {
        match scan_prefix(&self.db, cf_name, prefix) {
            Ok(items) => items
                .into_iter()
                .filter_map(|(k, v)| {
                    let key = String::from_utf8(k.into_vec()).ok()?;
                    let value = decode_or_log(cf_name, key.as_bytes(), &v)?;
                    Some((key, value))
                })
                .collect(),
            Err(e) => {
                tracing::error!(cf = cf_name, error = %e, "state scan failed");
                Vec::new()
            }
        }
    }

    pub fn user(&self, user: &str) -> Option<UserRecord> {
        self.get(CF_USERS, user.as_bytes())
    }

    /// All account names (bare JIDs), sorted.
    pub fn users(&self) -> Vec<String> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_USERS), IteratorMode::Start)
        {
            match item {
                Ok((k, _)) => out.extend(String::from_utf8(k.into_vec()).ok()),
                Err(e) => {
                    tracing::error!(error = %e, "user scan failed");
                    break;
                }
            }
        }
        out
    }

    pub fn route(&self, full_jid: &str) -> Option<Route> {
        self.get(CF_ROUTES, full_jid.as_bytes())
    }

    /// `(full_jid, route)` for exactly that bare JID, ordered by full JID.
    pub fn routes_of(&self, bare_jid: &str) -> Vec<(String, Route)> {
        self.scan(CF_ROUTES, full_jid_prefix(bare_jid).as_bytes())
    }

    /// Every route, ordered by full JID.
    pub fn routes(&self) -> Vec<(String, Route)> {
        self.scan(CF_ROUTES, b"")
    }

    /// `(full_jid, route)` of every route on that node, ordered by full JID.
    pub fn routes_on_node(&self, node: NodeId) -> Vec<(String, Route)> {
        // Index and routes are read from one RocksDB snapshot so that a batch applied in
        // between cannot leave an index entry without its route.
        let snap = self.db.snapshot();
        let prefix = keys::node_route_prefix(node);
        let mut out = Vec::new();
        let routes_cf = cf(&self.db, CF_ROUTES);
        for item in snap.iterator_cf(
            cf(&self.db, CF_NODE_ROUTES),
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let Ok((k, _)) = item else { break };
            if !k.starts_with(&prefix) {
                break;
            }
            let Ok(full_jid) = String::from_utf8(k[8..].to_vec()) else {
                continue;
            };
            if let Ok(Some(v)) = snap.get_cf(routes_cf, full_jid.as_bytes()) {
                if let Some(route) = decode_or_log::<Route>(CF_ROUTES, full_jid.as_bytes(), &v) {
                    out.push((full_jid, route));
                }
            }
        }
        out
    }

    pub fn setting(&self, key: &str) -> Option<String> {
        self.get(CF_SETTINGS, key.as_bytes())
    }

    /// Every setting, ordered by key.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.scan(CF_SETTINGS, b"")
    }

    /// The value stored under `key` in (user, kind).
    pub fn data(&self, user: &str, kind: &str, key: &str) -> Option<Vec<u8>> {
        if !valid_names(&[user, kind, key]) {
            return None;
        }
        self.raw_get(CF_DATA, &keys::data_key(user, kind, key))
    }

    /// Every (key, value) of exactly that user and kind, sorted by key.
    pub fn data_all(&self, user: &str, kind: &str) -> Vec<(String, Vec<u8>)> {
        if !valid_names(&[user, kind]) {
            return Vec::new();
        }
        let prefix = keys::pair_key(user, kind);
        match scan_prefix(&self.db, CF_DATA, &prefix) {
            Ok(items) => items
                .into_iter()
                .filter_map(|(k, v)| {
                    let key = String::from_utf8(k[prefix.len()..].to_vec()).ok()?;
                    Some((key, v.into_vec()))
                })
                .collect(),
            Err(e) => {
                tracing::error!(cf = CF_DATA, error = %e, "state scan failed");
                Vec::new()
            }
        }
    }

    /// The version of (user, kind): 0 if it was never written (or the user was deleted).
    pub fn data_version(&self, user: &str, kind: &str) -> u64 {
        if !valid_names(&[user, kind]) {
            return 0;
        }
        self.get(CF_DATA_META, &keys::pair_key(user, kind))
            .unwrap_or(0)
    }

    /// `(kind, version)` of every kind that user has written, sorted by kind.
    pub fn data_kinds(&self, user: &str) -> Vec<(String, u64)> {
        self.pairs_of::<u64>(CF_DATA_META, user)
    }

    /// Items of (user, queue) with `seq > after_seq`, oldest first, at most `max`: page
    /// through a queue by passing the last seq of one page as `after_seq` of the next.
    pub fn queue(
        &self,
        user: &str,
        queue: &str,
        after_seq: u64,
        max: usize,
    ) -> Vec<(u64, Vec<u8>)> {
        let Some(first) = after_seq.checked_add(1) else {
            return Vec::new();
        };
        if max == 0 || !valid_names(&[user, queue]) {
            return Vec::new();
        }
        let prefix = keys::pair_key(user, queue);
        let from = keys::queue_item_key(user, queue, first);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            cf(&self.db, CF_QUEUE),
            IteratorMode::From(&from, rocksdb::Direction::Forward),
        ) {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!(cf = CF_QUEUE, error = %e, "queue scan failed");
                    break;
                }
            };
            if !k.starts_with(&prefix) {
                break;
            }
            let Ok(seq) = k[prefix.len()..].try_into().map(u64::from_be_bytes) else {
                tracing::error!(cf = CF_QUEUE, key = ?k, "malformed queue key");
                continue;
            };
            out.push((seq, v.into_vec()));
            if out.len() >= max {
                break;
            }
        }
        out
    }

    /// Items held by (user, queue), from its meta record: O(1).
    pub fn queue_len(&self, user: &str, queue: &str) -> u64 {
        self.queue_meta(user, queue).map_or(0, |m| m.len)
    }

    /// The seq of the newest item ever pushed to (user, queue) (0 before the first), and how
    /// many items it holds.
    pub fn queue_meta(&self, user: &str, queue: &str) -> Option<QueueMeta> {
        if !valid_names(&[user, queue]) {
            return None;
        }
        self.get(CF_QUEUE_META, &keys::pair_key(user, queue))
    }

    /// `(queue, meta)` of every queue that user has, sorted by queue name.
    pub fn queues_of(&self, user: &str) -> Vec<(String, QueueMeta)> {
        self.pairs_of::<QueueMeta>(CF_QUEUE_META, user)
    }

    fn raw_get(&self, cf_name: &str, key: &[u8]) -> Option<Vec<u8>> {
        match self.db.get_cf(cf(&self.db, cf_name), key) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(cf = cf_name, error = %e, "state read failed");
                None
            }
        }
    }

    /// The (second name, value) of every meta key of `user` in `cf_name`, sorted by name
    /// (the key layout orders names by length first).
    fn pairs_of<T: DeserializeOwned>(&self, cf_name: &str, user: &str) -> Vec<(String, T)> {
        if invalid_name("user", user).is_some() {
            return Vec::new();
        }
        let mut out: Vec<(String, T)> =
            match scan_prefix(&self.db, cf_name, &keys::user_prefix(user)) {
                Ok(items) => items
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let (_, name) = keys::parse_pair_key(&k)?;
                        let value = decode_or_log(cf_name, &k, &v)?;
                        Some((name, value))
                    })
                    .collect(),
                Err(e) => {
                    tracing::error!(cf = cf_name, error = %e, "state scan failed");
                    Vec::new()
                }
            };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Index of the last log entry applied to this replica.
    pub fn last_applied(&self) -> Option<u64> {
        self.get::<LogId>(CF_SM_META, keys::LAST_APPLIED)
            .map(|l| l.index)
    }
}
