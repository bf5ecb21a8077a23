//! Jepsen-style checkers for the histories that Chorus chaos runs write.
//!
//! A run's `history.jsonl` is parsed into operations ([`history`]), then every
//! checker judges it and says why:
//!
//! - [`linearizable`]: the `register` workload, one key at a time, with
//!   stateright's `LinearizabilityTester` under a time limit (a timeout is
//!   `unknown`, never `true`);
//! - [`sets`]: `messages` and `roster`, set-full style (lost, duplicated,
//!   unexpected, how long a message stayed invisible);
//! - [`sessions`]: no ghost sessions, and at most one open session per full JID;
//! - [`availability`]: informational, how many operations succeeded while
//!   faults were active and how long each workload took to recover.
//!
//! Architecture invariant: this crate knows nothing of the cluster, the harness
//! or the network; it is a pure function of the history text (and a clock for
//! the time limit).
#![forbid(unsafe_code)]

pub mod availability;
pub mod history;
pub mod linearizable;
pub mod register;
pub mod sessions;
pub mod sets;
pub mod verdict;

use std::time::Duration;

use serde::Serialize;

pub use history::History;
pub use verdict::Verdict;

/// The time limit given to each register key when none is asked for.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(30);

/// How the checkers run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Search time allowed for each register key; a key that needs longer is `unknown`.
    pub time_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            time_limit: DEFAULT_TIME_LIMIT,
        }
    }
}

/// Everything `results.json` holds.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `false` if any checker is false, else `unknown` if any is unknown, else `true`.
    pub valid: Verdict,
    pub checkers: Checkers,
    pub history: HistorySummary,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Checkers {
    pub linearizable: linearizable::LinearizableReport,
    pub messages: sets::MessagesReport,
    pub roster: sets::RosterReport,
    pub ghosts: sessions::GhostReport,
    #[serde(rename = "single-session")]
    pub single_session: sessions::SingleSessionReport,
    pub availability: availability::AvailabilityReport,
}

#[derive(Debug, Serialize)]
pub struct HistorySummary {
    /// Lines read (blank lines not counted).
    pub lines: usize,
    /// Operations after pairing invocations with their completions.
    pub ops: usize,
    /// Time of the last line, in milliseconds since the run started.
    pub end_ms: f64,
}

/// Runs every checker on a parsed history.
pub fn check(history: &History, options: &Options) -> Report {
    let mut warnings = history.warnings.clone();
    let checkers = Checkers {
        linearizable: linearizable::check(history, options.time_limit, &mut warnings),
        messages: sets::check_messages(history, &mut warnings),
        roster: sets::check_roster(history, &mut warnings),
        ghosts: sessions::check_ghosts(history, &mut warnings),
        single_session: sessions::check_single_session(history, &mut warnings),
        availability: availability::check(history),
    };
    // Availability is informational: it never takes part in the verdict.
    let valid = Verdict::combine([
        checkers.linearizable.valid,
        checkers.messages.valid,
        checkers.roster.valid,
        checkers.ghosts.valid,
        checkers.single_session.valid,
    ]);
    Report {
        valid,
        checkers,
        history: HistorySummary {
            lines: history.lines,
            ops: history.ops.len(),
            end_ms: history::ms(history.end_time),
        },
        warnings,
    }
}

/// One line for a terminal: the verdict, then each checker's.
pub fn summary_line(report: &Report) -> String {
    let c = &report.checkers;
    let part = |name: &str, valid: Verdict, ops: usize| format!("{name}={valid} ({ops} ops)");
    format!(
        "valid={}: {}, {}, {}, {}, {}; {} warnings",
        report.valid,
        part("linearizable", c.linearizable.valid, c.linearizable.ops),
        part("messages", c.messages.valid, c.messages.ops),
        part("roster", c.roster.valid, c.roster.ops),
        part("ghosts", c.ghosts.valid, c.ghosts.ops),
        part(
            "single-session",
            c.single_session.valid,
            c.single_session.ops
        ),
        report.warnings.len()
    )
}
