//! One worker process: holds a slice of the users' connections (fewer than the 20,000
//! open files a process may have here), runs each phase the coordinator sends on stdin and
//! answers with one JSON line on stdout per phase.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus::xmpp::stream::StreamEvent;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{self, answer_to, LoginConfig, Session};
use crate::clock::now_ns;
use crate::sasl::{CachedKey, KeyCache};
use crate::stats::{Errors, Latency};

/// What the coordinator gives a worker once, on its first line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// This invocation's random number, in every message body.
    pub run: u32,
    pub worker: usize,
    pub servers: Vec<SocketAddr>,
    pub domain: String,
    /// This worker's users: global indices `first..first + count`.
    pub first: usize,
    pub count: usize,
    /// Every worker's users together (recipients are drawn from all of them).
    pub total: usize,
    pub prefix: String,
    pub password: String,
    pub mechanism: String,
    pub ca: Option<PathBuf>,
    pub register: bool,
    pub timeout_ms: u64,
    pub keepalive_secs: u64,
    pub sources: Vec<IpAddr>,
    pub keys: Vec<CachedKey>,
}

impl Job {
    pub fn user(&self, index: usize) -> String {
        format!("{}{index}", self.prefix)
    }

    /// The local address user `index` leaves from, if `--sources` asked for some.
    pub fn source_of(&self, index: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[index % self.sources.len()])
    }

    /// Each user always uses the same server: user i on server i mod S.
    pub fn server_of(&self, index: usize) -> SocketAddr {
        self.servers[index % self.servers.len()]
    }
}

/// One phase, sent as one line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Log every user of this worker in, at `rate` arrivals a second (0: as fast as
    /// `concurrency` logins at a time allow).
    Login { rate: f64, concurrency: usize },
    /// Stay connected for `secs` (keep-alives go out meanwhile).
    Hold { secs: f64 },
    /// Send `rate` messages a second (this worker's share) for `secs`, from the users whose
    /// global index is below `senders`, to random users on other servers when there are
    /// several; then wait `drain_secs` for what is still on its way.
    Chat {
        phase: u32,
        rate: f64,
        secs: f64,
        senders: usize,
        drain_secs: f64,
    },
    /// Each user asks its `contacts` neighbours (the users `contacts / 2` before and after
    /// it, by index) for a subscription and approves theirs, so that every pair ends with
    /// a subscription both ways; waits up to `wait_secs` for every approval.
    Subscribe { contacts: usize, wait_secs: f64 },
    /// Presence churn for `secs`: `rate` a second (this worker's share), a random online
    /// user of this worker sends unavailable presence, closes its stream, logs in again
    /// and sends available presence, both stamped so that its contacts measure the
    /// delivery; then wait `drain_secs`.
    Churn {
        phase: u32,
        rate: f64,
        secs: f64,
        drain_secs: f64,
    },
    /// Close every stream and exit.
    Close,
}

/// The answer to one phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    pub ok: u64,
    pub errors: Errors,
    /// Login latencies (login) or delivery latencies (chat, churn), encoded.
    pub latency: String,
    /// The logins of a churn phase, encoded.
    #[serde(default)]
    pub login_latency: String,
    pub elapsed_ms: u64,
    pub sent: u64,
    pub delivered: u64,
    pub live: u64,
    pub keys: Vec<CachedKey>,
}

/// What the receivers of this worker saw, per chat phase.
#[derive(Default)]
struct Received {
    by_phase: HashMap<u32, (u64, Latency)>,
    /// Stamped presence (churn phases), per phase.
    presence: HashMap<u32, (u64, Latency)>,
    /// Subscription approvals received.
    subscribed: u64,
    /// Streams the server ended (stream error, close, reset) since the last report.
    closed: Errors,
}

