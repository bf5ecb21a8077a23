//! openraft storage v2 on one RocksDB: the log store (`log`) and the state machine (`sm`).

mod data_cache;
mod data_index;
pub mod keys;
mod log;
mod sm;
mod snapshot;

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use openraft::{AnyError, StorageIOError};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, DB,
};
use tokio::sync::broadcast;

pub use self::data_cache::{CacheStats, CachedData, DataCache};
pub(crate) use self::data_index::{any_item, DataIndex};
pub use self::log::LogStore;
pub use self::sm::{SnapshotBuilder, StateMachine};
use crate::codec::CodecError;
use crate::config::{MAX_OPEN_TABLE_FILES, MAX_TOTAL_WAL_BYTES, TABLE_CACHE_SHARD_BITS};
use crate::error::RaftError;
use crate::reader::StateReader;
use crate::types::{StateEvent, StorageError};

/// An error inside the storage layer, before it is reported to openraft.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("{0}")]
    Invalid(String),
    #[error("blocking task failed: {0}")]
    Join(String),
}

pub(crate) fn read_err(e: DbError) -> StorageError {
    StorageIOError::read(AnyError::new(&e)).into()
}

pub(crate) fn write_err(e: DbError) -> StorageError {
    StorageIOError::write(AnyError::new(&e)).into()
}

/// Runs RocksDB work off the async runtime: RocksDB calls block (fsync, compaction stalls).
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, DbError>
where
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DbError::Join(e.to_string()))?
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    // Every column family in `keys::ALL_CFS` is created by `Storage::open`.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} missing: Storage::open creates it"))
}

pub(crate) type KeyValues = Vec<(Box<[u8]>, Box<[u8]>)>;

/// Every (key, value) in `cf_name` whose key starts with `prefix`, in key order.
pub(crate) fn scan_prefix(db: &DB, cf_name: &str, prefix: &[u8]) -> Result<KeyValues, DbError> {
    let mut out = Vec::new();
    for item in prefix_iter(db, cf_name, prefix, prefix) {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Read options that end an iteration at the first key past `prefix`. Without the bound,
/// the step after the prefix's last live key walks over every deleted key that follows
/// (RocksDB keeps them until compaction) to find the next live one, and routes and
/// offline queues are written and removed at every login: in a three-node cluster's chat,
/// that step (`DBIter::Next`) was 7 % of the samples (docs/benchmarks.md step 5).
pub(crate) fn bounded_to(prefix: &[u8]) -> ReadOptions {
    let mut opts = ReadOptions::default();
    let mut upper = prefix.to_vec();
    // The least key above every key with the prefix: its last byte below 0xFF, plus one.
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            opts.set_iterate_upper_bound(upper);
            break;
        }
    }
    opts
}

/// Iterates `cf_name` from `from` (at or after `prefix`) to the end of `prefix`.
pub(crate) fn prefix_iter<'a>(
    db: &'a DB,
    cf_name: &str,
    prefix: &[u8],
    from: &[u8],
) -> rocksdb::DBIteratorWithThreadMode<'a, DB> {
    db.iterator_cf_opt(
        cf(db, cf_name),
        bounded_to(prefix),
        IteratorMode::From(from, Direction::Forward),
    )
}

/// The RocksDB database behind one node's log and state machine.
pub struct Storage {
    db: Arc<DB>,
    /// Cloned into every handle given to openraft, so that shutdown can tell when openraft
    /// has let go of the database.
    in_use: Arc<()>,
    /// The index of the last entry applied, shared by the state machine (which moves it
    /// after each write) and every reader: which writes a read is sure to see, from
    /// memory, without a RocksDB read.
    applied: Arc<AtomicU64>,
    /// Which users hold the kinds asked about on every stanza, from memory.
    index: Arc<DataIndex>,
}

