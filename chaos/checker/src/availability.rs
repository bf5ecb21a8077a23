//! Availability, for information only (it never makes a run invalid).
//!
//! Faults come from the nemesis's `start` / `stop` events (value
//! `{"nemesis": name, "detail"}`, or `{"name", "detail"}`): a fault is active
//! from its start's invocation to its stop's completion. A `stop` closes the
//! latest open fault of its name, or else every open fault (as `heal-all` does);
//! a fault never stopped lasts to the end of the history.
//!
//! For each workload: the share of completed operations that were `ok`, among
//! those that completed while a fault was active and among the others, also per
//! node (so the majority side of a partition can be read off); and for each
//! stop, how long until the workload's next `ok` completion.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::history::{field, ms, History, Op, NEMESIS};
use crate::verdict::Verdict;

#[derive(Debug, Serialize)]
pub struct AvailabilityReport {
    /// Always `true`: availability is informational.
    pub valid: Verdict,
    pub informational: bool,
    /// Completed client operations.
    pub ops: usize,
    #[serde(flatten)]
    pub detail: Option<AvailabilityDetail>,
}

#[derive(Debug, Serialize)]
pub struct AvailabilityDetail {
    pub faults: Vec<Fault>,
    pub workloads: BTreeMap<String, WorkloadAvailability>,
    pub recovery: Vec<Recovery>,
}

#[derive(Debug, Serialize)]
pub struct Fault {
    pub name: String,
    pub start_ms: f64,
    /// `None`: never stopped.
    pub stop_ms: Option<f64>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
    #[serde(skip)]
    start: u64,
    #[serde(skip)]
    stop: Option<u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct WorkloadAvailability {
    pub during_faults: Share,
    pub outside_faults: Share,
}

#[derive(Debug, Default, Serialize)]
pub struct Share {
    pub ok: usize,
    pub total: usize,
    /// `ok / total`, `None` when nothing completed.
    pub share: Option<f64>,
    pub by_node: BTreeMap<String, NodeShare>,
}

#[derive(Debug, Default, Serialize)]
pub struct NodeShare {
    pub ok: usize,
    pub total: usize,
    pub share: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Recovery {
    pub fault: String,
    pub stop_ms: f64,
    /// Per workload: from the stop to its next `ok` completion (`None`: none came).
    pub recovery_ms: BTreeMap<String, Option<f64>>,
}

fn share(ok: usize, total: usize) -> Option<f64> {
    (total > 0).then(|| (ok as f64 / total as f64 * 10_000.0).round() / 10_000.0)
}

/// The faults the nemesis injected, in order of start, and its stops (name, time).
fn faults(history: &History) -> (Vec<Fault>, Vec<(String, u64)>) {
    let mut faults: Vec<Fault> = Vec::new();
    let mut stops = Vec::new();
    for op in history.workload(NEMESIS) {
        let name = ["nemesis", "name"]
            .iter()
            .find_map(|n| field(op.returned(), n).or_else(|| field(&op.value, n)))
            .unwrap_or_else(|| "?".into());
        match op.f.as_str() {
            "start" => {
                let detail = op
                    .value
                    .get("detail")
                    .or_else(|| op.returned().get("detail"))
                    .cloned()
                    .unwrap_or(Value::Null);
                faults.push(Fault {
                    name,
                    start_ms: ms(op.invoke.time),
                    stop_ms: None,
                    detail,
                    start: op.invoke.time,
                    stop: None,
                });
            }
            "stop" => {
                let end = op.complete_time().unwrap_or(op.invoke.time);
                let same_name = faults
                    .iter()
                    .rposition(|f| f.stop.is_none() && f.name == name);
                for (i, f) in faults.iter_mut().enumerate() {
                    if f.stop.is_none() && same_name.is_none_or(|s| s == i) {
                        f.stop = Some(end);
                        f.stop_ms = Some(ms(end));
                    }
                }
                stops.push((name, end));
            }
            _ => {}
        }
    }
    (faults, stops)
}

/// Computes availability during and outside faults, and recovery after each stop.
pub fn check(history: &History) -> AvailabilityReport {
    let (faults, stops) = faults(history);
    let client_ops: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| op.workload != NEMESIS && !op.observation)
        .collect();
    let completed: Vec<(&Op, u64)> = client_ops
        .iter()
        .filter_map(|op| op.complete_time().map(|t| (*op, t)))
        .collect();
    if completed.is_empty() && faults.is_empty() {
        return AvailabilityReport {
            valid: Verdict::Valid,
            informational: true,
            ops: 0,
            detail: None,
        };
    }
    let active = |t: u64| {
        faults
            .iter()
            .any(|f| f.start <= t && t <= f.stop.unwrap_or(history.end_time))
    };
    let mut workloads: BTreeMap<String, WorkloadAvailability> = BTreeMap::new();
    for op in &client_ops {
        workloads.entry(op.workload.clone()).or_default();
    }
    for &(op, t) in &completed {
        let w = workloads.entry(op.workload.clone()).or_default();
        let s = if active(t) {
            &mut w.during_faults
        } else {
            &mut w.outside_faults
        };
        let ok = usize::from(op.is_ok());
        s.ok += ok;
        s.total += 1;
        let n = s
            .by_node
            .entry(op.node.clone().unwrap_or_else(|| "?".into()))
            .or_default();
        n.ok += ok;
        n.total += 1;
    }
    for w in workloads.values_mut() {
        for s in [&mut w.during_faults, &mut w.outside_faults] {
            s.share = share(s.ok, s.total);
            for n in s.by_node.values_mut() {
                n.share = share(n.ok, n.total);
            }
        }
    }
    let recovery = stops
        .iter()
        .map(|(name, stop)| (name, *stop))
        .map(|(name, stop)| Recovery {
            fault: name.clone(),
            stop_ms: ms(stop),
            recovery_ms: workloads
                .keys()
                .map(|w| {
                    let next_ok = completed
                        .iter()
                        .filter(|(op, t)| op.workload == *w && op.is_ok() && *t >= stop)
                        .map(|(_, t)| *t)
                        .min();
                    (w.clone(), next_ok.map(|t| ms(t - stop)))
                })
                .collect(),
        })
        .collect();
    AvailabilityReport {
        valid: Verdict::Valid,
        informational: true,
        ops: completed.len(),
        detail: Some(AvailabilityDetail {
            faults,
            workloads,
            recovery,
        }),
    }
}
