//! Ghost sessions, at most one session per full JID, and availability.

mod common;

use chorus_chaos_check::Verdict;
use common::{json_of, HistoryBuilder};
use serde_json::json;

fn live(h: &mut HistoryBuilder, workload: &str, jids: &[&str]) {
    h.op(50, "ok", workload, "live", json!({"full_jids": jids}));
}

fn routes(h: &mut HistoryBuilder, node: &str, jids: &[&str]) {
    h.op(
        51,
        "ok",
        "bind",
        "routes",
        json!({"node": node, "full_jids": jids}),
    );
}

#[test]
fn routing_tables_equal_to_the_live_streams_are_valid() {
    let mut h = HistoryBuilder::new();
    live(&mut h, "bind", &["a@x/r1", "b@x/r1"]);
    routes(&mut h, "n1", &["b@x/r1", "a@x/r1"]);
    routes(&mut h, "n2", &["a@x/r1", "b@x/r1"]);
    h.op(
        52,
        "ok",
        "bind",
        "presence-view",
        json!({"watcher": "w@x", "available": ["a@x/r1"]}),
    );
    let report = h.check();
    assert_eq!(
        report.checkers.ghosts.valid,
        Verdict::Valid,
        "{:#}",
        json_of(&report)
    );
    assert_eq!(report.checkers.ghosts.ops, 4);
    assert_eq!(report.valid, Verdict::Valid);
}

#[test]
fn route_without_a_live_stream_is_a_ghost() {
    let mut h = HistoryBuilder::new();
    live(&mut h, "bind", &["a@x/r1"]);
    routes(&mut h, "n1", &["a@x/r1"]);
    routes(&mut h, "n3", &["a@x/r1", "dead@x/r9"]);
    let report = h.check();
    let g = report.checkers.ghosts.detail.as_ref().unwrap();
    assert_eq!(g.ghost_count, 1);
    assert_eq!(g.routes[1].node, "n3");
    assert_eq!(g.routes[1].ghosts, vec!["dead@x/r9"]);
    assert_eq!(report.checkers.ghosts.valid, Verdict::Invalid);
    assert_eq!(report.valid, Verdict::Invalid);
}

#[test]
fn live_stream_without_a_route_is_missing() {
    let mut h = HistoryBuilder::new();
    live(&mut h, "bind", &["a@x/r1", "b@x/r1"]);
    routes(&mut h, "n1", &["a@x/r1"]);
    let report = h.check();
    let g = report.checkers.ghosts.detail.as_ref().unwrap();
    assert_eq!(g.routes[0].missing, vec!["b@x/r1"]);
    assert_eq!(report.checkers.ghosts.valid, Verdict::Invalid);
}

#[test]
fn contact_seeing_a_dead_session_available_is_a_ghost() {
    let mut h = HistoryBuilder::new();
    live(&mut h, "sessions", &["a@x/r1"]);
    routes(&mut h, "n1", &["a@x/r1"]);
    h.op(
        52,
        "ok",
        "sessions",
        "presence-view",
        json!({"watcher": "w@x", "available": ["a@x/r1", "a@x/gone"]}),
    );
    let report = h.check();
    let g = report.checkers.ghosts.detail.as_ref().unwrap();
    assert_eq!(g.presence[0].ghosts, vec!["a@x/gone"]);
    assert_eq!(report.checkers.ghosts.valid, Verdict::Invalid);
}

#[test]
fn only_the_last_live_set_counts_and_workloads_are_united() {
    let mut h = HistoryBuilder::new();
    live(&mut h, "bind", &["a@x/r1", "old@x/r1"]);
    live(&mut h, "bind", &["a@x/r1"]);
    live(&mut h, "sessions", &["s@x/r1"]);
    routes(&mut h, "n1", &["a@x/r1", "s@x/r1"]);
    assert_eq!(h.check().checkers.ghosts.valid, Verdict::Valid);
}

#[test]
fn routes_without_any_live_set_are_unknown() {
    let mut h = HistoryBuilder::new();
    routes(&mut h, "n1", &["a@x/r1"]);
    assert_eq!(h.check().checkers.ghosts.valid, Verdict::Unknown);
}

