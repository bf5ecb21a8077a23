//! Which users hold any item of a few data kinds, answered from memory.
//!
//! Some kinds are asked about on every stanza (a block list, screened both when a
//! client sends and when a stanza reaches its recipient) yet held by few users. Asking
//! RocksDB each time was most of a node's CPU under chat load (docs/benchmarks.md,
//! "Where the time went"); this index answers "does this user hold any?" for the kinds a
//! node names (`RaftConfig::memory_kinds`), and the point lookups happen only for users
//! who do.
//!
//! It changes in the same apply step as the state machine, after the write and before
//! the applied index moves, so a reader that waits for an index sees both. Until it is
//! built, or after a refresh it could not finish, it answers nothing and readers ask
//! RocksDB as before: it can be slow, never wrong. The same steps keep the cache of whole
//! (user, kind) data (`DataCache`) true.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use rocksdb::{IteratorMode, DB};

use super::data_cache::DataCache;
use super::keys::{self, CF_DATA, CF_DATA_META};
use super::{cf, DbError};
use crate::types::StateEvent;

/// kind -> the users holding at least one item of it.
type Holders = HashMap<String, HashSet<String>>;

pub struct DataIndex {
    kinds: HashSet<String>,
    holders: RwLock<Option<Holders>>,
    cache: DataCache,
}

impl DataIndex {
    pub fn new(kinds: impl IntoIterator<Item = String>) -> DataIndex {
        DataIndex::with_cache(kinds, DataCache::new([], 0))
    }

    pub fn with_cache(kinds: impl IntoIterator<Item = String>, cache: DataCache) -> DataIndex {
        DataIndex {
            kinds: kinds.into_iter().collect(),
            holders: RwLock::new(None),
            cache,
        }
    }

    pub fn cache(&self) -> &DataCache {
        &self.cache
    }

    /// Whether `user` holds any item of `kind`; `None` when this index cannot say (a kind
    /// it does not keep, or not built).
    pub fn holds(&self, user: &str, kind: &str) -> Option<bool> {
        if !self.kinds.contains(kind) {
            return None;
        }
        let holders = self.holders.read().unwrap_or_else(|p| p.into_inner());
        let holders = holders.as_ref()?;
        Some(holders.get(kind).is_some_and(|users| users.contains(user)))
    }

    /// Builds the index from the database: one pass over the (user, kind) meta keys, and
    /// a seek for the kinds kept. Run at open and after a snapshot replaced the state. A
    /// read that fails leaves it unbuilt: readers ask the database.
    pub(crate) fn rebuild(&self, db: &DB) {
        self.cache.clear();
        if self.kinds.is_empty() {
            return;
        }
        let result = self.scan(db);
        let mut holders = self.holders.write().unwrap_or_else(|p| p.into_inner());
        *holders = match result {
            Ok(built) => Some(built),
            Err(e) => {
                tracing::error!(error = %e, "data index not built; reads go to the database");
                None
            }
        };
    }

    fn scan(&self, db: &DB) -> Result<Holders, DbError> {
        let mut built: Holders = self
            .kinds
            .iter()
            .map(|k| (k.clone(), HashSet::new()))
            .collect();
        for item in db.iterator_cf(cf(db, CF_DATA_META), IteratorMode::Start) {
            let (key, _) = item?;
            let Some((user, kind)) = keys::parse_pair_key(&key) else {
                return Err(DbError::Invalid(format!(
                    "malformed key in {CF_DATA_META}: {key:?}"
                )));
            };
            if let Some(users) = built.get_mut(&kind) {
                if any_item(db, &user, &kind)? {
                    users.insert(user);
                }
            }
        }
        Ok(built)
    }

    /// Brings the index up to a write that produced `events`. A read that fails leaves the
    /// index unbuilt (readers fall back to RocksDB) until the next rebuild.
    pub(crate) fn refresh(&self, db: &DB, events: &[StateEvent]) {
        self.cache.forget(events);
        // Every applied batch passes here: most change none of the kinds kept, and they
        // take no lock the stanza path's readers wait on.
        if self.kinds.is_empty() || !changes_any_of(events, |kind| self.kinds.contains(kind)) {
            return;
        }
        let mut holders = self.holders.write().unwrap_or_else(|p| p.into_inner());
        let Some(map) = holders.as_mut() else {
            return;
        };
        for event in events {
            match event {
                StateEvent::DataChanged { user, kind, .. } => {
                    let Some(users) = map.get_mut(kind) else {
                        continue;
                    };
                    match any_item(db, user, kind) {
                        Ok(true) => {
                            users.insert(user.clone());
                        }
                        Ok(false) => {
                            users.remove(user);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "data index not refreshed; reads go to the database");
                            *holders = None;
                            return;
                        }
                    }
                }
                StateEvent::UserDeleted { user } => {
                    for users in map.values_mut() {
                        users.remove(user);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether `events` change data of a kind `kept` says yes to (a write of it, or an
/// account deleted with all its data).
pub(super) fn changes_any_of(events: &[StateEvent], kept: impl Fn(&str) -> bool) -> bool {
    events.iter().any(|e| match e {
        StateEvent::DataChanged { kind, .. } => kept(kind),
        StateEvent::UserDeleted { .. } => true,
        _ => false,
    })
}

/// Whether (user, kind) has at least one item in the database.
pub(crate) fn any_item(db: &DB, user: &str, kind: &str) -> Result<bool, DbError> {
    let prefix = keys::pair_key(user, kind);
    let mut items = super::prefix_iter(db, CF_DATA, &prefix, &prefix);
    match items.next() {
        Some(item) => Ok(item?.0.starts_with(&prefix)),
        None => Ok(false),
    }
}
