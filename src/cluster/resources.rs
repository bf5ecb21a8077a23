//! What this node knows of other nodes' resources (presence and carbons), learnt over
//! the peer links, and what it has told them about its own.
//!
//! This is session state, not cluster state: it lives as long as the streams do and is
//! re-sent in full when a link comes up. An entry only counts while the routing table
//! (which Raft keeps) still routes that full JID to that node and session, so a missed
//! `ResourceGone` cannot make a dead resource look available.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use chorus_raft::{NodeId, StateReader};

use super::protocol::ResourceState;

#[derive(Default)]
pub struct Resources {
    /// Other nodes' resources by bare JID, then full JID.
    remote: RwLock<HashMap<String, BTreeMap<String, ResourceState>>>,
    /// This node's resources, as last announced.
    local: RwLock<HashMap<String, ResourceState>>,
}

/// Bounds what one peer can make us hold: resources of one account on other nodes.
const MAX_REMOTE_RESOURCES_PER_ACCOUNT: usize = 1000;

fn bare(full_jid: &str) -> &str {
    full_jid.split_once('/').map_or(full_jid, |(b, _)| b)
}

impl Resources {
    pub fn learn(&self, state: ResourceState) {
        let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
        let entry = remote.entry(bare(&state.full_jid).to_string()).or_default();
        if entry.len() < MAX_REMOTE_RESOURCES_PER_ACCOUNT || entry.contains_key(&state.full_jid) {
            entry.insert(state.full_jid.clone(), state);
        }
    }

    pub fn forget(&self, full_jid: &str, session: Option<&str>) {
        let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
        let b = bare(full_jid);
        if let Some(entry) = remote.get_mut(b) {
            if entry
                .get(full_jid)
                .is_some_and(|r| session.is_none_or(|s| r.session == s))
            {
                entry.remove(full_jid);
            }
            if entry.is_empty() {
                remote.remove(b);
            }
        }
    }

    pub fn forget_node(&self, node: NodeId) {
        let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
        remote.retain(|_, entry| {
            entry.retain(|_, r| r.node != node);
            !entry.is_empty()
        });
    }

    /// Other nodes' resources of `user` that the routing table still routes to them.
    pub fn remote_of(&self, state: &StateReader, user: &str) -> Vec<ResourceState> {
        let remote = self.remote.read().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = remote.get(user) else {
            return Vec::new();
        };
        entry
            .values()
            .filter(|r| {
                // A route that cannot be read is not counted: the stanza then takes the
                // path for an absent resource (offline storage), not a guess.
                state.route(&r.full_jid).is_ok_and(|route| {
                    route.is_some_and(|route| route.node == r.node && route.session == r.session)
                })
            })
            .cloned()
            .collect()
    }

    pub fn set_local(&self, state: ResourceState) {
        let mut local = self.local.write().unwrap_or_else(|p| p.into_inner());
        local.insert(state.full_jid.clone(), state);
    }

    pub fn remove_local(&self, full_jid: &str, session: &str) -> bool {
        let mut local = self.local.write().unwrap_or_else(|p| p.into_inner());
        if local.get(full_jid).is_some_and(|r| r.session == session) {
            local.remove(full_jid);
            return true;
        }
        false
    }

    pub fn all_local(&self) -> Vec<ResourceState> {
        let local = self.local.read().unwrap_or_else(|p| p.into_inner());
        local.values().cloned().collect()
    }
}
