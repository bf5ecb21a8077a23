//! chorus-load: many XMPP clients against one server or a cluster (docs/benchmarks.md,
//! "The load generator"). The process the user starts is the coordinator: it splits the
//! users over worker processes (this same binary with `--worker`), runs the phases of the
//! scenario in step on all of them, samples the servers' memory and CPU from /proc, and
//! reports. Exit status: 0 when every operation succeeded, 1 when any failed (the report
//! says which and why), 2 for bad arguments.

mod client;
mod clock;
mod coordinator;
mod procstat;
mod sasl;
mod stats;
mod worker;

use clap::Parser;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--worker") {
        // Multi-threaded: one worker may hold every user of a chat run, and on one thread
        // its own scheduling, not the server, set the latency (measured 2026-12-07: a
        // chat peak of 4,000 msgs/s with current-thread workers, 16,000 on the same node without).
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        if let Err(e) = rt.block_on(worker::run()) {
            eprintln!("chorus-load worker: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let args = coordinator::Args::parse();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match rt.block_on(coordinator::run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("chorus-load: {e:#}");
            std::process::exit(1);
        }
    }
}
