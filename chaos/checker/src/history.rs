//! Parsing `history.jsonl` into operations.
//!
//! One JSON object a line: `index`, `time` (monotonic nanoseconds since the run
//! started), `process` (an integer client id, or `"nemesis"`), `type` (`invoke`,
//! `ok`, `fail`, `info`), `workload`, `f`, `key`, `value`, `node`, `error` (for
//! people only).
//!
//! A process runs one operation at a time: its completion is the next
//! non-invoke line of the same process, in file order. A completion with no
//! invocation before it is an *observation* (a `recv`, a `routes` table, ...).
//! An invocation never completed stays open to the end, like `info`: it may or
//! may not have happened.
//!
//! Unknown workloads, types and fields are skipped with a warning; a line that is
//! not JSON, or lacks `time`, `process` or `type`, makes the history unreadable
//! (except a truncated last line, left by a harness that died mid-write).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Workloads the checkers know; lines of any other workload are ignored.
pub const KNOWN_WORKLOADS: [&str; 5] = ["register", "messages", "roster", "bind", "sessions"];

/// The workload name given to fault events (lines of process `"nemesis"`).
pub const NEMESIS: &str = "nemesis";

/// Fields of a history line that the checkers know (`error` is for people
/// reading the history: why an operation failed or is unknown).
const KNOWN_FIELDS: [&str; 10] = [
    "index", "time", "process", "type", "workload", "f", "key", "value", "node", "error",
];

/// A history that could not be read, with the line at fault.
#[derive(Debug)]
pub struct ParseError {
    /// 1-based line number, or 0 for the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

/// Who ran an operation: a client process, or a named one such as the nemesis.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(i64),
    Named(String),
}

impl Process {
    pub fn is_nemesis(&self) -> bool {
        matches!(self, Process::Named(n) if n == NEMESIS)
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(n) => write!(f, "{n}"),
            Process::Named(n) => f.write_str(n),
        }
    }
}

/// Where an event sits in real time: its `time`, then its position in the file
/// (so that two lines with the same nanosecond keep the order they were written in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    pub time: u64,
    pub seq: usize,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Definitely did not happen.
    Fail,
    /// May or may not have happened.
    Info,
    /// Invoked and never completed: treated like `Info`.
    Open,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
            Outcome::Open => "open",
        }
    }

    /// `Info` or `Open`: the effect is indeterminate.
    pub fn indeterminate(self) -> bool {
        matches!(self, Outcome::Info | Outcome::Open)
    }
}

/// An invocation paired with its completion, or a lone observation.
#[derive(Clone, Debug)]
pub struct Op {
    pub process: Process,
    pub workload: String,
    pub f: String,
    pub key: Option<String>,
    pub node: Option<String>,
    /// The `index` field of the first line of this operation, if the line had one.
    pub index: Option<u64>,
    pub invoke: Stamp,
    /// `None` while the operation is open.
    pub complete: Option<Stamp>,
    pub outcome: Outcome,
    /// The invocation's value (for an observation, its only value).
    pub value: Value,
    /// The completion's value (`null` if none).
    pub result: Value,
    /// A completion written without an invocation (`recv`, `live`, `routes`, ...).
    pub observation: bool,
}

impl Op {
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// What the operation returned: the completion's value, or an observation's value.
    pub fn returned(&self) -> &Value {
        if self.observation {
            &self.value
        } else {
            &self.result
        }
    }

    /// The completion's time, if the operation completed.
    pub fn complete_time(&self) -> Option<u64> {
        self.complete.map(|s| s.time)
    }

    /// The operation as evidence in `results.json`.
    pub fn view(&self) -> OpView {
        OpView {
            index: self.index,
            process: self.process.to_string(),
            f: self.f.clone(),
            outcome: self.outcome.name(),
            value: self.value.clone(),
            result: if self.observation {
                Value::Null
            } else {
                self.result.clone()
            },
            invoke_ms: ms(self.invoke.time),
            complete_ms: self.complete_time().map(ms),
            node: self.node.clone(),
        }
    }
}

/// An operation as shown in `results.json`.
#[derive(Clone, Debug, Serialize)]
pub struct OpView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    pub process: String,
    pub f: String,
    #[serde(rename = "type")]
    pub outcome: &'static str,
    pub value: Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub result: Value,
    pub invoke_ms: f64,
    pub complete_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A parsed history: operations in order of invocation (file order).
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
    /// Non-blank lines read.
    pub lines: usize,
    /// The largest `time` seen.
    pub end_time: u64,
}

/// Nanoseconds to milliseconds, kept to the microsecond.
pub fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}