fn bind(h: &mut HistoryBuilder, p: i64, kind: &str, jid: &str, session: &str) {
    let v = json!({"full_jid": jid, "session": session});
    h.op(p, "invoke", "bind", "bind", v.clone())
        .op(p, kind, "bind", "bind", v);
}

#[test]
fn two_open_sessions_for_one_full_jid_are_invalid() {
    let mut h = HistoryBuilder::new();
    bind(&mut h, 1, "ok", "a@x/r1", "s1");
    bind(&mut h, 2, "ok", "a@x/r1", "s2");
    let report = h.check();
    let s = report.checkers.single_session.detail.as_ref().unwrap();
    assert_eq!(s.violations.len(), 1);
    assert_eq!(s.violations[0].full_jid, "a@x/r1");
    assert_eq!(s.violations[0].sessions, vec!["s1", "s2"]);
    assert_eq!(report.checkers.single_session.valid, Verdict::Invalid);
    assert_eq!(
        json_of(&report)["checkers"]["single-session"]["valid"],
        json!(false)
    );
}

#[test]
fn a_session_replaced_after_closing_the_old_one_is_valid() {
    let mut h = HistoryBuilder::new();
    bind(&mut h, 1, "ok", "a@x/r1", "s1");
    bind(&mut h, 2, "ok", "a@x/r1", "s2");
    bind(&mut h, 3, "info", "a@x/r1", "s3"); // unknown outcome: not held against the server
    bind(&mut h, 4, "fail", "a@x/r1", "s4");
    h.op(
        60,
        "ok",
        "bind",
        "closed",
        json!({"full_jid": "a@x/r1", "session": "s1", "reason": "conflict"}),
    );
    let report = h.check();
    let s = report.checkers.single_session.detail.as_ref().unwrap();
    assert_eq!((s.bound, s.closed, s.open), (2, 1, 1));
    assert_eq!(report.checkers.single_session.valid, Verdict::Valid);
}

#[test]
fn live_set_listing_a_full_jid_twice_is_invalid() {
    let mut h = HistoryBuilder::new();
    live(&mut h, "bind", &["a@x/r1", "a@x/r1"]);
    let report = h.check();
    let s = report.checkers.single_session.detail.as_ref().unwrap();
    assert_eq!(s.live_duplicates, vec!["a@x/r1"]);
    assert_eq!(report.checkers.single_session.valid, Verdict::Invalid);
}

#[test]
fn availability_splits_operations_by_fault_and_measures_recovery() {
    let mut h = HistoryBuilder::new();
    h.at(0).reg_op(1, "ok", "write", "k", json!("a")); // completes at 1 ms, no fault
    h.at(10).nemesis("start", "partition-halves");
    h.at(20).reg_op(1, "fail", "write", "k", json!("b")); // during the fault
    h.at(22).reg_op(2, "ok", "read", "k", json!("a")); // during the fault
    h.at(30).nemesis("stop", "partition-halves");
    h.at(40).reg_op(1, "fail", "write", "k", json!("c"));
    h.at(45).reg_op(1, "ok", "write", "k", json!("d")); // completes at 46 ms: 16 ms after the stop
    let report = h.check();
    assert_eq!(
        report.valid,
        Verdict::Valid,
        "availability never makes a run invalid"
    );
    let a = report.checkers.availability.detail.as_ref().unwrap();
    assert_eq!(a.faults.len(), 1);
    assert_eq!(
        (a.faults[0].start_ms, a.faults[0].stop_ms),
        (10.0, Some(30.0))
    );
    let reg = &a.workloads["register"];
    assert_eq!((reg.during_faults.ok, reg.during_faults.total), (1, 2));
    assert_eq!(reg.during_faults.share, Some(0.5));
    assert_eq!((reg.outside_faults.ok, reg.outside_faults.total), (2, 3));
    assert_eq!(reg.during_faults.by_node["n1"].total, 2);
    assert_eq!(a.recovery.len(), 1);
    assert_eq!(a.recovery[0].recovery_ms["register"], Some(16.0));
}
