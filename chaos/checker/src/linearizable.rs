//! Linearizability of the `register` workload, one key at a time.
//!
//! Keys are independent registers (Jepsen's "independent" idea), so each key's
//! operations are checked on their own with stateright's
//! `LinearizabilityTester` against [`CasRegister`], under a time limit: a key
//! whose search needs longer is `unknown`, never `true`.
//!
//! How the history is fed to the tester:
//! - `fail` operations did not happen and are left out (Jepsen's convention);
//! - `info` (and never-completed) writes and cas complete at the end of the
//!   history with an unknown return: the register may apply them at any point
//!   after their invocation, or never (see [`crate::register`]); `info` reads
//!   constrain nothing and are left out;
//! - a process whose operation ended `info` continues as a new tester thread;
//! - invocations and completions are fed in real-time order (`time`, then file order).
//!
//! Before the search, writes and cas of unknown outcome that no completed
//! operation could have observed are dropped (see [`prune_unobservable`]): they
//! cannot change the verdict, and each one otherwise multiplies the search.
//!
//! When a key is not linearizable, the shortest non-linearizable prefix of its
//! history is searched for (within another time limit), and the operation whose
//! completion breaks it is reported with the operations around it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};

use crate::history::{ms, warn_unknown_fs, History, Op, OpView, Outcome, Process, Stamp};
use crate::register::{
    CasRegister, OpKind, RegisterOp, RegisterRet, SearchState, TimeLimitExceeded, ValueId, ABSENT,
};
use crate::verdict::Verdict;

/// Stack for the search thread: the tester recurses once per operation.
const SEARCH_STACK_BYTES: usize = 256 << 20;

/// Operations shown as evidence for a non-linearizable key, at most.
const MAX_EVIDENCE: usize = 20;

/// Completed writes/cas shown as the recent past of the culprit operation.
const RECENT_WRITES: usize = 3;

#[derive(Debug, Serialize)]
pub struct LinearizableReport {
    pub valid: Verdict,
    pub ops: usize,
    #[serde(flatten)]
    pub detail: Option<LinearizableDetail>,
}

#[derive(Debug, Serialize)]
pub struct LinearizableDetail {
    pub time_limit_secs: f64,
    pub keys: BTreeMap<String, KeyReport>,
}

/// The verdict on one key, and the evidence.
#[derive(Debug, Serialize)]
pub struct KeyReport {
    pub valid: Verdict,
    /// Operations of this key in the history.
    pub ops: usize,
    pub ok: usize,
    pub fail: usize,
    /// `info` or never completed.
    pub info: usize,
    /// Operations given to the tester.
    pub checked: usize,
    /// Writes/cas of unknown outcome left out because nothing could observe them.
    pub pruned: usize,
    /// Operations whose value could not be read (a cas without `[expect, new]`).
    pub malformed: usize,
    pub elapsed_ms: u64,
    /// Steps of the search (calls into the sequential spec).
    pub steps: u64,
    /// Steps cut short because they reached a configuration already explored.
    pub revisits: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<OpView>,
}

/// Whether operations of unknown outcome that nothing could observe are
/// dropped before the search (see [`prune_unobservable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownOps {
    Prune,
    Keep,
}

/// Checks every key of the `register` workload.
pub fn check(
    history: &History,
    time_limit: Duration,
    warnings: &mut Vec<String>,
) -> LinearizableReport {
    let ops: Vec<&Op> = history.workload("register").collect();
    warn_unknown_fs(
        "register",
        ops.iter().copied(),
        &["read", "write", "cas"],
        warnings,
    );
    if ops.is_empty() {
        return LinearizableReport {
            valid: Verdict::Valid,
            ops: 0,
            detail: None,
        };
    }
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let (mut keyless, mut observations) = (0, 0);
    for op in &ops {
        if op.observation {
            observations += 1;
        } else if let Some(key) = &op.key {
            by_key.entry(key).or_default().push(op);
        } else {
            keyless += 1;
        }
    }
    if keyless > 0 {
        warnings.push(format!(
            "register: {keyless} operation(s) without a key ignored"
        ));
    }
    if observations > 0 {
        warnings.push(format!(
            "register: {observations} completion(s) without an invocation ignored"
        ));
    }
    let mut keys = BTreeMap::new();
    for (key, key_ops) in by_key {
        let report = check_key(&key_ops, time_limit, UnknownOps::Prune);
        if report.malformed > 0 {
            warnings.push(format!(
                "register key {key}: {} cas operation(s) without [expect, new] ignored",
                report.malformed
            ));
        }
        keys.insert(key.to_string(), report);
    }
    LinearizableReport {
        valid: Verdict::combine(keys.values().map(|k| k.valid)),
        ops: ops.len(),
        detail: Some(LinearizableDetail {
            time_limit_secs: time_limit.as_secs_f64(),
            keys,
        }),
    }
}

