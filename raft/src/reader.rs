//! Reads of the local replica. Not linearizable by themselves: call
//! `RaftNode::ensure_linearizable` first when a read must see every committed write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{IteratorMode, DB};
use serde::de::DeserializeOwned;

use crate::codec;
use crate::faults;
use crate::machine::{full_jid_prefix, invalid_name, QueueMeta};
use crate::storage::keys::{
    self, CF_DATA, CF_DATA_META, CF_NODE_ROUTES, CF_QUEUE, CF_QUEUE_META, CF_ROUTES, CF_SETTINGS,
    CF_SM_META, CF_USERS,
};
use crate::storage::{cf, scan_prefix, CacheStats, CachedData, DataIndex};
use crate::types::{LogId, NodeId, Route, UserRecord};

/// A read of the local replica that could not be answered. Callers refuse what they
/// were about to decide (a stanza gets `internal-server-error`) rather than read it as
/// "absent".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("reading the local state failed: {0}")]
    Storage(String),
    #[error("a stored value in {cf} could not be decoded: {reason}")]
    Corrupt { cf: &'static str, reason: String },
}

/// A cheap handle on the local state machine. Every read sees whole applied batches, never
/// part of one, and says when it could not be answered: a RocksDB error or a value that
/// does not decode is an `Err`, counted (`read_errors`), never "absent".
#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
    errors: Arc<AtomicU64>,
    applied: Arc<AtomicU64>,
    index: Arc<DataIndex>,
}

type Read<T> = Result<T, ReadError>;
/// (key, value) pairs of one (user, kind), sorted by key.
type Items = Vec<(String, Vec<u8>)>;

/// Names the state machine refuses to store (empty, NUL) are never found, rather than
/// looked up under a key they could not have been written to.
fn valid_names(names: &[&str]) -> bool {
    names.iter().all(|n| invalid_name("", n).is_none())
}

impl StateReader {
    pub(crate) fn new(db: Arc<DB>, applied: Arc<AtomicU64>, index: Arc<DataIndex>) -> Self {
        StateReader {
            db,
            errors: Arc::default(),
            applied,
            index,
        }
    }

