//! The whole data of (user, kind) for a few kinds, kept in memory for the users read
//! most recently.
//!
//! A roster is read several times for every login and logout (the roster request, the
//! probes and the broadcast of initial presence, the broadcast of the last unavailable
//! presence) and again for every presence a user sends; each read was a version lookup
//! and a prefix scan in RocksDB: under a sixth of a node's samples in a login storm
//! (docs/benchmarks.md, "Where the time went", step 4). This cache keeps the last read of (user,
//! kind) for the kinds a node names (`RaftConfig::cached_kinds`), within a byte budget
//! (`cluster.data_cache_bytes`), the least recently used out first.
//!
//! A write removes its pair in the apply step, after the write and before the applied
//! index moves, so a reader that waits for an index never gets what was there before.
//! A read that missed puts what it read in only if no write of a cached kind was applied
//! while it read (`generation`, moved under the same lock as the removal), so a slow read
//! cannot put back what a write has just removed. Every answer is one the database gave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::data_index::changes_any_of;
use crate::types::StateEvent;

/// One (user, kind) as read: its version and its items, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CachedData {
    pub version: u64,
    pub items: Vec<(String, Vec<u8>)>,
}

impl CachedData {
    /// What it holds in memory, about: its items, its key in the cache and the
    /// bookkeeping of both (the cache's node, the `Arc`, each allocation's header).
    fn bytes(&self, user: &str, kind: &str) -> usize {
        const PER_PAIR: usize = 192;
        const PER_ITEM: usize = 80;
        PER_PAIR
            + user.len()
            + kind.len()
            + self
                .items
                .iter()
                .map(|(k, v)| k.len() + v.len() + PER_ITEM)
                .sum::<usize>()
    }
}

struct Inner {
    entries: LruCache<(String, String), (Arc<CachedData>, usize)>,
    /// Bytes held by `entries` (`CachedData::bytes`), at most `budget`.
    held: usize,
    budget: usize,
    /// Moves with every applied write of a cached kind (and every snapshot installed).
    generation: u64,
}

impl Inner {
    fn remove(&mut self, key: &(String, String)) {
        if let Some((_, bytes)) = self.entries.pop(key) {
            self.held -= bytes;
        }
    }
}

