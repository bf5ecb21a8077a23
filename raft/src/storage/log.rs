//! The Raft log and vote, in the `log` and `raft_meta` column families.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogId, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::keys::{self, CF_LOG, CF_RAFT_META};
use super::{blocking, cf, read_err, write_err, DbError};
use crate::codec;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    _in_use: Arc<()>,
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn get_meta<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, DbError> {
    match db.get_cf(cf(db, CF_RAFT_META), key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

fn put_meta<T: serde::Serialize>(
    db: &DB,
    key: &[u8],
    value: &T,
    sync: bool,
) -> Result<(), DbError> {
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_RAFT_META), key, codec::encode(value)?);
    if sync {
        db.write_opt(batch, &synced())?;
    } else {
        db.write(batch)?;
    }
    Ok(())
}

fn read_range(db: &DB, start: u64, end: u64) -> Result<Vec<Entry>, DbError> {
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    let from = keys::log_key(start);
    for item in db.iterator_cf(
        cf(db, CF_LOG),
        IteratorMode::From(&from, Direction::Forward),
    ) {
        let (k, v) = item?;
        let index = keys::log_index(&k)
            .ok_or_else(|| DbError::Invalid(format!("malformed log key {k:?}")))?;
        if index >= end {
            break;
        }
        let entry: Entry = codec::decode(&v)?;
        if entry.log_id.index != index {
            return Err(DbError::Invalid(format!(
                "log entry stored at index {index} claims index {}",
                entry.log_id.index
            )));
        }
        out.push(entry);
    }
    Ok(out)
}

fn last_entry_id(db: &DB) -> Result<Option<LogId>, DbError> {
    match db.iterator_cf(cf(db, CF_LOG), IteratorMode::End).next() {
        Some(item) => {
            let (_, v) = item?;
            let entry: Entry = codec::decode(&v)?;
            Ok(Some(entry.log_id))
        }
        None => Ok(None),
    }
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, in_use: Arc<()>) -> Self {
        LogStore {
            db,
            _in_use: in_use,
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        let db = self.db.clone();
        blocking(move || read_range(&db, start, end))
            .await
            .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let purged: Option<LogId> = get_meta(&db, keys::PURGED)?;
            let last = last_entry_id(&db)?;
            Ok(LogState {
                last_purged_log_id: purged,
                // With every entry purged, the last log id is the last purged one.
                last_log_id: last.max(purged),
            })
        })
        .await
        .map_err(read_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let db = self.db.clone();
        let vote = *vote;
        // A vote must survive a crash before it is acted on: synced.
        blocking(move || put_meta(&db, keys::VOTE, &vote, true))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.db.clone();
        blocking(move || get_meta(&db, keys::VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let db = self.db.clone();
        // Not synced: it only lets a restart re-apply committed entries sooner; a lost value
        // means openraft learns the commit index from the leader again.
        blocking(move || put_meta(&db, keys::COMMITTED, &committed, false))
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Ok(get_meta::<Option<LogId>>(&db, keys::COMMITTED)?.flatten()))
            .await
            .map_err(read_err)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = self.db.clone();
        let res = blocking(move || {
            let mut batch = WriteBatch::default();
            let log = cf(&db, CF_LOG);
            for entry in &entries {
                batch.put_cf(
                    log,
                    keys::log_key(entry.get_log_id().index),
                    codec::encode(entry)?,
                );
            }
            db.write(batch)?;
            // The entries are only acknowledged once the WAL holding them is on disk.
            db.flush_wal(true)?;
            Ok(())
        })
        .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(AnyError::new(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(
                cf(&db, CF_LOG),
                keys::log_key(log_id.index),
                keys::log_key(u64::MAX),
            );
            batch.delete_cf(cf(&db, CF_LOG), keys::log_key(u64::MAX));
            // Not synced: the append that follows a truncation syncs the WAL, which covers
            // this write; a crash in between only brings back uncommitted entries that the
            // leader truncates again.
            db.write(batch)?;
            Ok(())
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            // The purged pointer and the deletion go in one batch: a crash never leaves a
            // hole below a pointer that says the entries are still there.
            batch.put_cf(cf(&db, CF_RAFT_META), keys::PURGED, codec::encode(&log_id)?);
            batch.delete_range_cf(
                cf(&db, CF_LOG),
                keys::log_key(0),
                keys::log_key(log_id.index.saturating_add(1)),
            );
            db.write(batch)?;
            Ok(())
        })
        .await
        .map_err(write_err)
    }
}