    /// Index of the last log entry whose changes every read now sees (0 before any), from
    /// memory. A node stamps what it sends a peer with it, so that the peer acts on it
    /// only once its own replica is that far (docs/clustering.md, "Read your writes
    /// across nodes").
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Reads that failed since the node started (for `/metrics`).
    pub fn read_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    fn failed(&self, cf_name: &str, error: ReadError) -> ReadError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(cf = cf_name, error = %error, "state read failed");
        error
    }

    fn storage_error(&self, cf_name: &str, e: impl std::fmt::Display) -> ReadError {
        self.failed(cf_name, ReadError::Storage(e.to_string()))
    }

    /// The fault point tests use (debug builds only): reads of `name` fail, or of
    /// `name:user` for that user's only.
    fn check_fault(&self, name: &str) -> Read<()> {
        if faults::read_fails(name) {
            return Err(self.failed(
                name,
                ReadError::Storage(format!("injected read fault on {name}")),
            ));
        }
        Ok(())
    }

    fn check_user_fault(&self, name: &str, user: &str) -> Read<()> {
        self.check_fault(name)?;
        if faults::enabled() {
            self.check_fault(&format!("{name}:{user}"))?;
        }
        Ok(())
    }

    fn decode<T: DeserializeOwned>(
        &self,
        cf_name: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Read<T> {
        codec::decode(value).map_err(|e| {
            tracing::error!(cf = cf_name, key = ?String::from_utf8_lossy(key), "undecodable state value");
            self.failed(
                cf_name,
                ReadError::Corrupt {
                    cf: cf_name,
                    reason: e.to_string(),
                },
            )
        })
    }

    fn get<T: DeserializeOwned>(&self, cf_name: &'static str, key: &[u8]) -> Read<Option<T>> {
        match self.db.get_cf(cf(&self.db, cf_name), key) {
            Ok(Some(v)) => self.decode(cf_name, key, &v).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.storage_error(cf_name, e)),
        }
    }

    fn scan<T: DeserializeOwned>(
        &self,
        cf_name: &'static str,
        prefix: &[u8],
    ) -> Read<Vec<(String, T)>> {
        let items =
            scan_prefix(&self.db, cf_name, prefix).map_err(|e| self.storage_error(cf_name, e))?;
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            let Ok(key) = String::from_utf8(k.into_vec()) else {
                return Err(self.failed(
                    cf_name,
                    ReadError::Corrupt {
                        cf: cf_name,
                        reason: "a key that is not UTF-8".into(),
                    },
                ));
            };
            let value = self.decode(cf_name, key.as_bytes(), &v)?;
            out.push((key, value));
        }
        Ok(out)
    }

    pub fn user(&self, user: &str) -> Read<Option<UserRecord>> {
        self.check_fault("users")?;
        self.get(CF_USERS, user.as_bytes())
    }

    /// All account names (bare JIDs), sorted.
    pub fn users(&self) -> Read<Vec<String>> {
        self.check_fault("users")?;
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf(&self.db, CF_USERS), IteratorMode::Start)
        {
            let (k, _) = item.map_err(|e| self.storage_error(CF_USERS, e))?;
            out.extend(String::from_utf8(k.into_vec()).ok());
        }
        Ok(out)
    }

    pub fn route(&self, full_jid: &str) -> Read<Option<Route>> {
        self.check_fault("routes")?;
        self.get(CF_ROUTES, full_jid.as_bytes())
    }

    /// `(full_jid, route)` for exactly that bare JID, ordered by full JID.
    pub fn routes_of(&self, bare_jid: &str) -> Read<Vec<(String, Route)>> {
        self.check_fault("routes")?;
        self.scan(CF_ROUTES, full_jid_prefix(bare_jid).as_bytes())
    }

    /// Every route, ordered by full JID.
    pub fn routes(&self) -> Read<Vec<(String, Route)>> {
        self.check_fault("routes")?;
        self.scan(CF_ROUTES, b"")
    }

    /// `(full_jid, route)` of every route on that node, ordered by full JID.
    pub fn routes_on_node(&self, node: NodeId) -> Read<Vec<(String, Route)>> {
        self.check_fault("routes")?;
        // Index and routes are read from one RocksDB snapshot so that a batch applied in
        // between cannot leave an index entry without its route.
        let snap = self.db.snapshot();
        let prefix = keys::node_route_prefix(node);
        let mut out = Vec::new();
        let routes_cf = cf(&self.db, CF_ROUTES);
        for item in snap.iterator_cf_opt(
            cf(&self.db, CF_NODE_ROUTES),
            crate::storage::bounded_to(&prefix),
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (k, _) = item.map_err(|e| self.storage_error(CF_NODE_ROUTES, e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Ok(full_jid) = String::from_utf8(k[8..].to_vec()) else {
                continue;
            };
            let value = snap
                .get_cf(routes_cf, full_jid.as_bytes())
                .map_err(|e| self.storage_error(CF_ROUTES, e))?;
            if let Some(v) = value {
                let route = self.decode::<Route>(CF_ROUTES, full_jid.as_bytes(), &v)?;
                out.push((full_jid, route));
            }
        }
        Ok(out)
    }

    pub fn setting(&self, key: &str) -> Read<Option<String>> {
        self.get(CF_SETTINGS, key.as_bytes())
    }

    /// Every setting, ordered by key.
    pub fn settings(&self) -> Read<Vec<(String, String)>> {
        self.scan(CF_SETTINGS, b"")
    }

    /// The value stored under `key` in (user, kind): one point lookup.
    pub fn data(&self, user: &str, kind: &str, key: &str) -> Read<Option<Vec<u8>>> {
        self.check_user_fault(kind, user)?;
        if !valid_names(&[user, kind, key]) {
            return Ok(None);
        }
        self.db
            .get_cf(cf(&self.db, CF_DATA), keys::data_key(user, kind, key))
            .map_err(|e| self.storage_error(CF_DATA, e))
    }

    /// Whether `user` holds any item of `kind`: from memory for the kinds the node keeps
    /// there (`Storage::keep_in_memory`), otherwise one seek.
    pub fn has_data(&self, user: &str, kind: &str) -> Read<bool> {
        self.check_user_fault(kind, user)?;
        if !valid_names(&[user, kind]) {
            return Ok(false);
        }
        if let Some(held) = self.index.holds(user, kind) {
            return Ok(held);
        }
        crate::storage::any_item(&self.db, user, kind).map_err(|e| self.storage_error(CF_DATA, e))
    }

    /// Every (key, value) of exactly that user and kind, sorted by key.
    pub fn data_all(&self, user: &str, kind: &str) -> Read<Vec<(String, Vec<u8>)>> {
        self.check_user_fault(kind, user)?;
        if !valid_names(&[user, kind]) {
            return Ok(Vec::new());
        }
        if let Some(whole) = self.cached(user, kind)? {
            return Ok(whole.items.clone());
        }
        self.scan_data(user, kind)
    }

    fn scan_data(&self, user: &str, kind: &str) -> Read<Vec<(String, Vec<u8>)>> {
        let prefix = keys::pair_key(user, kind);
        let items =
            scan_prefix(&self.db, CF_DATA, &prefix).map_err(|e| self.storage_error(CF_DATA, e))?;
        Ok(items
            .into_iter()
            .filter_map(|(k, v)| {
                let key = String::from_utf8(k[prefix.len()..].to_vec()).ok()?;
                Some((key, v.into_vec()))
            })
            .collect())
    }

    /// The version of (user, kind): 0 if it was never written (or the user was deleted).
    pub fn data_version(&self, user: &str, kind: &str) -> Read<u64> {
        self.check_user_fault(kind, user)?;
        if !valid_names(&[user, kind]) {
            return Ok(0);
        }
        if let Some(whole) = self.cached(user, kind)? {
            return Ok(whole.version);
        }
        self.stored_version(user, kind)
    }

    fn stored_version(&self, user: &str, kind: &str) -> Read<u64> {
        Ok(self
            .get(CF_DATA_META, &keys::pair_key(user, kind))?
            .unwrap_or(0))
    }

    /// The version of (user, kind) and every (key, value) of it: one read where the kind
    /// is cached, not two.
    pub fn data_with_version(&self, user: &str, kind: &str) -> Read<(u64, Items)> {
        self.check_user_fault(kind, user)?;
        if !valid_names(&[user, kind]) {
            return Ok((0, Vec::new()));
        }
        if let Some(whole) = self.cached(user, kind)? {
            return Ok((whole.version, whole.items.clone()));
        }
        Ok((
            self.stored_version(user, kind)?,
            self.scan_data(user, kind)?,
        ))
    }

    /// The whole of (user, kind) when that kind is cached in memory (`DataCache`): from
    /// the cache, or read from the database and kept. `None` for a kind not cached.
    fn cached(&self, user: &str, kind: &str) -> Read<Option<Arc<CachedData>>> {
        let cache = self.index.cache();
        let ticket = match cache.get(user, kind) {
            Ok(whole) => return Ok(Some(whole)),
            Err(None) => return Ok(None),
            Err(Some(ticket)) => ticket,
        };
        let whole = Arc::new(CachedData {
            version: self.stored_version(user, kind)?,
            items: self.scan_data(user, kind)?,
        });
        cache.fill(ticket, user, kind, whole.clone());
        Ok(Some(whole))
    }

    /// The cache of whole (user, kind) data: hits, misses, what it holds.
    pub fn data_cache_stats(&self) -> CacheStats {
        self.index.cache().stats()
    }

    /// `(kind, version)` of every kind that user has written, sorted by kind.
    pub fn data_kinds(&self, user: &str) -> Read<Vec<(String, u64)>> {
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
    ) -> Read<Vec<(u64, Vec<u8>)>> {
        self.check_fault(queue)?;
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        if max == 0 || !valid_names(&[user, queue]) {
            return Ok(Vec::new());
        }
        let prefix = keys::pair_key(user, queue);
        let from = keys::queue_item_key(user, queue, first);
        let mut out = Vec::new();
        for item in crate::storage::prefix_iter(&self.db, CF_QUEUE, &prefix, &from) {
            let (k, v) = item.map_err(|e| self.storage_error(CF_QUEUE, e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Ok(seq) = k[prefix.len()..].try_into().map(u64::from_be_bytes) else {
                return Err(self.failed(
                    CF_QUEUE,
                    ReadError::Corrupt {
                        cf: CF_QUEUE,
                        reason: "a malformed queue key".into(),
                    },
                ));
            };
            out.push((seq, v.into_vec()));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Items held by (user, queue), from its meta record: O(1).
    pub fn queue_len(&self, user: &str, queue: &str) -> Read<u64> {
        Ok(self.queue_meta(user, queue)?.map_or(0, |m| m.len))
    }

    /// The seq of the newest item ever pushed to (user, queue) (0 before the first), and how
    /// many items it holds.
    pub fn queue_meta(&self, user: &str, queue: &str) -> Read<Option<QueueMeta>> {
        self.check_fault(queue)?;
        if !valid_names(&[user, queue]) {
            return Ok(None);
        }
        self.get(CF_QUEUE_META, &keys::pair_key(user, queue))
    }

    /// `(queue, meta)` of every queue that user has, sorted by queue name.
    pub fn queues_of(&self, user: &str) -> Read<Vec<(String, QueueMeta)>> {
        self.pairs_of::<QueueMeta>(CF_QUEUE_META, user)
    }

    /// The (second name, value) of every meta key of `user` in `cf_name`, sorted by name
    /// (the key layout orders names by length first).
    fn pairs_of<T: DeserializeOwned>(
        &self,
        cf_name: &'static str,
        user: &str,
    ) -> Read<Vec<(String, T)>> {
        if invalid_name("user", user).is_some() {
            return Ok(Vec::new());
        }
        let items = scan_prefix(&self.db, cf_name, &keys::user_prefix(user))
            .map_err(|e| self.storage_error(cf_name, e))?;
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            let Some((_, name)) = keys::parse_pair_key(&k) else {
                continue;
            };
            out.push((name, self.decode(cf_name, &k, &v)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Index of the last log entry applied to this replica.
    pub fn last_applied(&self) -> Read<Option<u64>> {
        Ok(self
            .get::<LogId>(CF_SM_META, keys::LAST_APPLIED)?
            .map(|l| l.index))
    }
}
