//! Session checkers for the `bind` and `sessions` workloads.
//!
//! Observations (type `ok`, no invocation), taken after the final heal and the
//! failure timeout:
//! - `live` `{"full_jids"}`: the client streams still alive;
//! - `routes` `{"node", "full_jids"}`: a node's routing table;
//! - `presence-view` `{"watcher", "available"}`: the full JIDs a watcher sees available.
//!
//! **No ghosts**: every routing table equals the live streams (a route without a
//! live stream is a ghost, a live stream without a route is missing), and no
//! watcher sees a dead session as available. The live streams are the union of
//! the last `live` observation of each workload, so a node-wide routing table
//! written under either workload is judged against every live stream; a table's
//! missing routes are looked for among its own workload's streams.
//!
//! **At most one session per full JID**: of the sessions bound `ok` (`bind` or
//! `connect`, `{"full_jid", "session"}`) and never `closed`, no full JID may
//! have two; and no `live` observation may list a full JID twice.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::history::{field, list_field, ms, warn_unknown_fs, History, Op, Stamp};
use crate::verdict::Verdict;

const WORKLOADS: [&str; 2] = ["bind", "sessions"];
/// `bind` (workload bind) and `connect` (workload sessions) both bind a session.
const BIND_FS: [&str; 2] = ["bind", "connect"];
const KNOWN_FS: [&str; 6] = [
    "bind",
    "connect",
    "closed",
    "live",
    "routes",
    "presence-view",
];

fn session_ops(history: &History) -> Vec<&Op> {
    history
        .ops
        .iter()
        .filter(|op| WORKLOADS.contains(&op.workload.as_str()))
        .collect()
}

/// A field of what the operation returned, or else of what it was invoked with.
fn either(op: &Op, name: &str) -> Option<String> {
    field(op.returned(), name).or_else(|| field(&op.value, name))
}

#[derive(Debug, Serialize)]
pub struct GhostReport {
    pub valid: Verdict,
    pub ops: usize,
    #[serde(flatten)]
    pub detail: Option<GhostDetail>,
}

#[derive(Debug, Serialize)]
pub struct GhostDetail {
    /// Live client streams (union over workloads).
    pub live: usize,
    pub routes: Vec<RouteCheck>,
    pub presence: Vec<PresenceCheck>,
    pub ghost_count: usize,
    pub missing_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RouteCheck {
    pub node: String,
    pub workload: String,
    pub at_ms: f64,
    pub routes: usize,
    /// Routes without a live stream.
    pub ghosts: Vec<String>,
    /// Live streams without a route.
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PresenceCheck {
    pub watcher: String,
    pub at_ms: f64,
    pub available: usize,
    /// Seen available, but no live stream.
    pub ghosts: Vec<String>,
}

/// The last `live` observation of each workload.
fn last_live(ops: &[&Op]) -> BTreeMap<String, (Stamp, Vec<String>)> {
    let mut last: BTreeMap<String, (Stamp, Vec<String>)> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.f == "live" && op.is_ok()) {
        let (Some(at), Some(jids)) = (op.complete, list_field(op.returned(), "full_jids")) else {
            continue;
        };
        if last.get(&op.workload).is_none_or(|(t, _)| *t < at) {
            last.insert(op.workload.clone(), (at, jids));
        }
    }
    last
}

/// Checks that routing tables and presence match the live streams.
pub fn check_ghosts(history: &History, warnings: &mut Vec<String>) -> GhostReport {
    let ops = session_ops(history);
    for w in WORKLOADS {
        warn_unknown_fs(
            w,
            ops.iter().copied().filter(|o| o.workload == w),
            &KNOWN_FS,
            warnings,
        );
    }
    let observed: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| op.is_ok() && ["live", "routes", "presence-view"].contains(&op.f.as_str()))
        .collect();
    if observed.is_empty() {
        if !ops.is_empty() {
            warnings.push(
                "ghosts: bind/sessions operations but no live, routes or presence-view observation: nothing to check"
                    .into(),
            );
        }
        return GhostReport {
            valid: Verdict::Valid,
            ops: 0,
            detail: None,
        };
    }
    let live = last_live(&observed);
    let union: BTreeSet<&String> = live.values().flat_map(|(_, j)| j).collect();
    let mut detail = GhostDetail {
        live: union.len(),
        routes: Vec::new(),
        presence: Vec::new(),
        ghost_count: 0,
        missing_count: 0,
        note: None,
    };
    let mut malformed = 0;
    for op in &observed {
        let r = op.returned();
        let at_ms = ms(op.complete.map_or(op.invoke.time, |s| s.time));
        match op.f.as_str() {
            "routes" => {
                let Some(routes) = list_field(r, "full_jids") else {
                    malformed += 1;
                    continue;
                };
                let node = field(r, "node")
                    .or_else(|| op.node.clone())
                    .unwrap_or_else(|| "?".into());
                let routes: BTreeSet<&String> = routes.iter().collect();
                let own: BTreeSet<&String> = match live.get(&op.workload) {
                    Some((_, jids)) => jids.iter().collect(),
                    None => union.clone(),
                };
                detail.routes.push(RouteCheck {
                    node,
                    workload: op.workload.clone(),
                    at_ms,
                    routes: routes.len(),
                    ghosts: routes.difference(&union).map(|s| s.to_string()).collect(),
                    missing: own.difference(&routes).map(|s| s.to_string()).collect(),
                });
            }
            "presence-view" => {
                let (Some(watcher), Some(available)) =
                    (field(r, "watcher"), list_field(r, "available"))
                else {
                    malformed += 1;
                    continue;
                };
                let ghosts: BTreeSet<&String> =
                    available.iter().filter(|j| !union.contains(j)).collect();
                detail.presence.push(PresenceCheck {
                    watcher,
                    at_ms,
                    available: available.len(),
                    ghosts: ghosts.into_iter().cloned().collect(),
                });
            }
            _ => {}
        }
    }
    if malformed > 0 {
        warnings.push(format!(
            "ghosts: {malformed} observation(s) without the expected value fields ignored"
        ));
    }
    detail.ghost_count = detail.routes.iter().map(|r| r.ghosts.len()).sum::<usize>()
        + detail
            .presence
            .iter()
            .map(|p| p.ghosts.len())
            .sum::<usize>();
    detail.missing_count = detail.routes.iter().map(|r| r.missing.len()).sum();
    let compared = !detail.routes.is_empty() || !detail.presence.is_empty();
    let valid = if compared && live.is_empty() {
        detail.note =
            Some("routes or presence observed, but no live set to compare them with".into());
        Verdict::Unknown
    } else if detail.ghost_count > 0 || detail.missing_count > 0 {
        Verdict::Invalid
    } else {
        Verdict::Valid
    };
    if !compared {
        detail.note = Some("no routes or presence-view observation: nothing compared".into());
    }
    GhostReport {
        valid,
        ops: observed.len(),
        detail: Some(detail),
    }
}

