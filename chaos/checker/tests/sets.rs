//! Messages and rosters: lost, duplicated and unexpected items.

mod common;

use chorus_chaos_check::Verdict;
use common::{json_of, HistoryBuilder};
use serde_json::json;

fn send(h: &mut HistoryBuilder, p: i64, kind: &str, id: &str, to: &str) {
    let v = json!({"from": "alice@x/r", "to": to, "id": id});
    h.op(p, "invoke", "messages", "send", v.clone())
        .op(p, kind, "messages", "send", v);
}

fn recv(h: &mut HistoryBuilder, to: &str, id: &str) {
    h.op(100, "ok", "messages", "recv", json!({"to": to, "id": id}));
}

fn final_read(h: &mut HistoryBuilder, user: &str, ids: &[&str]) {
    h.op(
        200,
        "invoke",
        "messages",
        "final-read",
        json!({"user": user}),
    )
    .op(
        200,
        "ok",
        "messages",
        "final-read",
        json!({"user": user, "ids": ids}),
    );
}

#[test]
fn acknowledged_message_never_received_is_lost() {
    let mut h = HistoryBuilder::new();
    send(&mut h, 1, "ok", "m-1", "bob@x");
    send(&mut h, 1, "ok", "m-2", "bob@x");
    recv(&mut h, "bob@x/r", "m-1");
    final_read(&mut h, "bob@x", &[]);
    let report = h.check();
    let m = report.checkers.messages.detail.as_ref().unwrap();
    assert_eq!(m.lost, vec!["m-2"]);
    assert_eq!(report.checkers.messages.valid, Verdict::Invalid);
    assert_eq!(report.valid, Verdict::Invalid);
}

#[test]
fn message_received_live_and_again_offline_is_duplicated() {
    let mut h = HistoryBuilder::new();
    send(&mut h, 1, "ok", "m-1", "bob@x");
    recv(&mut h, "bob@x/r", "m-1");
    final_read(&mut h, "bob@x", &["m-1"]);
    let report = h.check();
    let m = report.checkers.messages.detail.as_ref().unwrap();
    assert_eq!(m.duplicated.len(), 1);
    assert_eq!(
        (m.duplicated[0].id.as_str(), m.duplicated[0].count),
        ("m-1", 2)
    );
    assert_eq!(m.duplicated[0].recipient, "bob@x");
    assert_eq!(report.checkers.messages.valid, Verdict::Invalid);
}

#[test]
fn all_messages_delivered_is_valid_with_latencies() {
    let mut h = HistoryBuilder::new();
    h.at(0);
    send(&mut h, 1, "ok", "m-1", "bob@x"); // invoked at 0 ms
    h.at(10);
    send(&mut h, 2, "ok", "m-2", "carol@x"); // invoked at 10 ms
    h.at(20);
    send(&mut h, 1, "info", "m-3", "bob@x"); // may or may not arrive
    h.at(30);
    recv(&mut h, "bob@x/phone", "m-1"); // 30 ms after its send
    h.at(100);
    final_read(&mut h, "carol@x", &["m-2"]); // completes at 101 ms: 91 ms after its send
    final_read(&mut h, "bob@x", &[]);
    let report = h.check();
    assert_eq!(report.valid, Verdict::Valid, "{:#}", json_of(&report));
    let m = report.checkers.messages.detail.as_ref().unwrap();
    assert_eq!(m.delivered, 2);
    assert!(m.lost.is_empty() && m.duplicated.is_empty() && m.unexpected.is_empty());
    let latency = m.latency_ms.as_ref().unwrap();
    assert_eq!(latency.count, 2);
    assert_eq!(latency.max, 91.0);
    assert_eq!(latency.median, 60.5);
    assert_eq!((m.sent.ok, m.sent.info, m.sent.fail), (2, 1, 0));
}

