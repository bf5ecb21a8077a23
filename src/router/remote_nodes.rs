//! Which other nodes hold routes of an account, remembered while the replicated state
//! stays as it was read.
//!
//! Every stanza for an account with no stream on this node asks the routing table which
//! nodes hold the account's streams: a RocksDB prefix scan, a sixth of a three-node
//! cluster's CPU in chat (docs/benchmarks.md, step 5). The routing table changes only when
//! the state machine applies an entry, and the applied index moves after each one; so
//! an answer read at one applied index holds until the index moves. In chat no entry is
//! applied for seconds at a time; in a login storm the index moves with every batch and
//! the answers are dropped as fast (never used stale).

use std::collections::HashMap;

use chorus_raft::{NodeId, ReadError, StateReader};

/// Accounts remembered at once; past it, answers are read and not kept.
const MAX_KNOWN: usize = 16 * 1024;

#[derive(Default)]
pub struct RemoteNodes {
    /// The applied index the answers were read at.
    at: u64,
    known: HashMap<String, Vec<NodeId>>,
    pub hits: u64,
    pub reads: u64,
}

impl RemoteNodes {
    /// The nodes other than `me` holding routes of `bare`, smallest id first.
    pub fn of(
        &mut self,
        state: &StateReader,
        me: NodeId,
        bare: &str,
    ) -> Result<Vec<NodeId>, ReadError> {
        let at = state.applied_index();
        if at != self.at {
            // Dropped, not cleared: a storm's worth of answers keeps no memory afterwards.
            self.known = HashMap::new();
            self.at = at;
        }
        if let Some(nodes) = self.known.get(bare) {
            self.hits += 1;
            return Ok(nodes.clone());
        }
        self.reads += 1;
        let mut nodes: Vec<NodeId> = state
            .routes_of(bare)?
            .into_iter()
            .map(|(_, r)| r.node)
            .filter(|n| *n != me)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        // Kept only if nothing was applied during the read, so it is the state at `at`.
        if state.applied_index() == at && self.known.len() < MAX_KNOWN {
            self.known.insert(bare.to_string(), nodes.clone());
        }
        Ok(nodes)
    }
}