#[derive(Debug, Serialize)]
pub struct SingleSessionReport {
    pub valid: Verdict,
    pub ops: usize,
    #[serde(flatten)]
    pub detail: Option<SingleSessionDetail>,
}

#[derive(Debug, Serialize)]
pub struct SingleSessionDetail {
    /// Sessions bound `ok`.
    pub bound: usize,
    /// Of those, closed.
    pub closed: usize,
    /// Bound and never closed.
    pub open: usize,
    /// Full JIDs with more than one open session.
    pub violations: Vec<OpenSessions>,
    /// Full JIDs listed more than once in a `live` observation.
    pub live_duplicates: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct OpenSessions {
    pub full_jid: String,
    pub sessions: Vec<String>,
}

/// Checks that no full JID ends with two open sessions.
pub fn check_single_session(history: &History, warnings: &mut Vec<String>) -> SingleSessionReport {
    let ops: Vec<&Op> = session_ops(history)
        .into_iter()
        .filter(|op| {
            BIND_FS.contains(&op.f.as_str()) || ["closed", "live"].contains(&op.f.as_str())
        })
        .collect();
    if ops.is_empty() {
        return SingleSessionReport {
            valid: Verdict::Valid,
            ops: 0,
            detail: None,
        };
    }
    let mut bound: BTreeSet<(String, String)> = BTreeSet::new();
    let mut closed: BTreeSet<(String, String)> = BTreeSet::new();
    let mut live_duplicates = BTreeSet::new();
    let mut malformed = 0;
    for op in &ops {
        if !op.is_ok() {
            continue; // a bind of unknown outcome cannot be held against the server
        }
        match op.f.as_str() {
            "bind" | "connect" | "closed" => {
                match (either(op, "full_jid"), either(op, "session")) {
                    (Some(jid), Some(session)) => {
                        let set = if op.f == "closed" {
                            &mut closed
                        } else {
                            &mut bound
                        };
                        set.insert((jid, session));
                    }
                    _ => malformed += 1,
                }
            }
            "live" => {
                let Some(jids) = list_field(op.returned(), "full_jids") else {
                    malformed += 1;
                    continue;
                };
                let mut once = BTreeSet::new();
                for j in jids {
                    if !once.insert(j.clone()) {
                        live_duplicates.insert(j);
                    }
                }
            }
            _ => {}
        }
    }
    if malformed > 0 {
        warnings.push(format!(
            "single-session: {malformed} operation(s) without the expected value fields ignored"
        ));
    }
    let mut open: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    for (jid, session) in bound.difference(&closed) {
        open.entry(jid).or_default().push(session.clone());
    }
    let violations: Vec<OpenSessions> = open
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(jid, s)| OpenSessions {
            full_jid: jid.to_string(),
            sessions: s.clone(),
        })
        .collect();
    let valid = if violations.is_empty() && live_duplicates.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    SingleSessionReport {
        valid,
        ops: ops.len(),
        detail: Some(SingleSessionDetail {
            bound: bound.len(),
            closed: bound.intersection(&closed).count(),
            open: open.values().map(Vec::len).sum(),
            violations,
            live_duplicates: live_duplicates.into_iter().collect(),
        }),
    }
}
