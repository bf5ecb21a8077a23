//! The register checker: linearizable histories pass, lost writes, stale reads
//! and impossible compare-and-sets fail, timeouts are unknown.

mod common;

use std::time::Duration;

use chorus_chaos_check::history::Op;
use chorus_chaos_check::linearizable::{check_key, KeyReport, UnknownOps};
use chorus_chaos_check::{History, Report, Verdict};
use common::{json_of, HistoryBuilder};
use serde_json::{json, Value};

fn key<'a>(report: &'a Report, key: &str) -> &'a KeyReport {
    &report.checkers.linearizable.detail.as_ref().unwrap().keys[key]
}

#[test]
fn concurrent_history_that_has_a_linearization_is_valid() {
    let mut h = HistoryBuilder::new();
    h.reg(1, "invoke", "write", "k1", json!("a"))
        .reg(2, "invoke", "read", "k1", Value::Null)
        .reg(3, "invoke", "cas", "k1", json!(["a", "b"]))
        .reg(2, "ok", "read", "k1", json!("b")) // the write and the cas both fit before it
        .reg(1, "ok", "write", "k1", json!("a"))
        .reg(3, "ok", "cas", "k1", json!(["a", "b"]))
        .reg_op(2, "ok", "read", "k1", json!("b"))
        .reg_op(1, "fail", "cas", "k1", json!(["a", "c"]))
        .reg_op(1, "ok", "write", "k1", json!("c"))
        .reg_op(3, "ok", "read", "k1", json!("c"));
    let report = h.check();
    assert_eq!(report.valid, Verdict::Valid, "{:#}", json_of(&report));
    let k1 = key(&report, "k1");
    assert_eq!((k1.ops, k1.ok, k1.fail, k1.info), (7, 6, 1, 0));
    assert!(k1.anomaly.is_none());
}

#[test]
fn lost_write_is_not_linearizable() {
    // "b" is acknowledged, then every later read still sees "a", with no write in between.
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg_op(2, "ok", "write", "k1", json!("b"))
        .reg_op(3, "ok", "read", "k1", json!("a"))
        .reg_op(1, "ok", "read", "k1", json!("a"));
    let report = h.check();
    assert_eq!(report.valid, Verdict::Invalid);
    assert_eq!(report.checkers.linearizable.valid, Verdict::Invalid);
    let k1 = key(&report, "k1");
    assert_eq!(k1.valid, Verdict::Invalid);
    let anomaly = k1.anomaly.as_deref().unwrap();
    assert!(anomaly.contains("read returning \"a\""), "{anomaly}");
    assert_eq!(k1.evidence[0].f, "read");
    assert!(
        k1.evidence.iter().any(|op| op.value == json!("b")),
        "the lost write is shown"
    );
}

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    // The write of "a" completes; a read invoked afterwards returns the previous value.
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg_op(2, "ok", "read", "k1", Value::Null)
        .reg_op(3, "ok", "read", "k1", json!("a"));
    let report = h.check();
    let k1 = key(&report, "k1");
    assert_eq!(k1.valid, Verdict::Invalid);
    assert!(k1
        .anomaly
        .as_deref()
        .unwrap()
        .contains("process 2's read returning null"));
}

#[test]
fn read_concurrent_with_a_write_may_return_either_value() {
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg(1, "invoke", "write", "k1", json!("b"))
        .reg_op(2, "ok", "read", "k1", json!("a"))
        .reg_op(3, "ok", "read", "k1", json!("b"))
        .reg(1, "ok", "write", "k1", json!("b"));
    assert_eq!(h.check().valid, Verdict::Valid);
}