struct Live {
    out: mpsc::Sender<String>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Messages a client may have waiting to be written; beyond, sends count as errors.
const CLIENT_QUEUE: usize = 256;

pub async fn run() -> anyhow::Result<()> {
    raise_file_limit();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let job: Job = serde_json::from_str(
        &lines
            .next_line()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no job on stdin"))?,
    )?;
    let keys = Arc::new(KeyCache::default());
    keys.insert_all(job.keys.clone())?;
    let tls = match &job.ca {
        Some(ca) => Some(client::tls_connector(ca)?),
        None => None,
    };
    let cfg = Arc::new(LoginConfig {
        domain: job.domain.clone(),
        password: job.password.clone(),
        mechanism: job.mechanism.clone(),
        tls,
        register: job.register,
        timeout: Duration::from_millis(job.timeout_ms),
        keys: keys.clone(),
    });
    let received = Arc::new(Mutex::new(Received::default()));
    let mut clients: Vec<Option<Live>> = (0..job.count).map(|_| None).collect();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let command: Command = serde_json::from_str(&line)?;
        let start = Instant::now();
        let mut report = match command {
            Command::Login { rate, concurrency } => {
                login_all(&job, &cfg, &received, &mut clients, rate, concurrency).await
            }
            Command::Hold { secs } => {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                PhaseReport::default()
            }
            Command::Chat {
                phase,
                rate,
                secs,
                senders,
                drain_secs,
            } => {
                chat(
                    &job, &clients, &received, phase, rate, secs, senders, drain_secs,
                )
                .await
            }
            Command::Subscribe {
                contacts,
                wait_secs,
            } => subscribe(&job, &clients, &received, contacts, wait_secs).await,
            Command::Churn {
                phase,
                rate,
                secs,
                drain_secs,
            } => {
                churn(
                    &job,
                    &cfg,
                    &received,
                    &mut clients,
                    phase,
                    rate,
                    secs,
                    drain_secs,
                )
                .await
            }
            Command::Close => {
                close_all(&mut clients).await;
                write_report(&mut stdout, &PhaseReport::default()).await?;
                return Ok(());
            }
        };
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        report.live = clients
            .iter()
            .flatten()
            .filter(|c| !c.reader.is_finished())
            .count() as u64;
        let closed = std::mem::take(&mut received.lock().unwrap_or_else(|p| p.into_inner()).closed);
        report.errors.merge(&closed);
        report.keys = keys.take_fresh();
        write_report(&mut stdout, &report).await?;
    }
    close_all(&mut clients).await;
    Ok(())
}

async fn write_report(stdout: &mut tokio::io::Stdout, report: &PhaseReport) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(report)?;
    line.push('\n');
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

/// This process may hold as many files as the hard limit allows (20,000 here).
fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

async fn login_all(
    job: &Job,
    cfg: &Arc<LoginConfig>,
    received: &Arc<Mutex<Received>>,
    clients: &mut [Option<Live>],
    rate: f64,
    concurrency: usize,
) -> PhaseReport {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(job.count);
    let waiting: Vec<usize> = (0..job.count).filter(|s| clients[*s].is_none()).collect();
    for slot in waiting {
        let index = job.first + slot;
        if rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(slot as f64 / rate)).await;
        }
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let cfg = cfg.clone();
        let server = job.server_of(index);
        let source = job.source_of(index);
        let user = job.user(index);
        tasks.push((
            slot,
            tokio::spawn(async move {
                let began = now_ns();
                let outcome = client::login(&cfg, server, source, &user).await;
                drop(permit);
                (outcome, now_ns() - began)
            }),
        ));
    }
    let mut report = PhaseReport::default();
    let mut latency = Latency::default();
    for (slot, task) in tasks {
        match task.await {
            Ok((Ok(session), ns)) => {
                report.ok += 1;
                latency.record_ns(ns);
                clients[slot] = Some(start_session(
                    session,
                    received.clone(),
                    job.keepalive_secs,
                    job.run,
                ));
            }
            Ok((Err(f), _)) => report.errors.add(f.kind, f.detail),
            Err(e) => report.errors.add("internal", e.to_string()),
        }
    }
    report.latency = latency.encode();
    report
}

