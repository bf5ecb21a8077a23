//! Snapshot data: a consistent copy of the state-machine column families.

use rocksdb::{IteratorMode, SnapshotWithThreadMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::keys::{
    self, CF_DATA, CF_DATA_META, CF_QUEUE, CF_QUEUE_META, CF_ROUTES, CF_SETTINGS, CF_SM_META,
    CF_SNAPSHOT, CF_USERS, SM_CFS,
};
use super::{cf, scan_prefix, DbError};
use crate::codec;
use crate::config::SNAPSHOT_STORE_CHUNK_BYTES;
use crate::machine::{ClientRecord, QueueMeta};
use crate::types::{LogId, Route, SnapshotMeta, StoredMembership, UserRecord};

/// What a snapshot carries (codec-encoded, this is the data shipped to other nodes). The
/// node-route index is derived from `routes` and rebuilt on install.
///
/// Codec format 2. Format 1 (`SnapshotPayloadV1`) lacks `data` and `queues`; both still
/// install (`decode_payload`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub users: Vec<(String, UserRecord)>,
    pub routes: Vec<(String, Route)>,
    pub settings: Vec<(String, String)>,
    pub clients: Vec<(u64, ClientRecord)>,
    pub data: Vec<DataSet>,
    pub queues: Vec<QueueSet>,
}

/// Everything stored for one (user, kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DataSet {
    pub user: String,
    pub kind: String,
    pub version: u64,
    #[serde(with = "crate::codec::byte_pairs")]
    pub items: Vec<(String, Vec<u8>)>,
}

/// Everything stored for one (user, queue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueSet {
    pub user: String,
    pub queue: String,
    pub meta: QueueMeta,
    #[serde(with = "crate::codec::byte_pairs")]
    pub items: Vec<(u64, Vec<u8>)>,
}

/// The snapshot payload of codec format 1 (before per-user data and queues), kept so that
/// a snapshot stored or sent by a node of that version still installs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotPayloadV1 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    users: Vec<(String, UserRecord)>,
    routes: Vec<(String, Route)>,
    settings: Vec<(String, String)>,
    clients: Vec<(u64, ClientRecord)>,
}

impl From<SnapshotPayloadV1> for SnapshotPayload {
    fn from(v1: SnapshotPayloadV1) -> Self {
        SnapshotPayload {
            last_applied: v1.last_applied,
            membership: v1.membership,
            users: v1.users,
            routes: v1.routes,
            settings: v1.settings,
            clients: v1.clients,
            data: Vec::new(),
            queues: Vec::new(),
        }
    }
}

/// Decodes snapshot data of any format this build reads.
pub(crate) fn decode_payload(bytes: &[u8]) -> Result<SnapshotPayload, DbError> {
    match codec::version(bytes)? {
        1 => Ok(codec::decode_snapshot::<SnapshotPayloadV1>(bytes)?.into()),
        // `codec::version` accepted it, so it is the current format.
        _ => Ok(codec::decode_snapshot(bytes)?),
    }
}

fn utf8(key: &[u8]) -> Result<String, DbError> {
    String::from_utf8(key.to_vec())
        .map_err(|_| DbError::Invalid(format!("key is not UTF-8: {key:?}")))
}

fn all<T: serde::de::DeserializeOwned>(
    snap: &SnapshotWithThreadMode<DB>,
    db: &DB,
    cf_name: &str,
) -> Result<Vec<(String, T)>, DbError> {
    let mut out = Vec::new();
    for item in snap.iterator_cf(cf(db, cf_name), IteratorMode::Start) {
        let (k, v) = item?;
        out.push((utf8(&k)?, codec::decode(&v)?));
    }
    Ok(out)
}