#[test]
fn cas_that_succeeded_where_it_could_not_is_not_linearizable() {
    // Nobody ever wrote "x", yet a cas expecting "x" succeeded.
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg_op(2, "ok", "cas", "k1", json!(["x", "b"]));
    assert_eq!(key(&h.check(), "k1").valid, Verdict::Invalid);

    // Two cas from the same expected value cannot both succeed.
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg(2, "invoke", "cas", "k1", json!(["a", "b"]))
        .reg(3, "invoke", "cas", "k1", json!(["a", "c"]))
        .reg(2, "ok", "cas", "k1", json!(["a", "b"]))
        .reg(3, "ok", "cas", "k1", json!(["a", "c"]));
    assert_eq!(key(&h.check(), "k1").valid, Verdict::Invalid);
}

#[test]
fn info_write_that_must_have_taken_effect_is_accepted() {
    // The write of "b" timed out (info), but a later read sees "b": valid only if it happened.
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg(2, "invoke", "write", "k1", json!("b"))
        .reg(2, "info", "write", "k1", json!("b"))
        .reg_op(3, "ok", "read", "k1", json!("b"))
        .reg_op(2, "ok", "read", "k1", json!("b")); // the process goes on after its info
    let report = h.check();
    assert_eq!(report.valid, Verdict::Valid, "{:#}", json_of(&report));
    assert_eq!(key(&report, "k1").info, 1);
}

#[test]
fn info_write_may_also_not_have_taken_effect() {
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg(2, "invoke", "write", "k1", json!("b"))
        .reg_op(3, "ok", "read", "k1", json!("a"));
    // never completed: open to the end, like info
    assert_eq!(h.check().valid, Verdict::Valid);
}

#[test]
fn info_write_cannot_take_effect_before_it_was_invoked() {
    let mut h = HistoryBuilder::new();
    h.reg_op(3, "ok", "read", "k1", json!("b"))
        .reg(2, "invoke", "write", "k1", json!("b"))
        .reg(2, "info", "write", "k1", json!("b"));
    assert_eq!(h.check().valid, Verdict::Invalid);
}

#[test]
fn failed_write_did_not_happen() {
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "fail", "write", "k1", json!("a"))
        .reg_op(2, "ok", "read", "k1", json!("a"));
    assert_eq!(h.check().valid, Verdict::Invalid);
}

#[test]
fn keys_are_checked_independently() {
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg_op(2, "ok", "read", "k2", Value::Null)
        .reg_op(2, "ok", "write", "k2", json!("z"))
        .reg_op(3, "ok", "read", "k1", json!("z"));
    let report = h.check();
    assert_eq!(key(&report, "k2").valid, Verdict::Valid);
    assert_eq!(key(&report, "k1").valid, Verdict::Invalid);
    assert_eq!(report.valid, Verdict::Invalid);
}

#[test]
fn time_limit_of_zero_is_unknown_never_true() {
    let mut h = HistoryBuilder::new();
    for i in 0..6 {
        let v = json!(format!("v{i}"));
        h.reg(1, "invoke", "write", "k1", v.clone())
            .reg(2, "invoke", "read", "k1", Value::Null)
            .reg(1, "ok", "write", "k1", v.clone())
            .reg(2, "ok", "read", "k1", v);
    }
    assert_eq!(
        h.check().valid,
        Verdict::Valid,
        "valid with a real time limit"
    );
    let report = h.check_with_limit(Duration::ZERO);
    let k1 = key(&report, "k1");
    assert_eq!(k1.valid, Verdict::Unknown);
    assert!(k1.anomaly.as_deref().unwrap().contains("time limit"));
    assert_eq!(report.checkers.linearizable.valid, Verdict::Unknown);
    assert_eq!(report.valid, Verdict::Unknown);
    assert_eq!(json_of(&report)["valid"], json!("unknown"));
}