fn start_session(
    session: Session,
    received: Arc<Mutex<Received>>,
    keepalive_secs: u64,
    run: u32,
) -> Live {
    let (out, mut rx) = mpsc::channel::<String>(CLIENT_QUEUE);
    let Session {
        mut reader,
        mut writer,
    } = session;
    let answers = out.clone();
    // The login has just sent the initial presence.
    let available_since = now_ns();
    let reader = tokio::spawn(async move {
        loop {
            match reader.next().await {
                Ok(StreamEvent::Stanza(e)) => {
                    if e.name() == "message" {
                        if let Some((phase, sent)) = stamp_of(
                            &e.get_child("body", chorus::xmpp::ns::CLIENT)
                                .map(|b| b.text())
                                .unwrap_or_default(),
                            run,
                        ) {
                            let now = now_ns();
                            let mut r = received.lock().unwrap_or_else(|p| p.into_inner());
                            let (n, lat) = r.by_phase.entry(phase).or_default();
                            *n += 1;
                            lat.record_ns(now.saturating_sub(sent));
                        }
                    } else if e.name() == "presence" {
                        match e.attr("type") {
                            Some("subscribe") => {
                                if let Some(from) = e.attr("from") {
                                    let _ = answers.try_send(format!(
                                        "<presence type='subscribed' to='{}'/>",
                                        chorus::xmpp::escape_attr(from)
                                    ));
                                }
                            }
                            Some("subscribed") => {
                                received
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .subscribed += 1;
                            }
                            _ => {
                                let status = e
                                    .get_child("status", chorus::xmpp::ns::CLIENT)
                                    .map(|s| s.text())
                                    .unwrap_or_default();
                                // A stamp from before this stream was available came as
                                // the answer to its probe, not as the broadcast measured.
                                if let Some((phase, sent)) =
                                    stamp_of(&status, run).filter(|(_, t)| *t > available_since)
                                {
                                    let now = now_ns();
                                    let mut r = received.lock().unwrap_or_else(|p| p.into_inner());
                                    let (n, lat) = r.presence.entry(phase).or_default();
                                    *n += 1;
                                    lat.record_ns(now.saturating_sub(sent));
                                }
                            }
                        }
                    } else if e.is("error", chorus::xmpp::ns::STREAM) {
                        received
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .closed
                            .add(
                                "stream closed by server",
                                format!("stream error: {}", e.to_xml()),
                            );
                        return;
                    } else if let Some(answer) = answer_to(&e) {
                        let _ = answers.try_send(answer);
                    }
                }
                Ok(StreamEvent::Header(_)) => {}
                Ok(StreamEvent::Closed) => {
                    received
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .closed
                        .add("stream closed by server", "the server closed the stream");
                    return;
                }
                Err(e) => {
                    received
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .closed
                        .add("stream closed by server", e.to_string());
                    return;
                }
            }
        }
    });
    let writer = tokio::spawn(async move {
        let period = Duration::from_secs(keepalive_secs.max(1));
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let data = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = keepalive.tick() => " ".to_string(),
            };
            if writer.write_all(data.as_bytes()).await.is_err() || writer.flush().await.is_err() {
                return;
            }
            if data == "</stream:stream>" {
                let _ = writer.shutdown().await;
                return;
            }
        }
    });
    Live {
        out,
        reader,
        writer,
    }
}