pub struct DataCache {
    kinds: Vec<String>,
    inner: Option<Mutex<Inner>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What a read that missed must show when it fills the cache.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl DataCache {
    /// A cache of `kinds` holding at most `budget` bytes; none at all when either is
    /// empty.
    pub fn new(kinds: impl IntoIterator<Item = String>, budget: usize) -> DataCache {
        let kinds: Vec<String> = kinds.into_iter().collect();
        let inner = (budget > 0 && !kinds.is_empty()).then(|| {
            Mutex::new(Inner {
                entries: LruCache::unbounded(),
                held: 0,
                budget,
                generation: 0,
            })
        });
        DataCache {
            kinds,
            inner,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn keeps(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// The cached data of (user, kind), or a ticket for filling it after reading the
    /// database; `Err(None)` when this kind is not cached.
    pub fn get(&self, user: &str, kind: &str) -> Result<Arc<CachedData>, Option<Ticket>> {
        if !self.keeps(kind) {
            return Err(None);
        }
        let Some(mut inner) = self.lock() else {
            return Err(None);
        };
        match inner.entries.get(&(user.to_string(), kind.to_string())) {
            Some((data, _)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(data.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Err(Some(Ticket(inner.generation)))
            }
        }
    }

    /// Keeps what a read that missed got from the database, unless a write of a cached
    /// kind was applied since its ticket was given. The least recently used pairs go to
    /// make room; a pair larger than the whole budget is not kept.
    pub fn fill(&self, ticket: Ticket, user: &str, kind: &str, data: Arc<CachedData>) {
        let Some(mut inner) = self.lock() else {
            return;
        };
        let bytes = data.bytes(user, kind);
        if inner.generation != ticket.0 || bytes > inner.budget {
            return;
        }
        let key = (user.to_string(), kind.to_string());
        inner.remove(&key);
        while inner.held + bytes > inner.budget {
            match inner.entries.pop_lru() {
                Some((_, (_, freed))) => inner.held -= freed,
                None => break,
            }
        }
        inner.held += bytes;
        inner.entries.put(key, (data, bytes));
    }

    /// Forgets what the writes that produced `events` changed. Called in the apply step,
    /// after the write and before the applied index moves.
    pub(crate) fn forget(&self, events: &[StateEvent]) {
        if !changes_any_of(events, |kind| self.keeps(kind)) {
            return;
        }
        let Some(mut inner) = self.lock() else {
            return;
        };
        inner.generation += 1;
        for event in events {
            match event {
                StateEvent::DataChanged { user, kind, .. } => {
                    inner.remove(&(user.clone(), kind.clone()));
                }
                StateEvent::UserDeleted { user } => {
                    for kind in &self.kinds {
                        inner.remove(&(user.clone(), kind.clone()));
                    }
                }
                _ => {}
            }
        }
    }

    /// Forgets everything: the state was replaced (a snapshot installed) or rebuilt.
    pub(crate) fn clear(&self) {
        if let Some(mut inner) = self.lock() {
            inner.generation += 1;
            inner.entries.clear();
            inner.held = 0;
        }
    }

    /// Hits and misses since the node started, and the pairs and bytes held now.
    pub fn stats(&self) -> CacheStats {
        let (pairs, bytes) = self.lock().map_or((0, 0), |i| (i.entries.len(), i.held));
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            pairs,
            bytes,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub pairs: usize,
    pub bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(version: u64) -> Arc<CachedData> {
        Arc::new(CachedData {
            version,
            items: vec![("i:bob@x".into(), b"{}".to_vec())],
        })
    }

    fn changed(user: &str, kind: &str) -> StateEvent {
        StateEvent::DataChanged {
            user: user.into(),
            kind: kind.into(),
            version: 2,
        }
    }

    #[test]
    fn a_kind_not_named_is_never_cached() {
        let cache = DataCache::new(["roster".to_string()], 1 << 20);
        assert!(matches!(cache.get("alice", "vcard"), Err(None)));
    }

    #[test]
    fn a_filled_read_is_answered_until_a_write_of_it_is_applied() {
        let cache = DataCache::new(["roster".to_string()], 1 << 20);
        let Err(Some(ticket)) = cache.get("alice", "roster") else {
            panic!("a first read misses");
        };
        cache.fill(ticket, "alice", "roster", data(1));
        assert_eq!(cache.get("alice", "roster").unwrap().version, 1);
        cache.forget(&[changed("bob", "roster")]);
        assert_eq!(
            cache.get("alice", "roster").unwrap().version,
            1,
            "another user's write leaves it"
        );
        cache.forget(&[changed("alice", "roster")]);
        assert!(matches!(cache.get("alice", "roster"), Err(Some(_))));
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = DataCache::new(["roster".to_string()], 1 << 20);
        let Err(Some(ticket)) = cache.get("alice", "roster") else {
            panic!("a first read misses");
        };
        // The write is applied while the read is at the database: what the read got may
        // be from before it.
        cache.forget(&[changed("alice", "roster")]);
        cache.fill(ticket, "alice", "roster", data(1));
        assert!(matches!(cache.get("alice", "roster"), Err(Some(_))));
    }

    #[test]
    fn deleting_a_user_or_installing_a_snapshot_forgets() {
        let cache = DataCache::new(["roster".to_string()], 1 << 20);
        for user in ["alice", "bob"] {
            let Err(Some(ticket)) = cache.get(user, "roster") else {
                panic!("a first read misses");
            };
            cache.fill(ticket, user, "roster", data(1));
        }
        cache.forget(&[StateEvent::UserDeleted {
            user: "alice".into(),
        }]);
        assert!(cache.get("alice", "roster").is_err());
        assert!(cache.get("bob", "roster").is_ok());
        cache.clear();
        assert!(cache.get("bob", "roster").is_err());
    }

    #[test]
    fn it_holds_at_most_its_budget_of_bytes() {
        let one = data(1).bytes("a", "roster");
        let cache = DataCache::new(["roster".to_string()], 2 * one);
        for user in ["a", "b", "c"] {
            let Err(Some(ticket)) = cache.get(user, "roster") else {
                panic!("a first read misses");
            };
            cache.fill(ticket, user, "roster", data(1));
        }
        let stats = cache.stats();
        assert_eq!((stats.pairs, stats.bytes), (2, 2 * one));
        assert!(cache.get("a", "roster").is_err(), "the least recent went");
        let huge = Arc::new(CachedData {
            version: 1,
            items: vec![("i:x".into(), vec![0; 3 * one])],
        });
        let Err(Some(ticket)) = cache.get("d", "roster") else {
            panic!("a first read misses");
        };
        cache.fill(ticket, "d", "roster", huge);
        assert!(
            cache.get("d", "roster").is_err(),
            "larger than the budget: not kept"
        );
        assert_eq!(cache.stats().pairs, 2, "and nothing went for it");
    }
}