/// An operation as the tester sees it.
#[derive(Clone, Debug)]
struct LinOp<'a> {
    src: &'a Op,
    kind: OpKind,
    /// `None`: the outcome is unknown (`info` or never completed).
    ret: Option<RegisterRet>,
    thread: usize,
}

/// Register values as small numbers; `null` is [`ABSENT`].
#[derive(Default)]
struct Interner(HashMap<String, ValueId>);

impl Interner {
    fn id(&mut self, v: &Value) -> ValueId {
        if v.is_null() {
            return ABSENT;
        }
        let next = self.0.len() as ValueId + 1;
        *self.0.entry(v.to_string()).or_insert(next)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventKind {
    Invoke,
    /// An `ok` completion.
    Return,
}

/// An invocation or an `ok` completion, in real time.
#[derive(Clone, Copy, Debug)]
struct Event {
    stamp: Stamp,
    kind: EventKind,
    /// Index into the key's `LinOp`s.
    op: usize,
}

#[derive(Debug)]
enum Search {
    Linearizable,
    NotLinearizable,
    TimedOut,
    /// The tester refused the history (e.g. a process with two operations in flight).
    Malformed(String),
}

/// Checks the operations of one key (all of them of the `register` workload,
/// in invocation order).
pub fn check_key(ops: &[&Op], time_limit: Duration, unknown_ops: UnknownOps) -> KeyReport {
    let mut report = KeyReport {
        valid: Verdict::Unknown,
        ops: ops.len(),
        ok: 0,
        fail: 0,
        info: 0,
        checked: 0,
        pruned: 0,
        malformed: 0,
        elapsed_ms: 0,
        steps: 0,
        revisits: 0,
        anomaly: None,
        evidence: Vec::new(),
    };
    let mut lin = Vec::new();
    let mut values = Interner::default();
    for &op in ops {
        match op.outcome {
            Outcome::Ok => report.ok += 1,
            Outcome::Fail => report.fail += 1,
            Outcome::Info | Outcome::Open => report.info += 1,
        }
        if op.outcome == Outcome::Fail {
            continue;
        }
        let ok = op.is_ok();
        let (kind, ret) = match op.f.as_str() {
            "read" if ok => (
                OpKind::Read,
                Some(RegisterRet::ReadOk(values.id(&op.result))),
            ),
            "read" => continue, // an unknown read constrains nothing
            "write" => (
                OpKind::Write(values.id(&op.value)),
                ok.then_some(RegisterRet::WriteOk),
            ),
            "cas" => match op.value.as_array().map(Vec::as_slice) {
                Some([expect, new]) => (
                    OpKind::Cas {
                        expect: values.id(expect),
                        new: values.id(new),
                    },
                    ok.then_some(RegisterRet::CasOk),
                ),
                _ => {
                    report.malformed += 1;
                    continue;
                }
            },
            _ => continue, // warned about by the caller
        };
        lin.push(LinOp {
            src: op,
            kind,
            ret,
            thread: 0,
        });
    }
    if unknown_ops == UnknownOps::Prune {
        report.pruned = prune_unobservable(&mut lin);
    }
    report.checked = lin.len();
    assign_threads(&mut lin);
    let events = events(&lin);

    let started = Instant::now();
    let (search, steps, revisits) = search(&lin, &events, started + time_limit);
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.steps = steps;
    report.revisits = revisits;
    match search {
        Search::Linearizable => report.valid = Verdict::Valid,
        Search::TimedOut => {
            report.anomaly = Some(format!(
                "time limit of {}s exceeded after {steps} search steps: not known to be linearizable",
                time_limit.as_secs_f64()
            ));
        }
        Search::Malformed(message) => {
            report.anomaly = Some(format!("the tester refused the history: {message}"));
        }
        Search::NotLinearizable => {
            report.valid = Verdict::Invalid;
            match explain(&lin, &events, time_limit) {
                Some(culprit) => {
                    report.anomaly = Some(format!(
                        "no linearization once {} completes",
                        describe(&lin[culprit])
                    ));
                    report.evidence = evidence(&lin, culprit);
                }
                None => {
                    report.anomaly = Some(
                        "no linearization of this key's history (the shortest failing prefix was not found within the time limit)"
                            .into(),
                    );
                }
            }
        }
    }
    report
}

/// Drops operations of unknown outcome that cannot change the verdict, until
/// none is left:
///
/// - a write or cas whose resulting value no completed read returned and no cas
///   expected: if a linearization applies it, the same linearization without it
///   (and without the unknown cas that did nothing while it held) is valid too,
///   because nothing read the value before the next write replaced it;
/// - a cas whose expected value neither is the initial `null` nor is written by
///   any other operation: it can never apply.
///
/// Returns how many were dropped.
fn prune_unobservable(lin: &mut Vec<LinOp>) -> usize {
    let before = lin.len();
    loop {
        let mut observed = HashSet::new();
        let mut producers: HashMap<ValueId, usize> = HashMap::new();
        for l in lin.iter() {
            match (l.kind, l.ret) {
                (OpKind::Read, Some(RegisterRet::ReadOk(v))) => {
                    observed.insert(v);
                }
                (OpKind::Write(v), _) => *producers.entry(v).or_default() += 1,
                (OpKind::Cas { expect, new }, _) => {
                    observed.insert(expect);
                    *producers.entry(new).or_default() += 1;
                }
                _ => {}
            }
        }
        let droppable = |l: &LinOp| {
            l.ret.is_none()
                && match l.kind {
                    OpKind::Write(v) => !observed.contains(&v),
                    OpKind::Cas { expect, new } => {
                        let others = producers.get(&expect).copied().unwrap_or(0)
                            - usize::from(new == expect);
                        !observed.contains(&new) || (expect != ABSENT && others == 0)
                    }
                    OpKind::Read => true,
                }
        };
        let n = lin.len();
        lin.retain(|l| !droppable(l));
        if lin.len() == n {
            break;
        }
    }
    before - lin.len()
}

/// Gives each operation a tester thread: its process's, or a fresh one after an
/// operation of the process whose outcome is unknown (it completes only at the end).
fn assign_threads(lin: &mut [LinOp]) {
    let mut current: HashMap<&Process, usize> = HashMap::new();
    let mut next = 0;
    for l in lin.iter_mut() {
        let thread = *current.entry(&l.src.process).or_insert_with(|| {
            next += 1;
            next - 1
        });
        l.thread = thread;
        if l.ret.is_none() {
            current.remove(&l.src.process);
        }
    }
}

/// Invocations and `ok` completions in real-time order.
fn events(lin: &[LinOp]) -> Vec<Event> {
    let mut events = Vec::with_capacity(lin.len() * 2);
    for (i, l) in lin.iter().enumerate() {
        events.push(Event {
            stamp: l.src.invoke,
            kind: EventKind::Invoke,
            op: i,
        });
        if let (Some(_), Some(stamp)) = (&l.ret, l.src.complete) {
            events.push(Event {
                stamp,
                kind: EventKind::Return,
                op: i,
            });
        }
    }
    events.sort_by_key(|e| e.stamp);
    events
}

/// Runs the tester on these events, then completes every operation still
/// pending with an unknown return; on a thread with a deep stack.
/// Returns the outcome, the steps taken and the revisits refused.
fn search(lin: &[LinOp], events: &[Event], deadline: Instant) -> (Search, u64, u64) {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("linearizability".into())
            .stack_size(SEARCH_STACK_BYTES)
            .spawn_scoped(scope, || run_tester(lin, events, deadline))
            .expect("cannot start the linearizability search thread")
            .join()
            .unwrap_or_else(|panic| resume_unwind(panic))
    })
}