#[test]
fn long_key_is_checked_within_the_time_limit() {
    // 400 operations on one key by 4 processes, many of them concurrent.
    let mut h = HistoryBuilder::new();
    for i in 0..100 {
        let v = json!(i);
        h.reg(1, "invoke", "write", "k1", v.clone())
            .reg(2, "invoke", "read", "k1", Value::Null)
            .reg(3, "invoke", "cas", "k1", json!([i, i + 1000]))
            .reg(1, "ok", "write", "k1", v.clone())
            .reg(4, "invoke", "write", "k1", json!(format!("lost-{i}")))
            .reg(4, "info", "write", "k1", json!(format!("lost-{i}")))
            .reg(3, "ok", "cas", "k1", json!([i, i + 1000]))
            .reg(2, "ok", "read", "k1", json!(i + 1000));
    }
    let report = h.check_with_limit(Duration::from_secs(20));
    let k1 = key(&report, "k1");
    assert_eq!(k1.valid, Verdict::Valid, "{:#}", json_of(&report));
    assert_eq!(k1.ops, 400);
    assert_eq!(
        k1.pruned, 100,
        "unread info writes are left out of the search"
    );
}

// ---- generated histories -------------------------------------------------------------

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, from: &'a [Value]) -> &'a Value {
        &from[self.below(from.len() as u64) as usize]
    }
}

/// A history of a real atomic register: each operation takes effect at one
/// instant between its invocation and its completion; some end `info`
/// (before or after taking effect), some never complete.
fn atomic_register_history(rng: &mut Rng) -> HistoryBuilder {
    let ops = 5 + rng.below(9);
    atomic_register_history_of(rng, ops)
}

fn atomic_register_history_of(rng: &mut Rng, ops: u64) -> HistoryBuilder {
    let values = [json!("a"), json!("b"), json!("c")];
    let expects = [Value::Null, json!("a"), json!("b"), json!("c")];
    #[derive(Clone)]
    enum State {
        Idle,
        Invoked(&'static str, Value),
        Applied(&'static str, Value, &'static str, Value),
    }
    let mut h = HistoryBuilder::new();
    let mut register = Value::Null;
    let mut processes = vec![State::Idle; 3];
    let mut budget = ops;
    for _ in 0..60 {
        let p = rng.below(3) as usize;
        let pid = p as i64 + 1;
        processes[p] = match processes[p].clone() {
            State::Idle if budget > 0 => {
                budget -= 1;
                let (f, v) = match rng.below(3) {
                    0 => ("read", Value::Null),
                    1 => ("write", rng.pick(&values).clone()),
                    _ => ("cas", json!([rng.pick(&expects), rng.pick(&values)])),
                };
                h.reg(pid, "invoke", f, "k", v.clone());
                State::Invoked(f, v)
            }
            State::Idle => State::Idle,
            State::Invoked(f, v) if rng.below(10) == 0 => {
                h.reg(pid, "info", f, "k", v); // timed out before taking effect
                State::Idle
            }
            State::Invoked(f, v) => {
                let (kind, ret) = match f {
                    "read" => ("ok", register.clone()),
                    "write" => {
                        register = v.clone();
                        ("ok", v.clone())
                    }
                    _ if register == v[0] => {
                        register = v[1].clone();
                        ("ok", v.clone())
                    }
                    _ => ("fail", v.clone()),
                };
                State::Applied(f, v, kind, ret)
            }
            State::Applied(f, v, kind, ret) => {
                if rng.below(8) == 0 {
                    h.reg(pid, "info", f, "k", v); // took effect, but the client never heard
                } else {
                    h.reg(pid, kind, f, "k", ret);
                }
                State::Idle
            }
        };
    }
    h
}

fn key_ops(history: &History) -> Vec<&Op> {
    history.ops.iter().collect()
}

fn verdict(history: &History, unknown_ops: UnknownOps) -> Verdict {
    check_key(&key_ops(history), Duration::from_secs(20), unknown_ops).valid
}

#[test]
fn histories_of_an_atomic_register_are_linearizable() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for round in 0..200 {
        let h = atomic_register_history(&mut rng);
        let history = h.history();
        assert_eq!(
            verdict(&history, UnknownOps::Prune),
            Verdict::Valid,
            "round {round}:\n{}",
            h.text()
        );
    }
}