impl Storage {
    /// Opens (creating as needed) the database in `dir`. Blocks: call it from a blocking
    /// context or use `open_async`.
    pub fn open(dir: &Path) -> Result<Storage, RaftError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            RaftError::from(StorageError::from(StorageIOError::write(AnyError::new(&e))))
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        opts.set_max_open_files(MAX_OPEN_TABLE_FILES);
        opts.set_table_cache_num_shard_bits(TABLE_CACHE_SHARD_BITS);
        let cfs = keys::ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)
            .map_err(|e| RaftError::from(write_err(DbError::Rocks(e))))?;
        Ok(Storage {
            db: Arc::new(db),
            in_use: Arc::new(()),
            applied: Arc::default(),
            index: Arc::new(DataIndex::new([])),
        })
    }

    /// Keep in memory which users hold any item of the `kinds` (`has_data` is then
    /// answered without a RocksDB read), and the whole data of the `cached` kinds, the most
    /// recently read within `budget` bytes (`DataCache`). Call before making the state
    /// machine or readers.
    pub fn keep_in_memory(
        mut self,
        kinds: impl IntoIterator<Item = String>,
        cached: impl IntoIterator<Item = String>,
        budget: usize,
    ) -> Storage {
        self.index = Arc::new(DataIndex::with_cache(kinds, DataCache::new(cached, budget)));
        self
    }

    pub async fn open_async(dir: &Path) -> Result<Storage, RaftError> {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || Storage::open(&dir))
            .await
            .map_err(|e| RaftError::from(write_err(DbError::Join(e.to_string()))))?
    }

    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.db.clone(), self.in_use.clone())
    }

    /// The state machine, after bringing the state-machine column families up to the stored
    /// snapshot if they are behind it.
    pub async fn state_machine(
        &self,
        events: broadcast::Sender<StateEvent>,
    ) -> Result<StateMachine, RaftError> {
        Ok(StateMachine::open(
            self.db.clone(),
            self.in_use.clone(),
            events,
            self.applied.clone(),
            self.index.clone(),
        )
        .await?)
    }

    pub fn reader(&self) -> StateReader {
        StateReader::new(self.db.clone(), self.applied.clone(), self.index.clone())
    }

    /// True while a log store, state machine or snapshot builder made from this storage is
    /// alive.
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.in_use) > 1
    }
}

#[cfg(test)]
mod tests {
    use rocksdb::perf::{set_perf_stats, PerfContext, PerfMetric, PerfStatsLevel};

    use super::*;

    fn fresh() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        (dir, storage)
    }

    /// The bound is the least key past the prefix, also where the prefix ends in 0xFF
    /// bytes (and none where it is all 0xFF).
    #[test]
    fn a_prefix_scan_finds_exactly_the_keys_with_the_prefix() {
        let (_dir, storage) = fresh();
        let db = &storage.db;
        let routes = cf(db, keys::CF_ROUTES);
        for key in [&b"a\xFF"[..], b"a\xFF\xFF", b"b", b"b\x00"] {
            db.put_cf(routes, key, b"v").unwrap();
        }
        let keys = |prefix: &[u8]| -> Vec<Vec<u8>> {
            scan_prefix(db, keys::CF_ROUTES, prefix)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k.into_vec())
                .collect()
        };
        assert_eq!(
            keys(b"a\xFF"),
            vec![b"a\xFF".to_vec(), b"a\xFF\xFF".to_vec()]
        );
        assert_eq!(keys(b"\xFF"), Vec::<Vec<u8>>::new());
        assert_eq!(keys(b"b"), vec![b"b".to_vec(), b"b\x00".to_vec()]);
    }

    /// A prefix scan stops at the prefix's end instead of stepping over the deleted keys
    /// that follow it (counted by RocksDB's per-thread perf context, not timed).
    #[test]
    fn a_prefix_scan_does_not_walk_the_deleted_keys_after_its_prefix() {
        let (_dir, storage) = fresh();
        let db = &storage.db;
        let routes = cf(db, keys::CF_ROUTES);
        db.put_cf(routes, b"alice@x/phone", b"v").unwrap();
        for i in 0..1000 {
            let key = format!("bob{i:04}@x/r");
            db.put_cf(routes, key.as_bytes(), b"v").unwrap();
            db.delete_cf(routes, key.as_bytes()).unwrap();
        }
        db.put_cf(routes, b"carol@x/r", b"v").unwrap();
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut perf = PerfContext::default();
        perf.reset();
        let found = scan_prefix(db, keys::CF_ROUTES, b"alice@x/").unwrap();
        let skipped = perf.metric(PerfMetric::InternalDeleteSkippedCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert_eq!(found.len(), 1);
        assert!(
            skipped < 10,
            "stepped over {skipped} deleted keys past the prefix"
        );
    }
}
