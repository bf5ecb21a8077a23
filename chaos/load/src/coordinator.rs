//! The coordinator: the command line, the worker processes, the phases in step, the
//! servers' /proc figures and the report.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Stdio;

use clap::{Parser, Subcommand};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::procstat::{self, Sample};
use crate::sasl::KeyCache;
use crate::stats::{Errors, Latency, Percentiles};
use crate::worker::{Command, Job, PhaseReport};

#[derive(Parser, Debug)]
#[command(
    name = "chorus-load",
    about = "Many XMPP clients against one server or a cluster: login storms, idle sessions, chat with delivery latency"
)]
pub struct Args {
    #[command(subcommand)]
    scenario: Scenario,
    /// A server's client port, HOST:PORT; repeat for a cluster (user i uses server i mod count).
    #[arg(long = "server", global = true, default_value = "127.0.0.1:5222")]
    servers: Vec<String>,
    /// The XMPP domain the users belong to.
    #[arg(long, global = true, default_value = "localhost")]
    domain: String,
    /// How many users: PREFIX0 ... PREFIX(N-1).
    #[arg(long, global = true, default_value_t = 100)]
    users: usize,
    #[arg(long, global = true, default_value = "load")]
    prefix: String,
    #[arg(long, global = true, default_value = "load-password")]
    password: String,
    #[arg(long, global = true, default_value = "SCRAM-SHA-256",
          value_parser = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])]
    mechanism: String,
    /// STARTTLS before SASL, trusting only the certificate in this PEM file.
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Create each account in-band (XEP-0077) before it logs in; one that exists is fine.
    #[arg(long, global = true)]
    register: bool,
    /// Leave from 127.0.0.2 ... 127.0.0.(N+1), round robin (one address runs out of ports
    /// near 28,000 connections); 0: let the system choose.
    #[arg(long, global = true, default_value_t = 0)]
    sources: usize,
    /// Users per worker process at most (a process here may hold 20,000 open files).
    #[arg(long, global = true, default_value_t = 15_000)]
    per_worker: usize,
    /// A server process to sample (RSS, CPU) from /proc; repeat for a cluster.
    #[arg(long = "pid", global = true)]
    pids: Vec<u32>,
    /// Seconds any one step of a login may take.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    /// Seconds between whitespace keep-alives on an idle stream.
    #[arg(long, global = true, default_value_t = 60)]
    keepalive: u64,
    /// Logins a second offered, all workers together; 0: as fast as --concurrency allows.
    #[arg(long, global = true, default_value_t = 0.0)]
    login_rate: f64,
    /// Logins in progress at once, per worker.
    #[arg(long, global = true, default_value_t = 200)]
    concurrency: usize,
    /// SCRAM salted passwords kept between runs, as clients keep them (read, then written
    /// back with what this run learnt).
    #[arg(long, global = true, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
enum Scenario {
    /// Log every user in (connect, TLS, SASL, bind, roster, presence), then out.
    Login,
    /// Log every user in, then hold the sessions (with keep-alives).
    Idle {
        /// Seconds to hold.
        #[arg(long, default_value_t = 30.0)]
        hold: f64,
    },
    /// Log every user in, then send messages at a fixed offered rate (open loop) to random
    /// users (on another server when there are several), each stamped so that its
    /// receiver measures the delivery latency.
    Chat {
        /// Messages a second, all senders together.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds to send.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// The first M users send (default: all).
        #[arg(long)]
        senders: Option<usize>,
        /// Seconds to wait after the last send for what is on its way.
        #[arg(long, default_value_t = 2.0)]
        drain: f64,
    },
    /// Presence churn: log every user in, give each a roster of --contacts users (half
    /// before, half after it by index, subscribed both ways, on other servers when there
    /// are several), then for --secs, --rate times a second, a random user logs out and in
    /// again; its unavailable and available presence are stamped, so that its contacts
    /// measure their delivery.
    Churn {
        /// Contacts per user (an even number; subscriptions both ways).
        #[arg(long, default_value_t = 10)]
        contacts: usize,
        /// Log-outs and log-ins a second, all workers together.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Seconds of churn.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Seconds to wait after the last cycle for presence on its way.
        #[arg(long, default_value_t = 2.0)]
        drain: f64,
    },
    /// Log every user in, then chat at offered rates doubling from --start until the p99
    /// latency passes --p99-ms or a message is not delivered, then bisect between the
    /// last good and the first bad rate: the peak is the highest good rate.
    Peak {
        /// The first offered rate, messages a second.
        #[arg(long, default_value_t = 500.0)]
        start: f64,
        /// The highest rate tried.
        #[arg(long, default_value_t = 200_000.0)]
        max: f64,
        /// Seconds per step.
        #[arg(long, default_value_t = 5.0)]
        step_secs: f64,
        /// A step is good while its p99 delivery latency stays at or under this.
        #[arg(long, default_value_t = 20.0)]
        p99_ms: f64,
        /// Bisection steps after the first bad rate.
        #[arg(long, default_value_t = 3)]
        bisect: u32,
        /// The first M users send (default: all).
        #[arg(long)]
        senders: Option<usize>,
    },
}

