//! The state machine on RocksDB: applies entries through `machine::apply_request`, builds
//! and installs snapshots.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::broadcast;

use super::keys::{
    self, CF_DATA, CF_DATA_META, CF_NODE_ROUTES, CF_QUEUE, CF_QUEUE_META, CF_ROUTES, CF_SETTINGS,
    CF_SM_META, CF_USERS,
};
use super::snapshot::{self, SnapshotPayload};
use super::{blocking, cf, read_err, scan_prefix, DataIndex, DbError};
use crate::codec;
use crate::machine::{self, full_jid_prefix, Applied, ClientRecord, QueueMeta, StateStore};
use crate::types::{
    Entry, LogId, NodeId, Response, Route, SnapshotMeta, StateEvent, StorageError,
    StoredMembership, TypeConfig, UserRecord, PROTOCOL_VERSION,
};

type KeyValue = (Vec<u8>, Vec<u8>);

#[derive(Clone, Copy)]
enum Cf {
    Users = 0,
    Routes = 1,
    NodeRoutes = 2,
    Settings = 3,
    Meta = 4,
    Data = 5,
    DataMeta = 6,
    Queue = 7,
    QueueMeta = 8,
}

const CF_COUNT: usize = 9;

impl Cf {
    const ALL: [Cf; CF_COUNT] = [
        Cf::Users,
        Cf::Routes,
        Cf::NodeRoutes,
        Cf::Settings,
        Cf::Meta,
        Cf::Data,
        Cf::DataMeta,
        Cf::Queue,
        Cf::QueueMeta,
    ];

    fn name(self) -> &'static str {
        match self {
            Cf::Users => CF_USERS,
            Cf::Routes => CF_ROUTES,
            Cf::NodeRoutes => CF_NODE_ROUTES,
            Cf::Settings => CF_SETTINGS,
            Cf::Meta => CF_SM_META,
            Cf::Data => CF_DATA,
            Cf::DataMeta => CF_DATA_META,
            Cf::Queue => CF_QUEUE,
            Cf::QueueMeta => CF_QUEUE_META,
        }
    }
}

/// The state-machine column families with the not-yet-written changes of the batch being
/// applied on top, so that each command sees the effects of the ones before it and the
/// whole batch is written as one `WriteBatch`.
struct Overlay<'a> {
    db: &'a DB,
    pending: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; CF_COUNT],
}

impl<'a> Overlay<'a> {
    fn new(db: &'a DB) -> Self {
        Overlay {
            db,
            pending: Default::default(),
        }
    }

    fn get(&self, c: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        if let Some(v) = self.pending[c as usize].get(key) {
            return Ok(v.clone());
        }
        Ok(self.db.get_cf(cf(self.db, c.name()), key)?)
    }

    fn put(&mut self, c: Cf, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.pending[c as usize].insert(key.into(), Some(value));
    }

    fn delete(&mut self, c: Cf, key: impl Into<Vec<u8>>) {
        self.pending[c as usize].insert(key.into(), None);
    }

    fn scan(&self, c: Cf, prefix: &[u8]) -> Result<Vec<KeyValue>, DbError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = scan_prefix(self.db, c.name(), prefix)?
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        for (k, v) in self.pending[c as usize]
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn decode_get<T: serde::de::DeserializeOwned>(
        &self,
        c: Cf,
        key: &[u8],
    ) -> Result<Option<T>, DbError> {
        match self.get(c, key)? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for c in Cf::ALL {
            let handle = cf(self.db, c.name());
            for (k, v) in &self.pending[c as usize] {
                match v {
                    Some(v) => batch.put_cf(handle, k, v),
                    None => batch.delete_cf(handle, k),
                }
            }
        }
        batch
    }
}

fn utf8(bytes: &[u8]) -> Result<String, DbError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| DbError::Invalid(format!("key is not UTF-8: {bytes:?}")))
}