pub(crate) fn read_applied(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> Result<(Option<LogId>, StoredMembership), DbError> {
    let last_applied = match get(keys::LAST_APPLIED)? {
        Some(v) => Some(codec::decode(&v)?),
        None => None,
    };
    let membership = match get(keys::MEMBERSHIP)? {
        Some(v) => codec::decode(&v)?,
        None => StoredMembership::default(),
    };
    Ok((last_applied, membership))
}

/// Reads the state machine through a RocksDB snapshot, so that `last_applied` and the data
/// come from the same applied batch even while entries keep being applied.
pub(crate) fn capture(db: &DB) -> Result<SnapshotPayload, DbError> {
    let snap = db.snapshot();
    let meta = cf(db, CF_SM_META);
    let (last_applied, membership) = read_applied(|k| snap.get_cf(meta, k))?;
    let users = all(&snap, db, CF_USERS)?;
    let routes = all(&snap, db, CF_ROUTES)?;
    let settings = all(&snap, db, CF_SETTINGS)?;
    let mut clients = Vec::new();
    for item in snap.iterator_cf(
        meta,
        IteratorMode::From(keys::CLIENT_PREFIX, rocksdb::Direction::Forward),
    ) {
        let (k, v) = item?;
        let Some(client) = keys::client_id(&k) else {
            break;
        };
        clients.push((client, codec::decode(&v)?));
    }
    let data = capture_data(&snap, db)?;
    let queues = capture_queues(&snap, db)?;
    Ok(SnapshotPayload {
        last_applied,
        membership,
        users,
        routes,
        settings,
        clients,
        data,
        queues,
    })
}

fn malformed(cf_name: &str, key: &[u8]) -> DbError {
    DbError::Invalid(format!("malformed key in {cf_name}: {key:?}"))
}

/// A key (after its prefix) and its value, as stored.
type RawItem = (Vec<u8>, Vec<u8>);

/// The (key after the prefix, value) pairs of `cf` whose key starts with `prefix`.
fn under_prefix(
    snap: &SnapshotWithThreadMode<DB>,
    items_cf: &rocksdb::ColumnFamily,
    prefix: &[u8],
) -> Result<Vec<RawItem>, DbError> {
    let mut items = Vec::new();
    for item in snap.iterator_cf(
        items_cf,
        IteratorMode::From(prefix, rocksdb::Direction::Forward),
    ) {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        items.push((k[prefix.len()..].to_vec(), v.into_vec()));
    }
    Ok(items)
}

/// Items of every (user, kind) that has a version; every write sets the version, so no
/// item lacks one.
fn capture_data(snap: &SnapshotWithThreadMode<DB>, db: &DB) -> Result<Vec<DataSet>, DbError> {
    let items_cf = cf(db, CF_DATA);
    let mut out = Vec::new();
    for meta in snap.iterator_cf(cf(db, CF_DATA_META), IteratorMode::Start) {
        let (prefix, version) = meta?;
        let (user, kind) =
            keys::parse_pair_key(&prefix).ok_or_else(|| malformed(CF_DATA_META, &prefix))?;
        let items = under_prefix(snap, items_cf, &prefix)?
            .into_iter()
            .map(|(rest, v)| Ok((utf8(&rest)?, v)))
            .collect::<Result<_, DbError>>()?;
        out.push(DataSet {
            user,
            kind,
            version: codec::decode(&version)?,
            items,
        });
    }
    Ok(out)
}

fn capture_queues(snap: &SnapshotWithThreadMode<DB>, db: &DB) -> Result<Vec<QueueSet>, DbError> {
    let items_cf = cf(db, CF_QUEUE);
    let mut out = Vec::new();
    for meta in snap.iterator_cf(cf(db, CF_QUEUE_META), IteratorMode::Start) {
        let (prefix, meta) = meta?;
        let (user, queue) =
            keys::parse_pair_key(&prefix).ok_or_else(|| malformed(CF_QUEUE_META, &prefix))?;
        let items = under_prefix(snap, items_cf, &prefix)?
            .into_iter()
            .map(|(rest, v)| {
                let seq = rest[..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| malformed(CF_QUEUE, &rest))?;
                Ok((seq, v))
            })
            .collect::<Result<_, DbError>>()?;
        out.push(QueueSet {
            user,
            queue,
            meta: codec::decode(&meta)?,
            items,
        });
    }
    Ok(out)
}

/// Refuses a queue whose items are not exactly the seqs its meta says it holds: installing
/// it would let a later removal leave items behind or a push overwrite one.
fn check_queue(q: &QueueSet) -> Result<(), DbError> {
    let held = q.items.iter().map(|(seq, _)| *seq);
    if q.meta.len > q.meta.last_seq || !held.eq(q.meta.seqs()) {
        return Err(DbError::Invalid(format!(
            "snapshot queue {:?} of {:?}: {} items do not match {:?}",
            q.queue,
            q.user,
            q.items.len(),
            q.meta
        )));
    }
    Ok(())
}

/// Adds to `batch` the writes that make the state-machine column families equal to
/// `payload`: every existing key is deleted and the payload written.
pub(crate) fn replace_state(
    batch: &mut WriteBatch,
    db: &DB,
    payload: &SnapshotPayload,
) -> Result<(), DbError> {
    for name in SM_CFS {
        let handle = cf(db, name);
        for item in db.iterator_cf(handle, IteratorMode::Start) {
            let (k, _) = item?;
            batch.delete_cf(handle, k);
        }
    }
    let users = cf(db, CF_USERS);
    for (user, record) in &payload.users {
        batch.put_cf(users, user.as_bytes(), codec::encode(record)?);
    }
    let routes = cf(db, CF_ROUTES);
    let node_routes = cf(db, keys::CF_NODE_ROUTES);
    for (full_jid, route) in &payload.routes {
        batch.put_cf(routes, full_jid.as_bytes(), codec::encode(route)?);
        batch.put_cf(node_routes, keys::node_route_key(route.node, full_jid), []);
    }
    let settings = cf(db, CF_SETTINGS);
    for (key, value) in &payload.settings {
        batch.put_cf(settings, key.as_bytes(), codec::encode(value)?);
    }
    let data = cf(db, CF_DATA);
    let data_meta = cf(db, CF_DATA_META);
    for set in &payload.data {
        batch.put_cf(
            data_meta,
            keys::pair_key(&set.user, &set.kind),
            codec::encode(&set.version)?,
        );
        for (key, value) in &set.items {
            batch.put_cf(data, keys::data_key(&set.user, &set.kind, key), value);
        }
    }
    let queue = cf(db, CF_QUEUE);
    let queue_meta = cf(db, CF_QUEUE_META);
    for q in &payload.queues {
        check_queue(q)?;
        batch.put_cf(
            queue_meta,
            keys::pair_key(&q.user, &q.queue),
            codec::encode(&q.meta)?,
        );
        for (seq, value) in &q.items {
            batch.put_cf(queue, keys::queue_item_key(&q.user, &q.queue, *seq), value);
        }
    }
    let meta = cf(db, CF_SM_META);
    for (client, record) in &payload.clients {
        batch.put_cf(meta, keys::client_key(*client), codec::encode(record)?);
    }
    if let Some(last) = &payload.last_applied {
        batch.put_cf(meta, keys::LAST_APPLIED, codec::encode(last)?);
    }
    batch.put_cf(meta, keys::MEMBERSHIP, codec::encode(&payload.membership)?);
    Ok(())
}

/// Adds to `batch` the writes that make (`meta`, `data`) the current stored snapshot.
pub(crate) fn store(
    batch: &mut WriteBatch,
    db: &DB,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), DbError> {
    let handle = cf(db, CF_SNAPSHOT);
    for (k, _) in scan_prefix(db, CF_SNAPSHOT, keys::SNAPSHOT_CHUNK_PREFIX)? {
        batch.delete_cf(handle, k);
    }
    batch.put_cf(handle, keys::SNAPSHOT_META, codec::encode(meta)?);
    // Chunked so that a large snapshot does not become one huge RocksDB value.
    for (n, chunk) in data.chunks(SNAPSHOT_STORE_CHUNK_BYTES).enumerate() {
        let n = u32::try_from(n).map_err(|_| DbError::Invalid("snapshot too large".into()))?;
        batch.put_cf(handle, keys::snapshot_chunk_key(n), chunk);
    }
    Ok(())
}

pub(crate) fn stored_meta(db: &DB) -> Result<Option<SnapshotMeta>, DbError> {
    match db.get_cf(cf(db, CF_SNAPSHOT), keys::SNAPSHOT_META)? {
        Some(v) => Ok(Some(codec::decode(&v)?)),
        None => Ok(None),
    }
}

pub(crate) fn load(db: &DB) -> Result<Option<(SnapshotMeta, Vec<u8>)>, DbError> {
    // Meta and chunks are read from one RocksDB snapshot so that a concurrent replacement
    // cannot mix two snapshots.
    let snap = db.snapshot();
    let handle = cf(db, CF_SNAPSHOT);
    let Some(meta) = snap.get_cf(handle, keys::SNAPSHOT_META)? else {
        return Ok(None);
    };
    let meta: SnapshotMeta = codec::decode(&meta)?;
    let mut data = Vec::new();
    for item in snap.iterator_cf(
        handle,
        IteratorMode::From(keys::SNAPSHOT_CHUNK_PREFIX, rocksdb::Direction::Forward),
    ) {
        let (k, v) = item?;
        if !k.starts_with(keys::SNAPSHOT_CHUNK_PREFIX) {
            break;
        }
        data.extend_from_slice(&v);
    }
    Ok(Some((meta, data)))
}