/// One step of a peak search.
#[derive(Debug, Serialize)]
struct Step {
    rate: f64,
    good: bool,
    chat: Phase,
    errors: u64,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    first: usize,
    count: usize,
}

#[derive(Debug, Default, Serialize)]
struct Phase {
    ok: u64,
    failed: u64,
    secs: f64,
    per_sec: f64,
    sent: u64,
    delivered: u64,
    live: u64,
    latency: Percentiles,
}

#[derive(Debug, Default, Serialize)]
struct ServerFigures {
    before: Option<Sample>,
    after_login: Option<Sample>,
    end: Option<Sample>,
    /// (RSS at the end of the hold less RSS before any login) / sessions held.
    rss_per_session_kib: Option<f64>,
    /// CPU seconds the servers used from before the first login to the end.
    cpu_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: Scenario,
    servers: Vec<String>,
    users: usize,
    workers: usize,
    mechanism: String,
    tls: bool,
    login: Phase,
    chat: Option<Phase>,
    /// Presence churn: `ok` cycles, `sent` stamped presence, `delivered` copies received
    /// by contacts, `latency` their delivery.
    churn: Option<Phase>,
    /// The logins of the churn cycles.
    churn_logins: Option<Percentiles>,
    /// Peak search: every step, and the highest good rate.
    steps: Vec<Step>,
    peak: Option<f64>,
    server: ServerFigures,
    errors: Errors,
}

fn resolve(servers: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    servers
        .iter()
        .map(|s| {
            s.to_socket_addrs()
                .map_err(|e| anyhow::anyhow!("bad --server {s}: {e}"))?
                .find(|a| a.is_ipv4())
                .ok_or_else(|| anyhow::anyhow!("--server {s} has no IPv4 address"))
        })
        .collect()
}

fn sample(pids: &[u32]) -> anyhow::Result<Option<Sample>> {
    if pids.is_empty() {
        return Ok(None);
    }
    procstat::sample_all(pids).map(Some)
}

