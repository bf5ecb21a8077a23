//! Set-full checkers (after Jepsen's `set-full`): every acknowledged item must
//! be seen at the end, once, and nothing may be seen that was never added.
//!
//! - `messages`: `send` operations (`{"from", "to", "id"}`), `recv`
//!   observations (`{"to", "id"}`) and `final-read`s (`{"user", "ids"}`, what the
//!   recipient's final login received, offline messages included).
//! - `roster`: `add` operations (`{"user", "item"}`), a grow-only set per user,
//!   and `final-read`s (`{"user", "items"}`).
//!
//! An acknowledged item that was not seen counts as lost only if its recipient
//! (or roster owner) has a final read; otherwise it is *unverified*, and the
//! verdict is `unknown` rather than `false`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::history::{bare, field, list_field, ms, warn_unknown_fs, History, Op, Outcome};
use crate::verdict::Verdict;

/// How the operations that add items ended.
#[derive(Debug, Default, Serialize)]
pub struct OutcomeCounts {
    pub ok: usize,
    /// `info` or never completed: may or may not have happened.
    pub info: usize,
    pub fail: usize,
}

impl OutcomeCounts {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info | Outcome::Open => self.info += 1,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MessagesReport {
    pub valid: Verdict,
    pub ops: usize,
    #[serde(flatten)]
    pub detail: Option<MessagesDetail>,
}

#[derive(Debug, Serialize)]
pub struct MessagesDetail {
    pub sent: OutcomeCounts,
    /// Acknowledged messages seen by their recipient.
    pub delivered: usize,
    /// Acknowledged, and seen neither live nor in the recipient's final read.
    pub lost: Vec<String>,
    /// Seen more than once by the same recipient account.
    pub duplicated: Vec<Duplicate>,
    /// Seen, but never sent.
    pub unexpected: Vec<String>,
    /// Acknowledged, not seen live, and the recipient has no final read.
    pub unverified: Vec<String>,
    /// Sends of unknown outcome that were seen (fine either way).
    pub info_delivered: usize,
    /// Sends the server refused, seen anyway (informational).
    pub delivered_after_fail: Vec<String>,
    /// Seen by an account other than the one addressed (informational: carbons land here).
    pub misdelivered: Vec<Misdelivery>,
    pub final_reads: usize,
    /// From the send's invocation to the first time its recipient saw it.
    pub latency_ms: Option<Latency>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Duplicate {
    pub id: String,
    pub recipient: String,
    pub count: usize,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Misdelivery {
    pub id: String,
    pub seen_by: String,
    pub sent_to: String,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: usize,
    pub median: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut nanos: Vec<u64>) -> Option<Latency> {
        if nanos.is_empty() {
            return None;
        }
        nanos.sort_unstable();
        let n = nanos.len();
        let median = if n % 2 == 1 {
            nanos[n / 2] as f64
        } else {
            (nanos[n / 2 - 1] as f64 + nanos[n / 2] as f64) / 2.0
        };
        Some(Latency {
            count: n,
            median: ms(median.round() as u64),
            max: ms(nanos[n - 1]),
        })
    }
}

/// Checks the `messages` workload.
pub fn check_messages(history: &History, warnings: &mut Vec<String>) -> MessagesReport {
    let ops: Vec<&Op> = history.workload("messages").collect();
    warn_unknown_fs(
        "messages",
        ops.iter().copied(),
        &["send", "recv", "final-read"],
        warnings,
    );
    if ops.is_empty() {
        return MessagesReport {
            valid: Verdict::Valid,
            ops: 0,
            detail: None,
        };
    }
    let mut malformed = 0;
    let mut sent = OutcomeCounts::default();
    // id -> (recipient account, the send)
    let mut sends: BTreeMap<String, (String, &Op)> = BTreeMap::new();
    // (recipient account, id) -> times seen
    let mut seen: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let mut final_read_users = BTreeSet::new();
    let mut final_reads = 0;
    for op in &ops {
        match op.f.as_str() {
            "send" if !op.observation => {
                sent.count(op.outcome);
                match (field(&op.value, "id"), field(&op.value, "to")) {
                    (Some(id), Some(to)) => {
                        if sends
                            .insert(id.clone(), (bare(&to).to_string(), op))
                            .is_some()
                        {
                            warnings.push(format!("messages: id {id} sent more than once"));
                        }
                    }
                    _ => malformed += 1,
                }
            }
            "recv" if op.is_ok() => {
                let r = op.returned();
                match (field(r, "id"), field(r, "to"), op.complete_time()) {
                    (Some(id), Some(to), Some(t)) => {
                        seen.entry((bare(&to).to_string(), id)).or_default().push(t)
                    }
                    _ => malformed += 1,
                }
            }
            "final-read" if op.is_ok() => {
                let r = op.returned();
                let user = field(r, "user").or_else(|| field(&op.value, "user"));
                match (user, list_field(r, "ids"), op.complete_time()) {
                    (Some(user), Some(ids), Some(t)) => {
                        final_reads += 1;
                        let user = bare(&user).to_string();
                        for id in ids {
                            seen.entry((user.clone(), id)).or_default().push(t);
                        }
                        final_read_users.insert(user);
                    }
                    _ => malformed += 1,
                }
            }
            _ => {}
        }
    }
    if malformed > 0 {
        warnings.push(format!(
            "messages: {malformed} operation(s) without the expected value fields ignored"
        ));
    }

    let mut detail = MessagesDetail {
        sent,
        delivered: 0,
        lost: Vec::new(),
        duplicated: Vec::new(),
        unexpected: Vec::new(),
        unverified: Vec::new(),
        info_delivered: 0,
        delivered_after_fail: Vec::new(),
        misdelivered: Vec::new(),
        final_reads,
        latency_ms: None,
    };
    let mut latencies = Vec::new();
    for (id, (to, send)) in &sends {
        let times = seen.get(&(to.clone(), id.clone()));
        match (send.outcome, times) {
            (Outcome::Ok, Some(times)) => {
                detail.delivered += 1;
                let first = times.iter().copied().min().unwrap_or(send.invoke.time);
                latencies.push(first.saturating_sub(send.invoke.time));
            }
            (Outcome::Ok, None) if final_read_users.contains(to) => detail.lost.push(id.clone()),
            (Outcome::Ok, None) => detail.unverified.push(id.clone()),
            (Outcome::Info | Outcome::Open, Some(_)) => detail.info_delivered += 1,
            (Outcome::Fail, Some(_)) => detail.delivered_after_fail.push(id.clone()),
            _ => {}
        }
    }
    for ((recipient, id), times) in &seen {
        if times.len() > 1 {
            detail.duplicated.push(Duplicate {
                id: id.clone(),
                recipient: recipient.clone(),
                count: times.len(),
            });
        }
        match sends.get(id) {
            None => detail.unexpected.push(id.clone()),
            Some((to, _)) if to != recipient => detail.misdelivered.push(Misdelivery {
                id: id.clone(),
                seen_by: recipient.clone(),
                sent_to: to.clone(),
            }),
            Some(_) => {}
        }
    }
    detail.unexpected.sort();
    detail.unexpected.dedup();
    detail.latency_ms = Latency::of(latencies);

    let valid = if !detail.lost.is_empty()
        || !detail.duplicated.is_empty()
        || !detail.unexpected.is_empty()
    {
        Verdict::Invalid
    } else if !detail.unverified.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    MessagesReport {
        valid,
        ops: ops.len(),
        detail: Some(detail),
    }
}

#[derive(Debug, Serialize)]
pub struct RosterReport {
    pub valid: Verdict,
    pub ops: usize,
    #[serde(flatten)]
    pub detail: Option<RosterDetail>,
}

#[derive(Debug, Serialize)]
pub struct RosterDetail {
    pub users: usize,
    pub adds: OutcomeCounts,
    pub final_reads: usize,
    /// Acknowledged adds absent from a final read of their user.
    pub lost: Vec<UserItem>,
    /// Items read that were never added.
    pub unexpected: Vec<UserItem>,
    /// Items listed twice in one final read.
    pub duplicated: Vec<UserItem>,
    /// Acknowledged adds of a user who has no final read.
    pub unverified: Vec<UserItem>,
    /// Adds of unknown outcome that were read (fine either way).
    pub info_present: usize,
    /// Adds the server refused, read anyway (informational).
    pub present_after_fail: Vec<UserItem>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UserItem {
    pub user: String,
    pub item: String,
}

/// Checks the `roster` workload.
pub fn check_roster(history: &History, warnings: &mut Vec<String>) -> RosterReport {
    let ops: Vec<&Op> = history.workload("roster").collect();
    warn_unknown_fs(
        "roster",
        ops.iter().copied(),
        &["add", "final-read"],
        warnings,
    );
    if ops.is_empty() {
        return RosterReport {
            valid: Verdict::Valid,
            ops: 0,
            detail: None,
        };
    }
    let mut malformed = 0;
    let mut adds = OutcomeCounts::default();
    // (user, item) -> outcomes of its adds
    let mut attempts: BTreeMap<UserItem, Vec<Outcome>> = BTreeMap::new();
    let mut reads: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for op in &ops {
        match op.f.as_str() {
            "add" => {
                adds.count(op.outcome);
                match (field(&op.value, "user"), field(&op.value, "item")) {
                    (Some(user), Some(item)) => attempts
                        .entry(UserItem {
                            user: bare(&user).to_string(),
                            item: bare(&item).to_string(),
                        })
                        .or_default()
                        .push(op.outcome),
                    _ => malformed += 1,
                }
            }
            "final-read" if op.is_ok() => {
                let r = op.returned();
                let user = field(r, "user").or_else(|| field(&op.value, "user"));
                match (user, list_field(r, "items")) {
                    (Some(user), Some(items)) => reads
                        .entry(bare(&user).to_string())
                        .or_default()
                        .push(items.iter().map(|i| bare(i).to_string()).collect()),
                    _ => malformed += 1,
                }
            }
            _ => {}
        }
    }
    if malformed > 0 {
        warnings.push(format!(
            "roster: {malformed} operation(s) without the expected value fields ignored"
        ));
    }
    let users: BTreeSet<&String> = attempts
        .keys()
        .map(|k| &k.user)
        .chain(reads.keys())
        .collect();
    let mut detail = RosterDetail {
        users: users.len(),
        adds,
        final_reads: reads.values().map(Vec::len).sum(),
        lost: Vec::new(),
        unexpected: Vec::new(),
        duplicated: Vec::new(),
        unverified: Vec::new(),
        info_present: 0,
        present_after_fail: Vec::new(),
    };
    for (ui, outcomes) in &attempts {
        let user_reads = reads.get(&ui.user);
        let acknowledged = outcomes.contains(&Outcome::Ok);
        let present_in = |r: &Vec<String>| r.contains(&ui.item);
        match user_reads {
            None if acknowledged => detail.unverified.push(ui.clone()),
            Some(rs) if acknowledged && !rs.iter().all(present_in) => detail.lost.push(ui.clone()),
            Some(rs) if !acknowledged && rs.iter().any(present_in) => {
                if outcomes.iter().any(|o| o.indeterminate()) {
                    detail.info_present += 1;
                } else {
                    detail.present_after_fail.push(ui.clone());
                }
            }
            _ => {}
        }
    }
    for (user, rs) in &reads {
        for r in rs {
            let mut once = BTreeSet::new();
            for item in r {
                let ui = UserItem {
                    user: user.clone(),
                    item: item.clone(),
                };
                if !attempts.contains_key(&ui) {
                    detail.unexpected.push(ui.clone());
                }
                if !once.insert(item) {
                    detail.duplicated.push(ui);
                }
            }
        }
    }
    for list in [&mut detail.unexpected, &mut detail.duplicated] {
        list.sort();
        list.dedup();
    }
    let valid = if !detail.lost.is_empty()
        || !detail.unexpected.is_empty()
        || !detail.duplicated.is_empty()
    {
        Verdict::Invalid
    } else if !detail.unverified.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    RosterReport {
        valid,
        ops: ops.len(),
        detail: Some(detail),
    }
}