fn run_tester(lin: &[LinOp], events: &[Event], deadline: Instant) -> (Search, u64, u64) {
    let shared = SearchState::new(deadline);
    let mut tester = LinearizabilityTester::new(CasRegister::new(lin.len(), shared.clone()));
    let op = |i: usize| RegisterOp {
        id: i as u32,
        kind: lin[i].kind,
    };
    let mut pending = vec![false; lin.len()];
    let mut fed = Ok(());
    for e in events {
        let l = &lin[e.op];
        fed = fed.and_then(|()| match (e.kind, l.ret) {
            (EventKind::Invoke, _) => {
                pending[e.op] = true;
                tester.on_invoke(l.thread, op(e.op)).map(|_| ())
            }
            (EventKind::Return, Some(ret)) => {
                pending[e.op] = false;
                tester.on_return(l.thread, ret).map(|_| ())
            }
            (EventKind::Return, None) => Ok(()),
        });
    }
    for (i, _) in pending.iter().enumerate().filter(|(_, p)| **p) {
        fed = fed.and_then(|()| {
            tester
                .on_return(lin[i].thread, RegisterRet::Unknown)
                .map(|_| ())
        });
    }
    if let Err(mut message) = fed {
        message.truncate(300);
        return (Search::Malformed(message), 0, 0);
    }
    let search = match catch_unwind(AssertUnwindSafe(|| tester.serialized_history())) {
        Ok(Some(_)) => Search::Linearizable,
        Ok(None) => Search::NotLinearizable,
        Err(payload) if payload.is::<TimeLimitExceeded>() => Search::TimedOut,
        Err(payload) => resume_unwind(payload),
    };
    (search, shared.steps(), shared.revisits())
}