pub async fn run(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!(args.per_worker > 0, "--per-worker must be at least 1");
    anyhow::ensure!(
        args.sources <= 250,
        "--sources is at most 250 (127.0.0.2 ... 127.0.0.251)"
    );
    let servers = resolve(&args.servers)?;
    if let Some(ca) = &args.tls_ca {
        // Read once here, so that a bad file is one clear message, not one per worker.
        crate::client::tls_connector(ca)?;
    }
    let keys = match &args.keys {
        Some(path) => KeyCache::load(path)?,
        None => KeyCache::default(),
    };
    let known = keys.all();
    let sources: Vec<IpAddr> = (0..args.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect();
    let count = args.users.div_ceil(args.per_worker);
    // Stamped on every message, so that one kept offline from an earlier run (sent as
    // that run's clients were closing) is not counted as this run's.
    let run: u32 = rand::random();
    let mut workers = Vec::with_capacity(count);
    let exe = std::env::current_exe()?;
    for w in 0..count {
        let first = w * args.users / count;
        let last = (w + 1) * args.users / count;
        let job = Job {
            run,
            worker: w,
            servers: servers.clone(),
            domain: args.domain.clone(),
            first,
            count: last - first,
            total: args.users,
            prefix: args.prefix.clone(),
            password: args.password.clone(),
            mechanism: args.mechanism.clone(),
            ca: args.tls_ca.clone(),
            register: args.register,
            timeout_ms: args.timeout * 1000,
            keepalive_secs: args.keepalive,
            sources: sources.clone(),
            keys: known
                .iter()
                .filter(|k| {
                    k.user
                        .strip_prefix(&args.prefix)
                        .and_then(|i| i.parse::<usize>().ok())
                        .is_some_and(|i| (first..last).contains(&i))
                })
                .cloned()
                .collect(),
        };
        let mut child = tokio::process::Command::new(&exe)
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut line = serde_json::to_string(&job)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        workers.push(Worker {
            child,
            stdin,
            stdout,
            first,
            count: last - first,
        });
    }

    let mut server = ServerFigures {
        before: sample(&args.pids)?,
        ..ServerFigures::default()
    };
    let mut errors = Errors::default();
    eprintln!(
        "chorus-load: {} users on {} server(s), {} worker(s): logging in",
        args.users,
        servers.len(),
        count
    );
    let per_worker_rate = args.login_rate / count as f64;
    let reports = phase(&mut workers, |_| Command::Login {
        rate: per_worker_rate,
        concurrency: args.concurrency,
    })
    .await?;
    let login = summarize(&reports, &mut errors, |r| r.ok);
    for r in &reports {
        keys.insert_all(r.keys.clone())?;
    }
    eprintln!(
        "chorus-load: {} logged in, {} failed in {:.2} s",
        login.ok, login.failed, login.secs
    );
    server.after_login = sample(&args.pids)?;
    let mut chat = None;
    let mut churn = None;
    let mut churn_logins = None;
    let mut steps = Vec::new();
    let mut peak = None;
    if login.failed > 0 && !matches!(args.scenario, Scenario::Login) {
        // Messages to users who are not online would go to offline storage and count as
        // lost; a hold would measure fewer sessions than asked for.
        eprintln!(
            "chorus-load: {} logins failed; the scenario does not go on",
            login.failed
        );
    } else if login.ok > 0 {
        match &args.scenario {
            Scenario::Login => {}
            Scenario::Idle { hold } => {
                let reports = phase(&mut workers, |_| Command::Hold { secs: *hold }).await?;
                let held = summarize(&reports, &mut errors, |_| 0);
                server.end = sample(&args.pids)?;
                if let (Some(b), Some(e)) = (&server.before, &server.end) {
                    if held.live > 0 {
                        server.rss_per_session_kib =
                            Some((e.rss_kib as f64 - b.rss_kib as f64) / held.live as f64);
                    }
                }
                eprintln!("chorus-load: held {} sessions for {hold} s", held.live);
            }
            Scenario::Chat {
                rate,
                secs,
                senders,
                drain,
            } => {
                let senders = senders.unwrap_or(args.users).min(args.users);
                let (c, errs) = chat_phase(&mut workers, 1, *rate, *secs, senders, *drain).await?;
                errors.merge(&errs);
                chat = Some(c);
            }
            Scenario::Churn {
                contacts,
                rate,
                secs,
                drain,
            } => {
                let wait_secs = args.timeout as f64;
                let reports = phase(&mut workers, |_| Command::Subscribe {
                    contacts: *contacts,
                    wait_secs,
                })
                .await?;
                let subscribed = summarize(&reports, &mut errors, |r| r.ok);
                eprintln!(
                    "chorus-load: {} of {} subscription requests approved",
                    subscribed.ok, subscribed.sent
                );
                let (c, logins) =
                    churn_phase(&mut workers, &mut errors, *rate, *secs, *drain).await?;
                churn = Some(c);
                churn_logins = Some(logins);
            }
            Scenario::Peak {
                start,
                max,
                step_secs,
                p99_ms,
                bisect,
                senders,
            } => {
                let senders = senders.unwrap_or(args.users).min(args.users);
                let mut phase_id = 1;
                let mut run_step = async |rate: f64,
                                          workers: &mut Vec<Worker>|
                       -> anyhow::Result<Step> {
                    phase_id += 1;
                    let (c, errs) =
                        chat_phase(workers, phase_id, rate, *step_secs, senders, 1.0).await?;
                    let good = errs.total() == 0 && c.sent > 0 && c.latency.p99_ms <= *p99_ms;
                    eprintln!(
                        "chorus-load: {rate:.0} msgs/s offered: {} delivered of {}, p99 {:.2} ms: {}",
                        c.delivered,
                        c.sent,
                        c.latency.p99_ms,
                        if good { "good" } else { "too much" }
                    );
                    if !good {
                        // What an overloaded step left queued would be counted against
                        // the next one: let the server catch up first.
                        phase(workers, |_| Command::Hold {
                            secs: *step_secs * 2.0,
                        })
                        .await?;
                    }
                    Ok(Step {
                        rate,
                        good,
                        chat: c,
                        errors: errs.total(),
                    })
                };
                let mut rate = *start;
                let mut last_good: Option<f64> = None;
                let mut first_bad: Option<f64> = None;
                while rate <= *max {
                    let step = run_step(rate, &mut workers).await?;
                    let good = step.good;
                    steps.push(step);
                    if good {
                        last_good = Some(rate);
                        rate *= 2.0;
                    } else {
                        first_bad = Some(rate);
                        break;
                    }
                }
                if let (Some(bad), true) = (first_bad, last_good.is_some()) {
                    let (mut lo, mut hi) = (last_good.unwrap_or(0.0), bad);
                    for _ in 0..*bisect {
                        let mid = (lo + hi) / 2.0;
                        let step = run_step(mid, &mut workers).await?;
                        if step.good {
                            lo = mid;
                            last_good = Some(mid);
                        } else {
                            hi = mid;
                        }
                        steps.push(step);
                    }
                }
                if last_good.is_none() {
                    errors.add(
                        "no good rate",
                        format!("even {start} msgs/s offered passed {p99_ms} ms at p99 or lost messages"),
                    );
                }
                peak = last_good;
            }
        }
    }
    if server.end.is_none() {
        server.end = sample(&args.pids)?;
    }
    if let (Some(b), Some(e)) = (&server.before, &server.end) {
        server.cpu_secs = Some(e.cpu_secs - b.cpu_secs);
    }
    let closing = phase(&mut workers, |_| Command::Close).await?;
    summarize(&closing, &mut errors, |_| 0);
    for mut w in workers {
        let _ = w.child.wait().await;
    }
    if let Some(path) = &args.keys {
        std::fs::write(path, serde_json::to_string(&keys.all())?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    let report = Report {
        scenario: args.scenario.clone(),
        servers: args.servers.clone(),
        users: args.users,
        workers: count,
        mechanism: args.mechanism.clone(),
        tls: args.tls_ca.is_some(),
        login,
        chat,
        churn,
        churn_logins,
        steps,
        peak,
        server,
        errors,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(report.errors.total() == 0)
}

/// One chat phase on every worker: (what was sent and delivered, its errors). Messages
/// not delivered by the end of the drain count as errors.
async fn chat_phase(
    workers: &mut [Worker],
    phase_id: u32,
    rate: f64,
    secs: f64,
    senders: usize,
    drain: f64,
) -> anyhow::Result<(Phase, Errors)> {
    let reports = phase(workers, |w| {
        let mine = senders.saturating_sub(w.first).min(w.count);
        Command::Chat {
            phase: phase_id,
            rate: rate * mine as f64 / senders.max(1) as f64,
            secs,
            senders,
            drain_secs: drain,
        }
    })
    .await?;
    let mut errors = Errors::default();
    let mut c = summarize(&reports, &mut errors, |r| r.delivered);
    c.per_sec = c.delivered as f64 / secs;
    c.secs = secs;
    if c.delivered < c.sent {
        let lost = c.sent - c.delivered;
        errors.add_n(
            "not delivered",
            lost,
            format!(
                "{lost} of {} messages sent had not arrived {drain} s after the last send",
                c.sent
            ),
        );
    }
    Ok((c, errors))
}

/// The churn phase on every worker: (cycles, presence sent and delivered with its
/// latency; the cycles' login latency).
async fn churn_phase(
    workers: &mut [Worker],
    errors: &mut Errors,
    rate: f64,
    secs: f64,
    drain: f64,
) -> anyhow::Result<(Phase, Percentiles)> {
    let total: usize = workers.iter().map(|w| w.count).sum();
    let reports = phase(workers, |w| Command::Churn {
        phase: 1,
        rate: rate * w.count as f64 / total.max(1) as f64,
        secs,
        drain_secs: drain,
    })
    .await?;
    let mut c = summarize(&reports, errors, |r| r.ok);
    c.secs = secs;
    c.per_sec = c.ok as f64 / secs;
    let mut logins = Latency::default();
    for r in &reports {
        if let Ok(l) = Latency::decode(&r.login_latency) {
            logins.add(&l);
        }
    }
    Ok((c, logins.summary()))
}

/// Sends each worker its command for one phase and waits for every answer.
async fn phase(
    workers: &mut [Worker],
    command: impl Fn(&Worker) -> Command,
) -> anyhow::Result<Vec<PhaseReport>> {
    for w in workers.iter_mut() {
        let mut line = serde_json::to_string(&command(w))?;
        line.push('\n');
        w.stdin.write_all(line.as_bytes()).await?;
        w.stdin.flush().await?;
    }
    let mut out = Vec::with_capacity(workers.len());
    for (i, w) in workers.iter_mut().enumerate() {
        match w.stdout.next_line().await? {
            Some(line) => out.push(serde_json::from_str(&line).map_err(|e| {
                anyhow::anyhow!("worker {i} answered something unreadable ({e}): {line}")
            })?),
            None => {
                let status = w.child.wait().await?;
                anyhow::bail!("worker {i} exited ({status}) in the middle of a phase");
            }
        }
    }
    Ok(out)
}

fn summarize(
    reports: &[PhaseReport],
    errors: &mut Errors,
    ok: impl Fn(&PhaseReport) -> u64,
) -> Phase {
    let mut latency = Latency::default();
    let mut p = Phase::default();
    for r in reports {
        p.ok += ok(r);
        p.failed += r.errors.total();
        p.sent += r.sent;
        p.delivered += r.delivered;
        p.live += r.live;
        p.secs = p.secs.max(r.elapsed_ms as f64 / 1000.0);
        errors.merge(&r.errors);
        if !r.latency.is_empty() {
            if let Ok(l) = Latency::decode(&r.latency) {
                latency.add(&l);
            }
        }
    }
    if p.secs > 0.0 {
        p.per_sec = p.ok as f64 / p.secs;
    }
    p.latency = latency.summary();
    p
}

fn print_report(r: &Report) {
    let l = &r.login;
    println!(
        "login: {} ok, {} failed in {:.2} s = {:.1} logins/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.ok, l.failed, l.secs, l.per_sec, l.latency.p50_ms, l.latency.p99_ms, l.latency.max_ms
    );
    if let Some(c) = &r.chat {
        println!(
            "chat: sent {}, delivered {} in {:.0} s = {:.1} msgs/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            c.sent, c.delivered, c.secs, c.per_sec, c.latency.p50_ms, c.latency.p99_ms, c.latency.p999_ms, c.latency.max_ms
        );
    }
    if let Some(c) = &r.churn {
        println!(
            "churn: {} log-outs and log-ins in {:.0} s = {:.1}/s; {} stamped presence sent, {} copies delivered to contacts; delivery p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            c.ok, c.secs, c.per_sec, c.sent, c.delivered, c.latency.p50_ms, c.latency.p99_ms, c.latency.p999_ms, c.latency.max_ms
        );
    }
    if let Some(l) = &r.churn_logins {
        println!(
            "churn logins: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    for step in &r.steps {
        println!(
            "peak step: {:.0} msgs/s offered: sent {}, delivered {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors: {}",
            step.rate, step.chat.sent, step.chat.delivered, step.chat.latency.p50_ms,
            step.chat.latency.p99_ms, step.chat.latency.max_ms, step.errors,
            if step.good { "good" } else { "too much" }
        );
    }
    if let Some(peak) = r.peak {
        println!("peak: {peak:.0} msgs/s with p99 within the target");
    }
    let s = &r.server;
    if let (Some(b), Some(e)) = (&s.before, &s.end) {
        print!("server: RSS {} KiB -> {} KiB", b.rss_kib, e.rss_kib);
        if let Some(per) = s.rss_per_session_kib {
            print!(" ({per:.1} KiB per session)");
        }
        println!("; CPU {:.2} s", s.cpu_secs.unwrap_or(0.0));
    }
    if r.errors.total() == 0 {
        println!("errors: none");
    } else {
        println!("errors: {}", r.errors.total());
        for (kind, (n, example)) in &r.errors.0 {
            println!("  {kind}: {n} (e.g. {example})");
        }
    }
}