/// `r=RUN p=PHASE t=NANOS` in a generated message's body, for this run only.
fn stamp_of(body: &str, run: u32) -> Option<(u32, u64)> {
    let mut phase = None;
    let mut sent = None;
    let mut ours = false;
    for part in body.split_whitespace() {
        if let Some(v) = part.strip_prefix("r=") {
            ours = v.parse() == Ok(run);
        } else if let Some(v) = part.strip_prefix("p=") {
            phase = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("t=") {
            sent = v.parse().ok();
        }
    }
    if !ours {
        return None;
    }
    Some((phase?, sent?))
}

#[allow(clippy::too_many_arguments)]
async fn chat(
    job: &Job,
    clients: &[Option<Live>],
    received: &Arc<Mutex<Received>>,
    phase: u32,
    rate: f64,
    secs: f64,
    senders: usize,
    drain_secs: f64,
) -> PhaseReport {
    let mut report = PhaseReport::default();
    let mine: Vec<usize> = (0..job.count)
        .filter(|slot| job.first + slot < senders && clients[*slot].is_some())
        .collect();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut rng = rand::rng();
    if !mine.is_empty() && rate > 0.0 {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= secs {
                break;
            }
            let due = (elapsed * rate) as u64;
            while sent < due {
                let slot = mine[rng.random_range(0..mine.len())];
                let from = job.first + slot;
                let to = recipient(job, from, &mut rng);
                let xml = format!(
                    "<message to='{}@{}' type='chat' id='{}-{sent}'><body>r={} p={phase} t={}</body></message>",
                    job.user(to),
                    job.domain,
                    job.worker,
                    job.run,
                    now_ns()
                );
                sent += 1;
                let Some(live) = &clients[slot] else { continue };
                match live.out.try_send(xml) {
                    Ok(()) => report.sent += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => report.errors.add(
                        "send queue full",
                        format!("{} could not write fast enough", job.user(from)),
                    ),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        report.errors.add("send on a closed stream", job.user(from))
                    }
                }
            }
        }
    } else {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(drain_secs)).await;
    let (delivered, latency) = take_phase(received, phase, |r| &mut r.by_phase);
    report.delivered = delivered;
    report.ok = delivered;
    report.latency = latency.encode();
    report
}

/// What the receivers counted for `phase` (in the map `which` picks), taken out.
fn take_phase(
    received: &Mutex<Received>,
    phase: u32,
    which: impl FnOnce(&mut Received) -> &mut HashMap<u32, (u64, Latency)>,
) -> (u64, Latency) {
    let mut r = received.lock().unwrap_or_else(|p| p.into_inner());
    which(&mut r).remove(&phase).unwrap_or_default()
}

/// A random other user, on another server when there are several.
fn recipient(job: &Job, from: usize, rng: &mut impl Rng) -> usize {
    let servers = job.servers.len();
    loop {
        let to = rng.random_range(0..job.total);
        if to != from && (servers == 1 || to % servers != from % servers) {
            return to;
        }
        if job.total < 2 {
            return to;
        }
    }
}

