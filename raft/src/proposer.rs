//! Group commit: many callers, few log entries.
//!
//! openraft 0.9 waits for each append to be fsynced before the next, so one entry per
//! command would cost one fsync per command. Callers queue (command, reply) pairs; one task
//! takes everything waiting (up to `max_batch`), proposes it as one `Request`, and answers
//! each caller with its own result. While an entry is in flight the next batch accumulates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::Raft;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::config::{MAX_ENTRIES_IN_FLIGHT, MAX_ENTRY_BYTES};
use crate::error::RaftError;
use crate::types::{Command, CommandResult, NodeId, Request, TypeConfig, PROTOCOL_VERSION};

pub(crate) struct Proposal {
    pub command: Command,
    /// Encoded size, for the entry byte budget.
    pub bytes: usize,
    pub reply: oneshot::Sender<Result<CommandResult, RaftError>>,
}

#[derive(Default)]
pub(crate) struct ProposerStats {
    pub entries: AtomicU64,
    pub commands: AtomicU64,
}

pub(crate) struct Proposer {
    pub raft: Raft<TypeConfig>,
    pub node_id: NodeId,
    pub max_batch: usize,
    /// Identifies this proposer in the state machine's dedup table. Random per start, so
    /// that serials restarting at 1 after a restart are not mistaken for retries.
    pub client: u64,
    pub stats: Arc<ProposerStats>,
}

impl Proposer {
    pub(crate) async fn run(
        self,
        mut queue: mpsc::Receiver<Proposal>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let in_flight = Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT));
        let mut serial = 0u64;
        loop {
            // Wait for a free slot before collecting, so that the queue fills up meanwhile.
            let slot = tokio::select! {
                _ = shutdown.changed() => return,
                s = in_flight.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            let first = tokio::select! {
                _ = shutdown.changed() => return,
                p = queue.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
            };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < self.max_batch && bytes < MAX_ENTRY_BYTES {
                match queue.try_recv() {
                    Ok(p) => {
                        bytes += p.bytes;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            // Callers that gave up (timeout, cancellation) are not proposed for.
            batch.retain(|p| !p.reply.is_closed());
            if batch.is_empty() {
                continue;
            }

            let leader = self.raft.metrics().borrow().current_leader;
            if leader != Some(self.node_id) {
                answer_all(batch, || RaftError::NotLeader { leader });
                continue;
            }

            let (commands, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            serial += 1;
            let count = commands.len();
            self.stats.entries.fetch_add(1, Ordering::Relaxed);
            self.stats
                .commands
                .fetch_add(count as u64, Ordering::Relaxed);
            let request = Request {
                version: PROTOCOL_VERSION,
                client: self.client,
                serial,
                commands,
            };
            // Submitted from this one task, in serial order: the log order of this client's
            // requests is their serial order, which dedup relies on.
            match self.raft.client_write_ff(request).await {
                Err(fatal) => {
                    let e: RaftError = fatal.into();
                    let msg = e.to_string();
                    answer_replies(replies, |_| Err(clone_error(&e, &msg)));
                }
                Ok(pending) => {
                    tokio::spawn(async move {
                        let _slot = slot;
                        match pending.await {
                            Ok(Ok(resp)) if resp.data.results.len() == count => {
                                let mut results = resp.data.results.into_iter();
                                answer_replies(replies, |_| {
                                    results
                                        .next()
                                        .ok_or_else(|| RaftError::Internal("missing result".into()))
                                });
                            }
                            Ok(Ok(resp)) => {
                                let msg = format!(
                                    "{} results for {count} commands",
                                    resp.data.results.len()
                                );
                                answer_replies(replies, |_| Err(RaftError::Internal(msg.clone())));
                            }
                            Ok(Err(e)) => {
                                let e: RaftError = e.into();
                                let msg = e.to_string();
                                answer_replies(replies, |_| Err(clone_error(&e, &msg)));
                            }
                            Err(_) => answer_replies(replies, |_| Err(RaftError::ShutDown)),
                        }
                    });
                }
            }
        }
    }
}

fn answer_all(batch: Vec<Proposal>, err: impl Fn() -> RaftError) {
    for p in batch {
        let _ = p.reply.send(Err(err()));
    }
}

fn answer_replies(
    replies: Vec<oneshot::Sender<Result<CommandResult, RaftError>>>,
    mut result: impl FnMut(usize) -> Result<CommandResult, RaftError>,
) {
    for (i, reply) in replies.into_iter().enumerate() {
        // A caller that went away is not an error.
        let _ = reply.send(result(i));
    }
}

/// `RaftError` is not `Clone` (it wraps openraft's storage error); each caller gets an
/// equivalent error.
fn clone_error(e: &RaftError, msg: &str) -> RaftError {
    match e {
        RaftError::NotLeader { leader } => RaftError::NotLeader { leader: *leader },
        RaftError::ShutDown => RaftError::ShutDown,
        RaftError::Panicked => RaftError::Panicked,
        RaftError::Storage(s) => RaftError::Storage(s.clone()),
        RaftError::Timeout { what, after } => RaftError::Timeout {
            what,
            after: *after,
        },
        RaftError::NoQuorum(s) => RaftError::NoQuorum(s.clone()),
        RaftError::Membership(s) => RaftError::Membership(s.clone()),
        _ => RaftError::Internal(msg.to_owned()),
    }
}
