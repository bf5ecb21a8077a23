//! Reads of the local replica. Not linearizable by themselves: call
//! `RaftNode::ensure_linearizable` first when a read must see every committed write.

use std::sync::Arc;

use rocksdb::{IteratorMode, DB};
use serde::de::DeserializeOwned;

use crate::codec;
use crate::machine::full_jid_prefix;
use crate::storage::keys::{self, CF_NODE_ROUTES, CF_ROUTES, CF_SETTINGS, CF_SM_META, CF_USERS};
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

    /// Index of the last log entry applied to this replica.
    pub fn last_applied(&self) -> Option<u64> {
        self.get::<LogId>(CF_SM_META, keys::LAST_APPLIED)
            .map(|l| l.index)
    }
}