async fn close_all(clients: &mut [Option<Live>]) {
    for live in clients.iter().flatten() {
        let _ = live.out.try_send("</stream:stream>".to_string());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for live in clients.iter_mut().flatten() {
        let _ = tokio::time::timeout_at(deadline, &mut live.writer).await;
        live.reader.abort();
    }
}

/// The `contacts` neighbours of user `i` among `total`: `contacts / 2` on each side.
fn neighbours(i: usize, total: usize, contacts: usize) -> Vec<usize> {
    let half = (contacts / 2).min(total.saturating_sub(1) / 2);
    (1..=half)
        .flat_map(|k| [(i + k) % total, (i + total - k) % total])
        .collect()
}

async fn subscribe(
    job: &Job,
    clients: &[Option<Live>],
    received: &Arc<Mutex<Received>>,
    contacts: usize,
    wait_secs: f64,
) -> PhaseReport {
    let mut report = PhaseReport::default();
    let before = received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .subscribed;
    let mut expected = 0u64;
    for (slot, live) in clients.iter().enumerate() {
        let Some(live) = live else { continue };
        let i = job.first + slot;
        for j in neighbours(i, job.total, contacts) {
            let xml = format!(
                "<presence type='subscribe' to='{}@{}'/>",
                job.user(j),
                job.domain
            );
            // Waits for room: the setup is not what is measured.
            if live.out.send(xml).await.is_ok() {
                expected += 1;
                report.sent += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(wait_secs);
    let approved = loop {
        let now = received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .subscribed
            - before;
        if now >= expected || Instant::now() >= deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    report.ok = approved;
    if approved < expected {
        report.errors.add_n(
            "subscription not approved",
            expected - approved,
            format!("{approved} of {expected} subscription requests approved within {wait_secs} s"),
        );
    }
    report
}

/// One user's log-out and log-in: its slot and how the login went.
type Cycle = (usize, Result<Session, client::Failure>);

#[allow(clippy::too_many_arguments)]
async fn churn(
    job: &Job,
    cfg: &Arc<LoginConfig>,
    received: &Arc<Mutex<Received>>,
    clients: &mut [Option<Live>],
    phase: u32,
    rate: f64,
    secs: f64,
    drain_secs: f64,
) -> PhaseReport {
    let mut report = PhaseReport::default();
    let mut latency = Latency::default();
    let mut cycles: tokio::task::JoinSet<(Cycle, u64)> = tokio::task::JoinSet::new();
    let mut rng = rand::rng();
    let start = Instant::now();
    let mut due_done = 0u64;
    let stamp = |run: u32| format!("r={run} p={phase} t={}", now_ns());
    let mut finished = |done: Result<(Cycle, u64), tokio::task::JoinError>,
                        clients: &mut [Option<Live>],
                        report: &mut PhaseReport| match done {
        Ok(((slot, Ok(session)), ns)) => {
            report.ok += 1;
            report.sent += 1;
            latency.record_ns(ns);
            clients[slot] = Some(start_session(
                session,
                received.clone(),
                job.keepalive_secs,
                job.run,
            ));
        }
        Ok(((_, Err(f)), _)) => report.errors.add(f.kind, f.detail),
        Err(e) => report.errors.add("internal", e.to_string()),
    };
    if rate > 0.0 {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= secs {
                break;
            }
            while due_done < (elapsed * rate) as u64 {
                due_done += 1;
                let online: Vec<usize> = (0..clients.len())
                    .filter(|s| clients[*s].is_some())
                    .collect();
                if online.is_empty() {
                    break;
                }
                let slot = online[rng.random_range(0..online.len())];
                let Some(live) = clients[slot].take() else {
                    continue;
                };
                // Our own close is not the server closing the stream.
                live.reader.abort();
                let _ = live.out.try_send(format!(
                    "<presence type='unavailable'><status>{}</status></presence>",
                    stamp(job.run)
                ));
                let _ = live.out.try_send("</stream:stream>".to_string());
                report.sent += 1;
                let index = job.first + slot;
                let (cfg, server, user, run) =
                    (cfg.clone(), job.server_of(index), job.user(index), job.run);
                let source = job.source_of(index);
                let timeout = cfg.timeout;
                cycles.spawn(async move {
                    let Live { writer, .. } = live;
                    let _ = tokio::time::timeout(timeout, writer).await;
                    let began = now_ns();
                    let outcome = client::login_with_presence(&cfg, server, source, &user, || {
                        format!(
                            "<presence><status>r={run} p={phase} t={}</status></presence>",
                            now_ns()
                        )
                    })
                    .await;
                    ((slot, outcome), now_ns() - began)
                });
            }
            while let Some(done) = cycles.try_join_next() {
                finished(done, clients, &mut report);
            }
        }
    } else {
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
    while let Some(done) = cycles.join_next().await {
        finished(done, clients, &mut report);
    }
    tokio::time::sleep(Duration::from_secs_f64(drain_secs)).await;
    let (delivered, presence) = take_phase(received, phase, |r| &mut r.presence);
    report.delivered = delivered;
    report.latency = presence.encode();
    // The logins' own latency, apart: what a returning user waits for.
    report.login_latency = latency.encode();
    report
}
