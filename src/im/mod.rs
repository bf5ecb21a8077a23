//! Instant messaging rules of RFC 6121: where stanzas for a user go, and a
//! resource's own presence.

pub mod delivery;
pub mod offline;
pub mod presence;
pub mod roster;
pub mod subscription;

use std::sync::Arc;

/// One lock per (what, account) on this node: work on one account's roster, or its
/// offline queue, goes one at a time here (other nodes still meet at the state
/// machine's compare-and-set or sequence numbers).
pub(crate) fn account_lock(what: &'static str, user: &str) -> Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Locks = Mutex<HashMap<(&'static str, String), Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Forget locks nobody holds or waits for, so the map stays as small as the set of
    // busy accounts.
    if locks.len() > 1024 {
        locks.retain(|_, l| Arc::strong_count(l) > 1);
    }
    locks.entry((what, user.to_string())).or_default().clone()
}