/// The second names of the meta keys (kinds or queues) of `user` in `c`, with their values,
/// sorted by name (the key layout orders them by length first).
fn names_of(overlay: &Overlay, c: Cf, user: &str) -> Result<Vec<(String, Vec<u8>)>, DbError> {
    let mut out = overlay
        .scan(c, &keys::user_prefix(user))?
        .into_iter()
        .map(|(k, v)| match keys::parse_pair_key(&k) {
            Some((_, name)) => Ok((name, v)),
            None => Err(DbError::Invalid(format!(
                "malformed key in {}: {k:?}",
                c.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl StateStore for Overlay<'_> {
    type Error = DbError;

    fn user(&self, user: &str) -> Result<Option<UserRecord>, DbError> {
        self.decode_get(Cf::Users, user.as_bytes())
    }
    fn put_user(&mut self, user: &str, record: &UserRecord) -> Result<(), DbError> {
        self.put(Cf::Users, user.as_bytes(), codec::encode(record)?);
        Ok(())
    }
    fn remove_user(&mut self, user: &str) -> Result<(), DbError> {
        self.delete(Cf::Users, user.as_bytes());
        Ok(())
    }
    fn route(&self, full_jid: &str) -> Result<Option<Route>, DbError> {
        self.decode_get(Cf::Routes, full_jid.as_bytes())
    }
    fn put_route(&mut self, full_jid: &str, route: &Route) -> Result<(), DbError> {
        if let Some(old) = self.route(full_jid)? {
            if old.node != route.node {
                self.delete(Cf::NodeRoutes, keys::node_route_key(old.node, full_jid));
            }
        }
        self.put(
            Cf::NodeRoutes,
            keys::node_route_key(route.node, full_jid),
            Vec::new(),
        );
        self.put(Cf::Routes, full_jid.as_bytes(), codec::encode(route)?);
        Ok(())
    }
    fn remove_route(&mut self, full_jid: &str) -> Result<(), DbError> {
        if let Some(old) = self.route(full_jid)? {
            self.delete(Cf::NodeRoutes, keys::node_route_key(old.node, full_jid));
        }
        self.delete(Cf::Routes, full_jid.as_bytes());
        Ok(())
    }
    fn routes_of(&self, bare_jid: &str) -> Result<Vec<(String, Route)>, DbError> {
        self.scan(Cf::Routes, full_jid_prefix(bare_jid).as_bytes())?
            .into_iter()
            .map(|(k, v)| Ok((utf8(&k)?, codec::decode(&v)?)))
            .collect()
    }
    fn routes_on_node(&self, node: NodeId) -> Result<Vec<(String, Route)>, DbError> {
        let mut out = Vec::new();
        for (k, _) in self.scan(Cf::NodeRoutes, &keys::node_route_prefix(node))? {
            let full_jid = utf8(&k[8..])?;
            let route = self.route(&full_jid)?.ok_or_else(|| {
                DbError::Invalid(format!("node index names {full_jid} but it has no route"))
            })?;
            out.push((full_jid, route));
        }
        Ok(out)
    }
    fn setting(&self, key: &str) -> Result<Option<String>, DbError> {
        self.decode_get(Cf::Settings, key.as_bytes())
    }
    fn put_setting(&mut self, key: &str, value: &str) -> Result<(), DbError> {
        self.put(Cf::Settings, key.as_bytes(), codec::encode(value)?);
        Ok(())
    }
    fn remove_setting(&mut self, key: &str) -> Result<(), DbError> {
        self.delete(Cf::Settings, key.as_bytes());
        Ok(())
    }
    fn client(&self, client: u64) -> Result<Option<ClientRecord>, DbError> {
        self.decode_get(Cf::Meta, &keys::client_key(client))
    }
    fn put_client(&mut self, client: u64, record: &ClientRecord) -> Result<(), DbError> {
        self.put(Cf::Meta, keys::client_key(client), codec::encode(record)?);
        Ok(())
    }
    fn data_version(&self, user: &str, kind: &str) -> Result<u64, DbError> {
        Ok(self
            .decode_get(Cf::DataMeta, &keys::pair_key(user, kind))?
            .unwrap_or(0))
    }
    fn put_data_version(&mut self, user: &str, kind: &str, version: u64) -> Result<(), DbError> {
        self.put(
            Cf::DataMeta,
            keys::pair_key(user, kind),
            codec::encode(&version)?,
        );
        Ok(())
    }
    fn remove_data_version(&mut self, user: &str, kind: &str) -> Result<(), DbError> {
        self.delete(Cf::DataMeta, keys::pair_key(user, kind));
        Ok(())
    }
    fn data_kinds(&self, user: &str) -> Result<Vec<String>, DbError> {
        Ok(names_of(self, Cf::DataMeta, user)?
            .into_iter()
            .map(|(kind, _)| kind)
            .collect())
    }
    fn data_keys(&self, user: &str, kind: &str) -> Result<Vec<String>, DbError> {
        let prefix = keys::pair_key(user, kind);
        self.scan(Cf::Data, &prefix)?
            .into_iter()
            .map(|(k, _)| utf8(&k[prefix.len()..]))
            .collect()
    }
    fn put_data(&mut self, user: &str, kind: &str, key: &str, value: &[u8]) -> Result<(), DbError> {
        self.put(Cf::Data, keys::data_key(user, kind, key), value.to_vec());
        Ok(())
    }
    fn remove_data(&mut self, user: &str, kind: &str, key: &str) -> Result<(), DbError> {
        self.delete(Cf::Data, keys::data_key(user, kind, key));
        Ok(())
    }
    fn queue_meta(&self, user: &str, queue: &str) -> Result<Option<QueueMeta>, DbError> {
        self.decode_get(Cf::QueueMeta, &keys::pair_key(user, queue))
    }
    fn put_queue_meta(&mut self, user: &str, queue: &str, meta: &QueueMeta) -> Result<(), DbError> {
        self.put(
            Cf::QueueMeta,
            keys::pair_key(user, queue),
            codec::encode(meta)?,
        );
        Ok(())
    }
    fn remove_queue_meta(&mut self, user: &str, queue: &str) -> Result<(), DbError> {
        self.delete(Cf::QueueMeta, keys::pair_key(user, queue));
        Ok(())
    }
    fn queues_of(&self, user: &str) -> Result<Vec<(String, QueueMeta)>, DbError> {
        names_of(self, Cf::QueueMeta, user)?
            .into_iter()
            .map(|(queue, v)| Ok((queue, codec::decode(&v)?)))
            .collect()
    }
    fn put_queue_item(
        &mut self,
        user: &str,
        queue: &str,
        seq: u64,
        value: &[u8],
    ) -> Result<(), DbError> {
        self.put(
            Cf::Queue,
            keys::queue_item_key(user, queue, seq),
            value.to_vec(),
        );
        Ok(())
    }
    fn remove_queue_item(&mut self, user: &str, queue: &str, seq: u64) -> Result<(), DbError> {
        self.delete(Cf::Queue, keys::queue_item_key(user, queue, seq));
        Ok(())
    }
    fn queue_item_len(&self, user: &str, queue: &str, seq: u64) -> Result<Option<u64>, DbError> {
        Ok(self
            .get(Cf::Queue, &keys::queue_item_key(user, queue, seq))?
            .map(|v| v.len() as u64))
    }
}

type ApplyOutput = (Vec<Response>, Vec<StateEvent>);

/// Applies `entries` as one atomic write: the state changes, last_applied and membership.
fn apply_entries(db: &DB, entries: Vec<Entry>) -> Result<ApplyOutput, (LogId, DbError)> {
    let mut overlay = Overlay::new(db);
    let mut responses = Vec::with_capacity(entries.len());
    let mut events = Vec::new();
    let mut membership: Option<StoredMembership> = None;
    let mut last = None;
    for entry in entries {
        let log_id = entry.log_id;
        match entry.payload {
            EntryPayload::Blank => responses.push(Response::default()),
            EntryPayload::Normal(req) => {
                if req.version == 0 || req.version > PROTOCOL_VERSION {
                    return Err((
                        log_id,
                        DbError::Invalid(format!(
                            "log entry {log_id} carries protocol version {}; this node \
                             applies versions 1..={PROTOCOL_VERSION}: upgrade this node",
                            req.version
                        )),
                    ));
                }
                let (resp, mut evs, applied) =
                    machine::apply_request(&mut overlay, &req).map_err(|e| (log_id, e))?;
                if let Applied::Duplicate { last_serial } = applied {
                    tracing::info!(
                        client = req.client,
                        serial = req.serial,
                        last_serial,
                        "request already applied; answering with the remembered response"
                    );
                }
                responses.push(resp);
                events.append(&mut evs);
            }
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(log_id), m));
                responses.push(Response::default());
            }
        }
        last = Some(log_id);
    }
    let Some(last) = last else {
        return Ok((responses, events));
    };
    let enc = |e| (last, DbError::from(e));
    overlay.put(
        Cf::Meta,
        keys::LAST_APPLIED,
        codec::encode(&last).map_err(enc)?,
    );
    if let Some(m) = &membership {
        overlay.put(Cf::Meta, keys::MEMBERSHIP, codec::encode(m).map_err(enc)?);
    }
    // Not synced: the log entries are durable, and a restart re-applies whatever part of
    // this write was lost (the WAL is synced by the next append anyway).
    db.write(overlay.into_batch())
        .map_err(|e| (last, DbError::from(e)))?;
    Ok((responses, events))
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// Replaces the state machine with `payload` and makes (`meta`, `data`) the stored
/// snapshot, in one synced write.
fn install(
    db: &DB,
    meta: &SnapshotMeta,
    data: &[u8],
    payload: &SnapshotPayload,
) -> Result<(), DbError> {
    let mut batch = WriteBatch::default();
    snapshot::replace_state(&mut batch, db, payload)?;
    snapshot::store(&mut batch, db, meta, data)?;
    db.write_opt(batch, &synced())?;
    Ok(())
}

pub struct StateMachine {
    db: Arc<DB>,
    in_use: Arc<()>,
    events: broadcast::Sender<StateEvent>,
    /// Serialises replacing the stored snapshot between builders and installs.
    snapshot_lock: Arc<Mutex<()>>,
    /// Moved after each write, so that a reader never counts on an entry not yet written.
    applied_index: Arc<AtomicU64>,
    /// Changed with each write, before `applied_index` moves.
    index: Arc<DataIndex>,
}

impl StateMachine {
    pub(crate) async fn open(
        db: Arc<DB>,
        in_use: Arc<()>,
        events: broadcast::Sender<StateEvent>,
        applied_index: Arc<AtomicU64>,
        data_index: Arc<DataIndex>,
    ) -> Result<StateMachine, StorageError> {
        let d = db.clone();
        let index = applied_index.clone();
        let built = data_index.clone();
        blocking(move || {
            let meta_cf = cf(&d, CF_SM_META);
            let (applied, _) = snapshot::read_applied(|k| d.get_cf(meta_cf, k))?;
            index.store(applied.map_or(0, |l| l.index), Ordering::Release);
            let stored = snapshot::stored_meta(&d)?;
            // Defensive: the state machine should never be behind its own snapshot, but if
            // it is (lost writes), the snapshot is the newer truth.
            if let Some(stored) = stored.filter(|s| s.last_log_id > applied) {
                tracing::warn!(
                    snapshot = ?stored.last_log_id,
                    applied = ?applied,
                    "state machine is behind the stored snapshot; restoring from it"
                );
                let (meta, data) = snapshot::load(&d)?
                    .ok_or_else(|| DbError::Invalid("snapshot vanished".into()))?;
                let payload = snapshot::decode_payload(&data)?;
                install(&d, &meta, &data, &payload)?;
                index.store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Release);
            }
            built.rebuild(&d);
            Ok(())
        })
        .await
        .map_err(read_err)?;
        Ok(StateMachine {
            db,
            in_use,
            events,
            snapshot_lock: Arc::new(Mutex::new(())),
            applied_index,
            index: data_index,
        })
    }
}

pub struct SnapshotBuilder {
    db: Arc<DB>,
    _in_use: Arc<()>,
    snapshot_lock: Arc<Mutex<()>>,
}

fn snapshot_id(last: &Option<LogId>) -> String {
    // Two snapshots at the same log id may differ in bytes: the random part tells them
    // apart during a transfer.
    let suffix: u32 = rand::random();
    match last {
        Some(l) => format!("{}-{}-{suffix:08x}", l.leader_id.term, l.index),
        None => format!("none-{suffix:08x}"),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let lock = self.snapshot_lock.clone();
        let (meta, data) = blocking(move || {
            let payload = snapshot::capture(&db)?;
            let data = codec::encode(&payload)?;
            let meta = SnapshotMeta {
                last_log_id: payload.last_applied,
                last_membership: payload.membership.clone(),
                snapshot_id: snapshot_id(&payload.last_applied),
            };
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            let stored = snapshot::stored_meta(&db)?;
            // An install may have stored a newer snapshot while this one was being built.
            if stored.map(|m| m.last_log_id) <= Some(meta.last_log_id) {
                let mut batch = WriteBatch::default();
                snapshot::store(&mut batch, &db, &meta, &data)?;
                // Synced: openraft purges the log up to this snapshot once we return.
                db.write_opt(batch, &synced())?;
            }
            Ok((meta, data))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let meta_cf = cf(&db, CF_SM_META);
            snapshot::read_applied(|k| db.get_cf(meta_cf, k))
        })
        .await
        .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(delay) = crate::faults::apply_delay() {
            tokio::time::sleep(delay).await;
        }
        let first = entries[0].log_id;
        let last = entries[entries.len() - 1].log_id.index;
        let db = self.db.clone();
        let index = self.index.clone();
        let (responses, events) = tokio::task::spawn_blocking(move || {
            let applied = apply_entries(&db, entries)?;
            index.refresh(&db, &applied.1);
            Ok(applied)
        })
        .await
        .map_err(|e| {
            StorageIOError::apply(first, AnyError::error(format!("apply task failed: {e}")))
        })?
        .map_err(|(log_id, e)| StorageIOError::apply(log_id, AnyError::new(&e)))?;
        self.applied_index.store(last, Ordering::Release);
        // Sent only after the write: a subscriber that reads the state sees the change.
        for event in events {
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            _in_use: self.in_use.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let db = self.db.clone();
        let index = self.index.clone();
        let lock = self.snapshot_lock.clone();
        let m = meta.clone();
        blocking(move || {
            let payload = snapshot::decode_payload(&data)?;
            if payload.last_applied != m.last_log_id || payload.membership != m.last_membership {
                return Err(DbError::Invalid(format!(
                    "snapshot {} data is at {:?}, its meta says {:?}",
                    m.snapshot_id, payload.last_applied, m.last_log_id
                )));
            }
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            install(&db, &m, &data, &payload)?;
            index.rebuild(&db);
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        self.applied_index
            .store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Release);
        tracing::info!(snapshot = %meta, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let db = self.db.clone();
        let loaded = blocking(move || snapshot::load(&db))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
