//! The `chorus-chaos-check` binary: results.json, summary line and exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::HistoryBuilder;
use serde_json::{json, Value};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chorus-chaos-check"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn lost_write_history() -> String {
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg_op(2, "ok", "write", "k1", json!("b"))
        .reg_op(3, "ok", "read", "k1", json!("a"))
        .nemesis("start", "partition-halves")
        .nemesis("stop", "partition-halves");
    h.text()
}

#[test]
fn invalid_history_writes_results_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    std::fs::write(&history, lost_write_history()).unwrap();
    let out = dir.path().join("out.json");
    let output = run(&[history.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    assert!(stdout.starts_with("valid=false"), "{stdout}");
    let results = read_json(&out);
    assert_eq!(results["valid"], json!(false));
    assert_eq!(
        results["checkers"]["linearizable"]["keys"]["k1"]["valid"],
        json!(false)
    );
    assert_eq!(results["checkers"]["availability"]["valid"], json!(true));
    assert!(results["warnings"].as_array().unwrap().is_empty());
}

#[test]
fn valid_history_exits_0_and_writes_results_beside_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg_op(2, "ok", "read", "k1", json!("a"))
        .op(1, "ok", "queue", "enqueue", json!(1)); // unknown workload: a warning
    std::fs::write(&history, h.text()).unwrap();
    let output = run(&[history.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let results = read_json(&dir.path().join("results.json"));
    assert_eq!(results["valid"], json!(true));
    let warnings = results["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].as_str().unwrap().contains("queue"));
}

#[test]
fn time_limit_of_zero_exits_2_for_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"))
        .reg_op(2, "ok", "read", "k1", json!("a"));
    std::fs::write(&history, h.text()).unwrap();
    let output = run(&[history.to_str().unwrap(), "--time-limit-secs", "0"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        read_json(&dir.path().join("results.json"))["valid"],
        json!("unknown")
    );
}

#[test]
fn unreadable_history_exits_3_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    std::fs::write(&history, "{\"time\": 1}\n{\"time\": 2}\n").unwrap();
    for path in [history.clone(), dir.path().join("missing.jsonl")] {
        let output = run(&[path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!dir.path().join("results.json").exists());
    }
}
