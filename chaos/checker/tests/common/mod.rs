//! Builds histories line by line for the tests, the way the harness writes them.

#![allow(dead_code)] // each test file uses its own part of this

use std::time::Duration;

use chorus_chaos_check::{check, History, Options, Report};
use serde_json::{json, Value};

/// A history under construction. Each event is one millisecond after the
/// previous one unless [`HistoryBuilder::at`] moves the clock.
#[derive(Default)]
pub struct HistoryBuilder {
    lines: Vec<Value>,
    time_ms: u64,
}

impl HistoryBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock to `ms` milliseconds after the start.
    pub fn at(&mut self, ms: u64) -> &mut Self {
        self.time_ms = ms;
        self
    }

    /// Appends one event line.
    pub fn event(
        &mut self,
        process: Value,
        kind: &str,
        workload: &str,
        f: &str,
        key: Option<&str>,
        value: Value,
    ) -> &mut Self {
        let mut line = json!({
            "index": self.lines.len(),
            "time": self.time_ms * 1_000_000,
            "process": process,
            "type": kind,
            "workload": workload,
            "f": f,
            "value": value,
            "node": "n1",
        });
        if let Some(key) = key {
            line["key"] = json!(key);
        }
        self.lines.push(line);
        self.time_ms += 1;
        self
    }

    /// A register event: `reg(1, "invoke", "write", "k1", json!("a"))`.
    pub fn reg(&mut self, process: i64, kind: &str, f: &str, key: &str, value: Value) -> &mut Self {
        self.event(json!(process), kind, "register", f, Some(key), value)
    }

    /// A register operation invoked and completed back to back.
    pub fn reg_op(
        &mut self,
        process: i64,
        kind: &str,
        f: &str,
        key: &str,
        value: Value,
    ) -> &mut Self {
        let invoke_value = if f == "read" {
            Value::Null
        } else {
            value.clone()
        };
        self.reg(process, "invoke", f, key, invoke_value)
            .reg(process, kind, f, key, value)
    }

    /// An event of another workload, without a key.
    pub fn op(
        &mut self,
        process: i64,
        kind: &str,
        workload: &str,
        f: &str,
        value: Value,
    ) -> &mut Self {
        self.event(json!(process), kind, workload, f, None, value)
    }

    /// A nemesis event, as the harness writes it.
    pub fn nemesis(&mut self, f: &str, name: &str) -> &mut Self {
        let value = json!({"nemesis": name, "detail": null});
        self.event(json!("nemesis"), "info", "nemesis", f, None, value)
    }

    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }

    pub fn history(&self) -> History {
        History::parse(&self.text()).expect("the builder writes readable histories")
    }

    pub fn check(&self) -> Report {
        check(&self.history(), &Options::default())
    }

    pub fn check_with_limit(&self, limit: Duration) -> Report {
        check(&self.history(), &Options { time_limit: limit })
    }
}

/// The report as the JSON written to results.json.
pub fn json_of(report: &Report) -> Value {
    serde_json::to_value(report).unwrap()
}