#[test]
fn pruning_unobservable_info_ops_never_changes_the_verdict() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let (mut invalid, mut pruned_some) = (0, 0);
    for round in 0..300 {
        let h = atomic_register_history(&mut rng);
        let history = corrupt(&mut rng, &h);
        let pruned = check_key(
            &key_ops(&history),
            Duration::from_secs(20),
            UnknownOps::Prune,
        );
        let kept = verdict(&history, UnknownOps::Keep);
        assert_ne!(kept, Verdict::Unknown);
        assert_eq!(pruned.valid, kept, "round {round}:\n{}", h.text());
        invalid += usize::from(kept == Verdict::Invalid);
        pruned_some += usize::from(pruned.pruned > 0);
    }
    assert!(
        invalid > 30,
        "the corruption produced only {invalid} invalid histories"
    );
    assert!(
        pruned_some > 30,
        "pruning happened in only {pruned_some} histories"
    );
}

/// Corrupts one completed read, most of the time.
fn corrupt(rng: &mut Rng, h: &HistoryBuilder) -> History {
    let mut lines: Vec<Value> = h
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reads: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i]["f"] == "read" && lines[i]["type"] == "ok")
        .collect();
    if !reads.is_empty() && rng.below(4) != 0 {
        let i = reads[rng.below(reads.len() as u64) as usize];
        lines[i]["value"] = rng
            .pick(&[Value::Null, json!("a"), json!("b"), json!("c")])
            .clone();
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    History::parse(&text).unwrap()
}

/// The definition, searched naively: some order of the operations respects
/// real time (an operation completed before another was invoked comes first)
/// and the register's semantics, containing every `ok` operation and any
/// subset of the `info` ones.
fn brute_force_linearizable(history: &History) -> bool {
    let ops: Vec<&Op> = history
        .ops
        .iter()
        .filter(|o| o.outcome != chorus_chaos_check::history::Outcome::Fail)
        .filter(|o| o.is_ok() || o.f != "read")
        .collect();
    fn go(ops: &[&Op], done: &mut [bool], value: &Value) -> bool {
        if ops.iter().zip(done.iter()).all(|(o, d)| *d || !o.is_ok()) {
            return true;
        }
        for i in 0..ops.len() {
            let ready = !done[i]
                && (0..ops.len()).all(|j| {
                    done[j]
                        || ops[j]
                            .complete
                            .is_none_or(|c| !ops[j].is_ok() || c >= ops[i].invoke)
                });
            if !ready {
                continue;
            }
            let op = ops[i];
            let next = match op.f.as_str() {
                "read" if op.result == *value => value.clone(),
                "read" => continue,
                "write" => op.value.clone(),
                _ if op.value[0] == *value => op.value[1].clone(),
                _ if op.is_ok() => continue,
                _ => value.clone(), // an info cas that did not apply
            };
            done[i] = true;
            if go(ops, done, &next) {
                return true;
            }
            done[i] = false;
        }
        false
    }
    go(&ops, &mut vec![false; ops.len()], &Value::Null)
}

#[test]
fn agrees_with_a_brute_force_search_of_the_definition() {
    let mut rng = Rng(0xfeed_beef_0123_4567);
    let mut invalid = 0;
    for round in 0..400 {
        let ops = 4 + rng.below(5);
        let h = atomic_register_history_of(&mut rng, ops);
        let history = corrupt(&mut rng, &h);
        let expected = if brute_force_linearizable(&history) {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        invalid += usize::from(expected == Verdict::Invalid);
        for unknown_ops in [UnknownOps::Prune, UnknownOps::Keep] {
            assert_eq!(
                verdict(&history, unknown_ops),
                expected,
                "round {round} ({unknown_ops:?}):\n{}",
                history
                    .ops
                    .iter()
                    .map(|o| format!("{o:?}\n"))
                    .collect::<String>()
            );
        }
    }
    assert!(invalid > 50, "only {invalid} invalid histories generated");
}