#[test]
fn received_message_that_was_never_sent_is_unexpected() {
    let mut h = HistoryBuilder::new();
    send(&mut h, 1, "ok", "m-1", "bob@x");
    recv(&mut h, "bob@x/r", "m-1");
    recv(&mut h, "bob@x/r", "m-999");
    let report = h.check();
    let m = report.checkers.messages.detail.as_ref().unwrap();
    assert_eq!(m.unexpected, vec!["m-999"]);
    assert_eq!(report.checkers.messages.valid, Verdict::Invalid);
}

#[test]
fn unseen_message_to_a_recipient_without_final_read_is_unknown_not_lost() {
    let mut h = HistoryBuilder::new();
    send(&mut h, 1, "ok", "m-1", "bob@x");
    let report = h.check();
    let m = report.checkers.messages.detail.as_ref().unwrap();
    assert!(m.lost.is_empty());
    assert_eq!(m.unverified, vec!["m-1"]);
    assert_eq!(report.valid, Verdict::Unknown);
}

#[test]
fn roster_add_acknowledged_but_missing_from_the_final_read_is_lost() {
    let mut h = HistoryBuilder::new();
    for (item, kind) in [
        ("c1@x", "ok"),
        ("c2@x", "ok"),
        ("c3@x", "info"),
        ("c4@x", "fail"),
    ] {
        let v = json!({"user": "alice@x", "item": item});
        h.op(1, "invoke", "roster", "add", v.clone())
            .op(1, kind, "roster", "add", v);
    }
    h.op(
        9,
        "invoke",
        "roster",
        "final-read",
        json!({"user": "alice@x"}),
    )
    .op(
        9,
        "ok",
        "roster",
        "final-read",
        json!({"user": "alice@x", "items": ["c1@x", "c3@x"]}),
    );
    let report = h.check();
    let r = report.checkers.roster.detail.as_ref().unwrap();
    assert_eq!(r.lost.len(), 1);
    assert_eq!(
        (r.lost[0].user.as_str(), r.lost[0].item.as_str()),
        ("alice@x", "c2@x")
    );
    assert_eq!(r.info_present, 1);
    assert!(r.unexpected.is_empty());
    assert_eq!(report.checkers.roster.valid, Verdict::Invalid);
}

#[test]
fn roster_with_every_acknowledged_add_is_valid_and_strangers_are_unexpected() {
    let mut h = HistoryBuilder::new();
    let v = json!({"user": "alice@x", "item": "c1@x"});
    h.op(1, "invoke", "roster", "add", v.clone())
        .op(1, "ok", "roster", "add", v)
        .op(
            9,
            "invoke",
            "roster",
            "final-read",
            json!({"user": "alice@x"}),
        )
        .op(
            9,
            "ok",
            "roster",
            "final-read",
            json!({"user": "alice@x", "items": ["c1@x"]}),
        );
    assert_eq!(h.check().checkers.roster.valid, Verdict::Valid);

    h.op(
        9,
        "invoke",
        "roster",
        "final-read",
        json!({"user": "alice@x"}),
    )
    .op(
        9,
        "ok",
        "roster",
        "final-read",
        json!({"user": "alice@x", "items": ["c1@x", "evil@x"]}),
    );
    let report = h.check();
    let r = report.checkers.roster.detail.as_ref().unwrap();
    assert_eq!(r.unexpected.len(), 1);
    assert_eq!(report.checkers.roster.valid, Verdict::Invalid);
}

#[test]
fn checkers_without_operations_are_valid_with_zero_ops() {
    let mut h = HistoryBuilder::new();
    h.reg_op(1, "ok", "write", "k1", json!("a"));
    let report = h.check();
    let json = json_of(&report);
    for name in ["messages", "roster", "ghosts", "single-session"] {
        assert_eq!(
            json["checkers"][name],
            json!({"valid": true, "ops": 0}),
            "{name}"
        );
    }
    assert_eq!(json["valid"], json!(true));
}
