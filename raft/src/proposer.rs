//! Group commit: many callers, few log entries.
//!
//! openraft 0.9 waits for each append to be fsynced before the next, so one entry per
//! command would cost one fsync per command. Callers queue (command, reply) pairs; one task
//! takes everything waiting (up to `max_batch`), proposes it as one `Request`, and answers
//! each caller with its own result. While an entry is in flight the next batch accumulates.
//! On a follower the batch is forwarded to the leader, which proposes it as it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::Raft;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::config::{FORWARD_RETRY_PAUSE, MAX_ENTRIES_IN_FLIGHT, MAX_ENTRY_BYTES, PROPOSE_TIMEOUT};
use crate::error::RaftError;
use crate::network::{
    Channel, ClusterIdentity, ForwardError, PeerConnection, RpcRequest, RpcResponse,
};
use crate::types::{
    Command, CommandResult, NodeId, Request, Response, TypeConfig, PROTOCOL_VERSION,
};

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
    pub identity: Arc<ClusterIdentity>,
    /// The connection forwarded proposals go over, kept while the leader stays.
    pub leader_conn: Arc<tokio::sync::Mutex<Option<PeerConnection>>>,
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
            // One request in flight at a time (the slot), so this client's requests reach
            // the log in serial order, which dedup relies on.
            let submit = Submit {
                raft: self.raft.clone(),
                node_id: self.node_id,
                identity: self.identity.clone(),
                leader_conn: self.leader_conn.clone(),
            };
            tokio::spawn(async move {
                let _slot = slot;
                match submit.run(request).await {
                    Ok(resp) if resp.results.len() == count => {
                        let mut results = resp.results.into_iter();
                        answer_replies(replies, |_| {
                            results
                                .next()
                                .ok_or_else(|| RaftError::Internal("missing result".into()))
                        });
                    }
                    Ok(resp) => {
                        let msg = format!("{} results for {count} commands", resp.results.len());
                        answer_replies(replies, |_| Err(RaftError::Internal(msg.clone())));
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        answer_replies(replies, |_| Err(clone_error(&e, &msg)));
                    }
                }
            });
        }
    }
}

/// Gets one request into the log: proposed here on the leader, forwarded to the leader
/// from anywhere else. A request whose leader changed or could not be reached is sent
/// again (same client and serial, so it is applied at most once) until `PROPOSE_TIMEOUT`.
struct Submit {
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    identity: Arc<ClusterIdentity>,
    leader_conn: Arc<tokio::sync::Mutex<Option<PeerConnection>>>,
}

impl Submit {
    async fn run(&self, request: Request) -> Result<Response, RaftError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        let mut last_error = RaftError::NotLeader { leader: None };
        while tokio::time::Instant::now() < deadline {
            let metrics = self.raft.metrics().borrow().clone();
            let attempt = match metrics.current_leader {
                Some(l) if l == self.node_id => match self.raft.client_write(request.clone()).await
                {
                    Ok(resp) => return Ok(resp.data),
                    Err(openraft::error::RaftError::APIError(
                        openraft::error::ClientWriteError::ForwardToLeader(f),
                    )) => Err(RaftError::NotLeader {
                        leader: f.leader_id,
                    }),
                    Err(e) => return Err(e.into()),
                },
                Some(l) => match metrics.membership_config.membership().get_node(&l) {
                    Some(node) => self.forward(l, &node.addr, &request, deadline).await,
                    None => Err(RaftError::NotLeader { leader: Some(l) }),
                },
                None => Err(RaftError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(resp) => return Ok(resp),
                Err(e @ (RaftError::NotLeader { .. } | RaftError::NoQuorum(_))) => last_error = e,
                Err(RaftError::Io(e)) => last_error = RaftError::Io(e),
                Err(e) => return Err(e),
            }
            tokio::time::sleep(FORWARD_RETRY_PAUSE).await;
        }
        Err(match last_error {
            RaftError::NotLeader { leader: None } => RaftError::Timeout {
                what: "waiting for a leader to take a proposal",
                after: PROPOSE_TIMEOUT,
            },
            e => e,
        })
    }

    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        request: &Request,
        deadline: tokio::time::Instant,
    ) -> Result<Response, RaftError> {
        let mut slot = self.leader_conn.lock().await;
        let reusable = slot
            .as_ref()
            .is_some_and(|c| c.peer() == leader && c.addr() == addr);
        let mut conn = match (reusable, slot.take()) {
            (true, Some(c)) => c,
            _ => PeerConnection::connect(addr, self.node_id, leader, &self.identity, Channel::Raft)
                .await
                .map_err(|e| RaftError::Io(std::io::Error::other(e.to_string())))?,
        };
        let message = RpcRequest::ClientWrite(request.clone());
        let call = conn.call(&message);
        let answer = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => {
                return Err(RaftError::Timeout {
                    what: "waiting for the leader to commit a forwarded proposal",
                    after: PROPOSE_TIMEOUT,
                })
            }
            Ok(Err(e)) => return Err(RaftError::Io(std::io::Error::other(e.to_string()))),
            Ok(Ok(a)) => a,
        };
        *slot = Some(conn);
        match answer {
            RpcResponse::ClientWrite(Ok((index, resp))) => {
                // The caller reads this node's replica next: it must hold the write.
                let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.raft
                    .wait(Some(wait))
                    .applied_index_at_least(Some(index), "forwarded write applied here")
                    .await
                    .map_err(|_| RaftError::Timeout {
                        what: "applying a forwarded write on this node",
                        after: PROPOSE_TIMEOUT,
                    })?;
                Ok(resp)
            }
            RpcResponse::ClientWrite(Err(ForwardError::NotLeader { leader })) => {
                Err(RaftError::NotLeader { leader })
            }
            RpcResponse::ClientWrite(Err(ForwardError::Failed(e))) => Err(RaftError::Internal(
                format!("the leader could not propose: {e}"),
            )),
            _ => Err(RaftError::Internal(
                "the leader answered a forwarded proposal with another response".into(),
            )),
        }
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
