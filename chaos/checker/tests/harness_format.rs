//! A history written by the harness's own writer (chaos/harness/history.py),
//! following the calls its workloads make: every checker reads it without a warning.
//! Regenerate the fixture when the harness's format changes.

use chorus_chaos_check::{check, History, Options, Verdict};

const FIXTURE: &str = include_str!("fixtures/harness-history.jsonl");

#[test]
fn harness_history_is_read_by_every_checker_without_warnings() {
    let history = History::parse(FIXTURE).unwrap();
    let report = check(&history, &Options::default());
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.valid, Verdict::Valid);
    let c = &report.checkers;
    for (name, ops) in [
        ("linearizable", c.linearizable.ops),
        ("messages", c.messages.ops),
        ("roster", c.roster.ops),
        ("ghosts", c.ghosts.ops),
        ("single-session", c.single_session.ops),
    ] {
        assert!(ops > 0, "{name} saw no operation");
    }
    let k0 = &c.linearizable.detail.as_ref().unwrap().keys["k0"];
    assert_eq!((k0.ok, k0.fail, k0.info), (4, 1, 1));
    let sessions = c.single_session.detail.as_ref().unwrap();
    assert_eq!((sessions.bound, sessions.closed, sessions.open), (3, 1, 2));
    let availability = c.availability.detail.as_ref().unwrap();
    assert_eq!(availability.faults.len(), 1);
    assert_eq!(availability.faults[0].name, "partition-halves");
    let stops: Vec<&str> = availability
        .recovery
        .iter()
        .map(|r| r.fault.as_str())
        .collect();
    assert_eq!(stops, ["partition-halves", "heal-all"]);
    assert_eq!(c.messages.detail.as_ref().unwrap().delivered, 2);
}

#[test]
fn harness_history_with_an_offline_message_missing_is_invalid() {
    let text = FIXTURE.replace(r#""ids":["m-0-2"]"#, r#""ids":[]"#);
    assert_ne!(text, FIXTURE);
    let report = check(&History::parse(&text).unwrap(), &Options::default());
    assert_eq!(
        report.checkers.messages.detail.as_ref().unwrap().lost,
        ["m-0-2"]
    );
    assert_eq!(report.valid, Verdict::Invalid);
}
