//! `chorus-chaos-check HISTORY.jsonl [--out results.json] [--time-limit-secs 30]`
//!
//! Runs every checker on a chaos run's history, writes `results.json` (pretty
//! JSON) and prints a one-line summary. Exit code: 0 valid, 1 invalid,
//! 2 unknown, 3 when the history cannot be read or the results cannot be written.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use chorus_chaos_check::{check, summary_line, History, Options};

/// Exit code when the input cannot be read (or the command line is wrong).
const EXIT_UNREADABLE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "chorus-chaos-check",
    about = "Check a Chorus chaos run's history.jsonl: linearizability, lost or duplicated messages and roster items, ghost sessions, availability",
    after_help = "Exit code: 0 valid, 1 invalid, 2 unknown, 3 unreadable input."
)]
struct Cli {
    /// The run's history, one JSON event a line.
    history: PathBuf,
    /// Where to write the results [default: results.json beside the history].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Search time allowed for each register key; a key that needs longer is "unknown".
    #[arg(long, default_value_t = 30.0)]
    time_limit_secs: f64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_UNREADABLE);
        }
    };
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("chorus-chaos-check: {e:#}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    anyhow::ensure!(
        cli.time_limit_secs.is_finite() && cli.time_limit_secs >= 0.0,
        "--time-limit-secs must be a number of seconds, 0 or more"
    );
    let history = History::read(&cli.history)
        .with_context(|| format!("{} is not a readable history", cli.history.display()))?;
    let options = Options {
        time_limit: Duration::from_secs_f64(cli.time_limit_secs),
    };
    let report = check(&history, &options);
    let out = cli.out.clone().unwrap_or_else(|| {
        cli.history
            .parent()
            .map_or_else(|| PathBuf::from("results.json"), |d| d.join("results.json"))
    });
    let mut json = serde_json::to_string_pretty(&report)?;
    json.push('\n');
    std::fs::write(&out, json).with_context(|| format!("cannot write {}", out.display()))?;
    println!("{} -> {}", summary_line(&report), out.display());
    Ok(report.valid.exit_code() as u8)
}