/// Finds the operation whose completion first makes the history
/// non-linearizable (binary search over prefixes, in which operations still
/// pending have unknown outcomes: linearizability is prefix-closed).
/// `None` if the time limit runs out first.
fn explain(lin: &[LinOp], events: &[Event], time_limit: Duration) -> Option<usize> {
    let deadline = Instant::now() + time_limit;
    let (mut good, mut bad) = (0, events.len());
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        match search(lin, &events[..mid], deadline).0 {
            Search::Linearizable => good = mid,
            Search::NotLinearizable => bad = mid,
            Search::TimedOut | Search::Malformed(_) => return None,
        }
    }
    Some(events[bad - 1].op)
}

/// The culprit, the operations concurrent with it, and the last writes before it.
fn evidence(lin: &[LinOp], culprit: usize) -> Vec<OpView> {
    let x = lin[culprit].src;
    let x_end = x.complete.unwrap_or(x.invoke);
    let mut chosen: Vec<usize> = lin
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let (inv, end) = (l.src.invoke, l.src.complete);
            inv < x_end && end.is_none_or(|e| e > x.invoke)
        })
        .map(|(i, _)| i)
        .collect();
    let mut recent: Vec<usize> = lin
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.ret.is_some()
                && !matches!(l.kind, OpKind::Read)
                && l.src.complete.is_some_and(|c| c < x.invoke)
        })
        .map(|(i, _)| i)
        .collect();
    recent.sort_by_key(|&i| lin[i].src.complete);
    chosen.extend(recent.iter().rev().take(RECENT_WRITES));
    chosen.sort_by_key(|&i| lin[i].src.invoke);
    chosen.dedup();
    chosen.retain(|&i| i != culprit);
    chosen.truncate(MAX_EVIDENCE - 1);
    std::iter::once(culprit)
        .chain(chosen)
        .map(|i| lin[i].src.view())
        .collect()
}

fn describe(l: &LinOp) -> String {
    let op = l.src;
    let what = match l.kind {
        OpKind::Read => format!("read returning {}", op.result),
        OpKind::Write(_) => format!("write of {}", op.value),
        OpKind::Cas { .. } => format!("cas {} -> {}", op.value[0], op.value[1]),
    };
    let index = op.index.map(|i| format!(", index {i}")).unwrap_or_default();
    format!(
        "process {}'s {what} (invoked {} ms{index})",
        op.process,
        ms(op.invoke.time)
    )
}