/// A bare JID: the full JID without its resource.
pub fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(b, _)| b)
}

/// A JSON scalar as text: strings as they are, numbers and the rest as JSON.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A field of an object value as text.
pub fn field(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(text)
}

/// A field of an object value that holds a list, as texts.
pub fn list_field(v: &Value, name: &str) -> Option<Vec<String>> {
    v.get(name)?
        .as_array()
        .map(|a| a.iter().filter_map(text).collect())
}

#[derive(Deserialize)]
struct RawLine {
    index: Option<u64>,
    time: u64,
    process: Value,
    #[serde(rename = "type")]
    kind: String,
    workload: Option<String>,
    f: Option<String>,
    key: Option<Value>,
    #[serde(default)]
    value: Value,
    node: Option<String>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

/// Counts of one kind of oddity, reported as one warning.
#[derive(Default)]
struct Tally(BTreeMap<String, (usize, usize)>);

impl Tally {
    fn add(&mut self, what: String, line: usize) {
        self.0.entry(what).or_insert((0, line)).0 += 1;
    }

    fn into_warnings(self, out: &mut Vec<String>) {
        for (what, (n, first)) in self.0 {
            out.push(format!("{what}: {n} line(s), first at line {first}"));
        }
    }
}

impl History {
    /// Reads and parses a history file.
    pub fn read(path: &Path) -> Result<History, ParseError> {
        let input = std::fs::read_to_string(path).map_err(|e| ParseError {
            line: 0,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        History::parse(&input)
    }

    /// Parses the text of a history.
    pub fn parse(input: &str) -> Result<History, ParseError> {
        let lines: Vec<(usize, &str)> = input
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty())
            .collect();
        let mut history = History {
            lines: lines.len(),
            ..History::default()
        };
        let mut skipped = Tally::default();
        let mut pairing = Tally::default();
        let mut extra_fields = Tally::default();
        let mut pending: HashMap<Process, usize> = HashMap::new();
        let mut parsed = 0usize;

        for (pos, &(line_no, line)) in lines.iter().enumerate() {
            let raw: RawLine = match serde_json::from_str(line) {
                Ok(raw) => raw,
                Err(e) => {
                    let truncated_tail =
                        pos + 1 == lines.len() && parsed > 0 && !input.ends_with('\n');
                    if truncated_tail {
                        history
                            .warnings
                            .push(format!("line {line_no}: truncated last line ignored ({e})"));
                        continue;
                    }
                    return Err(ParseError {
                        line: line_no,
                        message: format!("not a history event: {e}"),
                    });
                }
            };
            parsed += 1;
            history.end_time = history.end_time.max(raw.time);
            for name in raw.extra.keys() {
                if !KNOWN_FIELDS.contains(&name.as_str()) {
                    extra_fields.add(format!("unknown field `{name}` ignored"), line_no);
                }
            }
            let process = match &raw.process {
                Value::Number(n) if n.as_i64().is_some() => Process::Client(n.as_i64().unwrap()),
                Value::String(s) => Process::Named(s.clone()),
                other => {
                    return Err(ParseError {
                        line: line_no,
                        message: format!("`process` must be an integer or a string, not {other}"),
                    })
                }
            };
            let outcome = match raw.kind.as_str() {
                "invoke" => None,
                "ok" => Some(Outcome::Ok),
                "fail" => Some(Outcome::Fail),
                "info" => Some(Outcome::Info),
                other => {
                    skipped.add(format!("unknown type `{other}` ignored"), line_no);
                    continue;
                }
            };
            let workload = if process.is_nemesis() {
                NEMESIS.to_string()
            } else {
                match raw.workload {
                    Some(w) if KNOWN_WORKLOADS.contains(&w.as_str()) => w,
                    Some(w) => {
                        skipped.add(format!("unknown workload `{w}` ignored"), line_no);
                        continue;
                    }
                    None => {
                        skipped.add("line without `workload` ignored".into(), line_no);
                        continue;
                    }
                }
            };
            let Some(f) = raw.f else {
                skipped.add("line without `f` ignored".into(), line_no);
                continue;
            };
            let stamp = Stamp {
                time: raw.time,
                seq: pos,
            };
            let key = raw.key.as_ref().and_then(text);

            match outcome {
                None => {
                    // An earlier invocation still pending stays Open: it may or may not have happened.
                    if pending.insert(process.clone(), history.ops.len()).is_some() {
                        pairing.add(
                            "process invoked again before its operation completed; the earlier one is left open"
                                .into(),
                            line_no,
                        );
                    }
                    history.ops.push(Op {
                        process,
                        workload,
                        f,
                        key,
                        node: raw.node,
                        index: raw.index,
                        invoke: stamp,
                        complete: None,
                        outcome: Outcome::Open,
                        value: raw.value,
                        result: Value::Null,
                        observation: false,
                    });
                }
                Some(outcome) => match pending.remove(&process) {
                    Some(i) => {
                        let op = &mut history.ops[i];
                        if op.workload != workload || op.f != f || op.key != key {
                            pairing.add(
                                "completion differs from its invocation in workload, f or key; paired anyway"
                                    .into(),
                                line_no,
                            );
                        }
                        op.complete = Some(stamp);
                        op.outcome = outcome;
                        op.result = raw.value;
                        if op.node.is_none() {
                            op.node = raw.node;
                        }
                    }
                    None => history.ops.push(Op {
                        process,
                        workload,
                        f,
                        key,
                        node: raw.node,
                        index: raw.index,
                        invoke: stamp,
                        complete: Some(stamp),
                        outcome,
                        value: raw.value,
                        result: Value::Null,
                        observation: true,
                    }),
                },
            }
        }
        if parsed == 0 && !lines.is_empty() {
            return Err(ParseError {
                line: 0,
                message: "no readable event in the history".into(),
            });
        }
        skipped.into_warnings(&mut history.warnings);
        pairing.into_warnings(&mut history.warnings);
        extra_fields.into_warnings(&mut history.warnings);
        Ok(history)
    }

    /// Operations of one workload.
    pub fn workload<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Op> + 'a {
        self.ops.iter().filter(move |op| op.workload == name)
    }
}

/// Warns once per unexpected `f` of a workload, with a count.
pub fn warn_unknown_fs<'a>(
    workload: &str,
    ops: impl IntoIterator<Item = &'a Op>,
    known: &[&str],
    warnings: &mut Vec<String>,
) {
    let mut unknown: BTreeMap<&str, usize> = BTreeMap::new();
    for op in ops {
        if !known.contains(&op.f.as_str()) {
            *unknown.entry(op.f.as_str()).or_default() += 1;
        }
    }
    for (f, n) in unknown {
        warnings.push(format!(
            "{workload}: unknown f `{f}` ignored ({n} operation(s))"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_invocations_with_the_next_completion_of_the_same_process() {
        let h = History::parse(concat!(
            r#"{"index":0,"time":10,"process":1,"type":"invoke","workload":"register","f":"write","key":"k","value":"a"}"#,
            "\n",
            r#"{"index":1,"time":11,"process":2,"type":"invoke","workload":"register","f":"read","key":"k","value":null}"#,
            "\n",
            r#"{"index":2,"time":12,"process":1,"type":"ok","workload":"register","f":"write","key":"k","value":"a"}"#,
            "\n",
            r#"{"index":3,"time":13,"process":9,"type":"ok","workload":"messages","f":"recv","value":{"to":"b@x/r","id":"m1"}}"#,
            "\n"
        ))
        .unwrap();
        assert_eq!(h.ops.len(), 3);
        assert_eq!(h.ops[0].outcome, Outcome::Ok);
        assert_eq!(h.ops[0].complete_time(), Some(12));
        assert_eq!(h.ops[1].outcome, Outcome::Open);
        assert!(h.ops[2].observation);
        assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    }

    #[test]
    fn unknown_workloads_and_fields_are_warnings() {
        let h = History::parse(concat!(
            r#"{"time":1,"process":1,"type":"ok","workload":"queue","f":"enqueue"}"#,
            "\n",
            r#"{"time":2,"process":"nemesis","type":"info","f":"start","value":{"name":"kill-node"},"extra":1}"#,
            "\n"
        ))
        .unwrap();
        assert_eq!(h.ops.len(), 1);
        assert_eq!(h.ops[0].workload, NEMESIS);
        assert_eq!(h.warnings.len(), 2, "{:?}", h.warnings);
    }

    #[test]
    fn a_bad_line_is_an_error_but_a_truncated_tail_is_a_warning() {
        let good =
            r#"{"time":1,"process":1,"type":"invoke","workload":"register","f":"read","key":"k"}"#;
        let err = History::parse(&format!("{good}\nnot json\n{good}\n")).unwrap_err();
        assert_eq!(err.line, 2);
        let h = History::parse(&format!("{good}\n{{\"time\":2,\"pro")).unwrap();
        assert_eq!(h.ops.len(), 1);
        assert_eq!(h.warnings.len(), 1);
        assert!(History::parse("hello").is_err());
    }
}
