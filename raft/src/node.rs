//! `RaftNode`: storage, openraft, the RPC listener and the proposer of one node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::InitializeError;
use openraft::{BasicNode, LogIdOptionExt, Raft};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::codec;
use crate::config::{
    RaftConfig, EVENT_CHANNEL_CAPACITY, MAX_COMMAND_BYTES, PROPOSAL_QUEUE_CAPACITY,
    PROPOSE_TIMEOUT, READ_INDEX_TIMEOUT, SNAPSHOT_BUILD_TIMEOUT, STORAGE_RELEASE_TIMEOUT,
};
use crate::error::RaftError;
use crate::network::{
    server, AppHandler, AppHooks, CallError, Channel, ClusterIdentity, ConnectError, LinkStream,
    Network, PeerConnection, RpcRequest, RpcResponse,
};
use crate::proposer::{Proposal, Proposer, ProposerStats};
use crate::reader::StateReader;
use crate::storage::Storage;
use crate::types::{Command, CommandResult, NodeId, StateEvent, TypeConfig};

/// How a node with empty storage starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// A fresh node (no vote, no log) initialises a one-member cluster of itself, and
    /// `start` waits (bounded) for a leader.
    InitIfFresh,
    /// A fresh node waits to be added to an existing cluster (`add_learner` from its
    /// leader); `start` does not wait for a leader.
    Join,
}

/// A snapshot of this node's Raft figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RaftStatus {
    pub node_id: NodeId,
    /// "Leader", "Follower", "Candidate", "Learner" or "Shutdown".
    pub state: String,
    pub current_term: u64,
    pub current_leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Index of the first entry still in the log: entries below it were purged (0 when
    /// nothing was purged).
    pub first_log_index: u64,
    /// Voters of the effective membership.
    pub membership: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Log entries proposed by this node's proposer.
    pub entries_proposed: u64,
    /// Commands carried by those entries.
    pub commands_proposed: u64,
    /// Inbound cluster connections closed at once: too many in their handshake from
    /// one address, or no slot left at all.
    pub refused_pending: u64,
    pub refused_full: u64,
    /// Inbound cluster connections that did not finish TLS and the proof of the secret
    /// (timed out, refused, or broken off).
    pub failed_handshakes: u64,
}

/// One member of the effective membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

pub struct RaftNode {
    node_id: NodeId,
    listen_addr: SocketAddr,
    raft: Raft<TypeConfig>,
    identity: Arc<ClusterIdentity>,
    hooks: Arc<AppHooks>,
    last_append: Arc<Mutex<Option<std::time::Instant>>>,
    storage: Storage,
    reader: StateReader,
    events: broadcast::Sender<StateEvent>,
    proposals: mpsc::Sender<Proposal>,
    stats: Arc<ProposerStats>,
    net_stats: Arc<server::NetStats>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    shut_down: AtomicBool,
}

impl RaftNode {
    /// Opens the storage, starts openraft and the RPC listener; a fresh node initialises a
    /// one-member cluster of itself. Returns once a leader is known, or after a bounded wait.
    pub async fn start(cfg: RaftConfig) -> Result<RaftNode, RaftError> {
        Self::start_with(cfg, StartMode::InitIfFresh).await
    }

    pub async fn start_with(cfg: RaftConfig, mode: StartMode) -> Result<RaftNode, RaftError> {
        cfg.validate().map_err(RaftError::Config)?;
        let raft_config = Arc::new(cfg.openraft_config().map_err(RaftError::Config)?);
        let node_id = cfg.node_id;

        let storage = Storage::open_async(&cfg.data_dir.join("raft"))
            .await?
            .keep_in_memory(
                cfg.memory_kinds.iter().cloned(),
                cfg.cached_kinds.iter().cloned(),
                cfg.data_cache_bytes,
            );
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let log_store = storage.log_store();
        let state_machine = storage.state_machine(events.clone()).await?;

        let listener = TcpListener::bind(cfg.listen).await?;
        let listen_addr = listener.local_addr()?;

        let raft = Raft::new(
            node_id,
            raft_config,
            Network::new(
                node_id,
                cfg.identity.clone(),
                Duration::from_millis(cfg.heartbeat_ms),
            ),
            log_store,
            state_machine,
        )
        .await?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let hooks = Arc::new(AppHooks::default());
        let identity = Arc::new(cfg.identity.clone());
        let last_append = Arc::new(Mutex::new(None));
        let net_stats = Arc::new(server::NetStats::default());
        let ctx = Arc::new(server::ServerCtx {
            node_id,
            last_append: last_append.clone(),
            identity: cfg.identity.clone(),
            raft: raft.clone(),
            hooks: hooks.clone(),
            max_pending_per_address: cfg.max_pending_per_address.max(1),
            handshake_timeout: cfg.handshake_timeout,
            stats: net_stats.clone(),
        });
        tasks.push(tokio::spawn(server::serve(
            listener,
            ctx,
            shutdown_rx.clone(),
        )));

        let stats = Arc::new(ProposerStats::default());
        let (proposals, queue) = mpsc::channel(PROPOSAL_QUEUE_CAPACITY);
        let proposer = Proposer {
            raft: raft.clone(),
            node_id,
            max_batch: cfg.max_batch,
            client: rand::random(),
            stats: stats.clone(),
            identity: identity.clone(),
            leader_conn: Default::default(),
        };
        tasks.push(tokio::spawn(proposer.run(queue, shutdown_rx)));

        let node = RaftNode {
            node_id,
            listen_addr,
            raft,
            identity,
            hooks,
            last_append,
            reader: storage.reader(),
            storage,
            events,
            proposals,
            stats,
            net_stats,
            shutdown_tx,
            tasks: Mutex::new(tasks),
            shut_down: AtomicBool::new(false),
        };

        let fresh = !node.raft.is_initialized().await?;
        tracing::info!(node = node_id, %listen_addr, fresh, ?mode, "raft node started");
        if mode == StartMode::InitIfFresh {
            if fresh {
                let members = BTreeMap::from([(node_id, BasicNode::new(listen_addr))]);
                match node.raft.initialize(members).await {
                    Ok(()) => tracing::info!(node = node_id, "initialised a one-node cluster"),
                    // Another node's vote reached us first: we are part of a cluster already.
                    Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(e))) => {
                        tracing::info!(node = node_id, reason = %e, "not initialising")
                    }
                    Err(e) => return Err(RaftError::Internal(format!("initialise: {e}"))),
                }
            }
            let wait = cfg.leader_wait();
            let res = node
                .raft
                .wait(Some(wait))
                .metrics(|m| m.current_leader.is_some(), "a leader is known")
                .await;
            if res.is_err() {
                tracing::warn!(
                    node = node_id,
                    ?wait,
                    "no leader known yet; serving local reads only"
                );
            }
        }
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Proposes one command; returns after it is committed and applied on this node. Many
    /// callers may propose at once: their commands share log entries.
    ///
    /// A `Timeout` or a lost leadership does not mean the command was not applied.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, RaftError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(RaftError::ShutDown);
        }
        let bytes = codec::encoded_len(&command)?;
        if bytes > MAX_COMMAND_BYTES {
            return Err(RaftError::CommandTooLarge {
                bytes,
                limit: MAX_COMMAND_BYTES,
            });
        }
        let (reply, answer) = oneshot::channel();
        let work = async {
            self.proposals
                .send(Proposal {
                    command,
                    bytes,
                    reply,
                })
                .await
                .map_err(|_| RaftError::ShutDown)?;
            answer.await.map_err(|_| RaftError::ShutDown)?
        };
        tokio::time::timeout(PROPOSE_TIMEOUT, work)
            .await
            .map_err(|_| RaftError::Timeout {
                what: "waiting for a proposal to commit",
                after: PROPOSE_TIMEOUT,
            })?
    }

    /// Proposes one command only if this node leads now, never forwarding it: for
    /// decisions only the current leader may take (a failure detector's verdict), which a
    /// deposed leader must not get committed later through the new one. If leadership is
    /// lost before the entry commits, the entry is discarded with the old term's log.
    pub async fn propose_as_leader(&self, command: Command) -> Result<CommandResult, RaftError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(RaftError::ShutDown);
        }
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.node_id) {
            return Err(RaftError::NotLeader { leader });
        }
        let request = crate::types::Request {
            version: crate::types::PROTOCOL_VERSION,
            client: rand::random(),
            serial: 1,
            commands: vec![command],
        };
        let resp = tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(request))
            .await
            .map_err(|_| RaftError::Timeout {
                what: "waiting for a leader-only proposal to commit",
                after: PROPOSE_TIMEOUT,
            })??;
        resp.data
            .results
            .into_iter()
            .next()
            .ok_or_else(|| RaftError::Internal("missing result".into()))
    }

    /// `propose` in two steps: when this returns, the command holds its place in
    /// the proposal queue; the returned future gives its result. A caller that
    /// enqueues commands one after another has them applied in that order while
    /// they still share log entries (`propose` from separate tasks promises no
    /// order between them).
    pub async fn enqueue(
        &self,
        command: Command,
    ) -> Result<impl std::future::Future<Output = Result<CommandResult, RaftError>>, RaftError>
    {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(RaftError::ShutDown);
        }
        let bytes = codec::encoded_len(&command)?;
        if bytes > MAX_COMMAND_BYTES {
            return Err(RaftError::CommandTooLarge {
                bytes,
                limit: MAX_COMMAND_BYTES,
            });
        }
        let (reply, answer) = oneshot::channel();
        self.proposals
            .send(Proposal {
                command,
                bytes,
                reply,
            })
            .await
            .map_err(|_| RaftError::ShutDown)?;
        Ok(async move {
            match tokio::time::timeout(PROPOSE_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(RaftError::ShutDown),
                Err(_) => Err(RaftError::Timeout {
                    what: "waiting for a proposal to commit",
                    after: PROPOSE_TIMEOUT,
                }),
            }
        })
    }

    pub fn state(&self) -> StateReader {
        self.reader.clone()
    }

    /// Waits until this replica has applied `index`, for at most `within`; false when it
    /// had not by then (cut off from the leader, say). Answers at once when it has.
    pub async fn wait_applied(&self, index: u64, within: Duration) -> bool {
        if self.reader.applied_index() >= index {
            return true;
        }
        // openraft's metrics move after the state machine's own index, so a wait on them
        // never ends before the reads see the entry.
        self.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), "a peer's state applied here")
            .await
            .is_ok()
    }

    /// Events of entries applied from now on (not of snapshot installs).
    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.events.subscribe()
    }

    /// Returns once this node has confirmed its leadership with a quorum and applied
    /// everything committed before the call: a local read after it is linearizable.
    pub async fn ensure_linearizable(&self) -> Result<(), RaftError> {
        tokio::time::timeout(READ_INDEX_TIMEOUT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| RaftError::Timeout {
                what: "confirming leadership for a linearizable read",
                after: READ_INDEX_TIMEOUT,
            })??;
        Ok(())
    }

    /// Builds a snapshot of everything applied so far and waits until it is built.
    pub async fn snapshot_now(&self) -> Result<(), RaftError> {
        let applied = self.raft.metrics().borrow().last_applied;
        self.raft.trigger().snapshot().await?;
        let want = applied.index();
        self.raft
            .wait(Some(SNAPSHOT_BUILD_TIMEOUT))
            .metrics(|m| m.snapshot.index() >= want, "snapshot built")
            .await
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => RaftError::Timeout {
                    what: "building a snapshot",
                    after: SNAPSHOT_BUILD_TIMEOUT,
                },
                openraft::metrics::WaitError::ShuttingDown => RaftError::ShutDown,
            })?;
        Ok(())
    }

    pub fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        RaftStatus {
            node_id: self.node_id,
            state: format!("{:?}", m.state),
            current_term: m.current_term,
            current_leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            first_log_index: m.purged.next_index(),
            membership: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            entries_proposed: self.stats.entries.load(Ordering::Relaxed),
            commands_proposed: self.stats.commands.load(Ordering::Relaxed),
            refused_pending: self.net_stats.refused_pending.load(Ordering::Relaxed),
            refused_full: self.net_stats.refused_full.load(Ordering::Relaxed),
            failed_handshakes: self.net_stats.failed_handshakes.load(Ordering::Relaxed),
        }
    }

    /// A member's cluster address, from the effective membership.
    pub fn member_addr(&self, node: NodeId) -> Option<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&node).map(|n| n.addr.clone())
    }

    /// Every member (voters and learners) with its address and whether it votes.
    pub fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        let voters: Vec<NodeId> = m.membership().voter_ids().collect();
        m.membership()
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// Time since a leader's AppendEntries (a heartbeat at least) last succeeded here;
    /// `None` if none ever did.
    pub fn since_leader_append(&self) -> Option<Duration> {
        self.last_append
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    pub fn identity(&self) -> &ClusterIdentity {
        &self.identity
    }

    /// From now on, application requests (`RpcRequest::App`) from authenticated peers go
    /// to `handler`; before this they are answered "still starting".
    pub fn set_app_handler(&self, handler: AppHandler) {
        *self
            .hooks
            .handler
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// From now on, authenticated `Channel::Link` connections are handed to `links`.
    pub fn set_link_acceptor(&self, links: mpsc::Sender<LinkStream>) {
        *self.hooks.links.write().unwrap_or_else(|p| p.into_inner()) = Some(links);
    }

    /// Opens an authenticated connection from this node to `addr` (`to`: the node id
    /// expected there, or `ANY_NODE`).
    pub async fn connect(
        &self,
        addr: &str,
        to: NodeId,
        channel: Channel,
    ) -> Result<PeerConnection, ConnectError> {
        PeerConnection::connect(addr, self.node_id, to, &self.identity, channel).await
    }

    /// One application request to the node at `addr`, answered by its app handler.
    pub async fn call_app(
        &self,
        addr: &str,
        to: NodeId,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let work = async {
            let mut conn = self
                .connect(addr, to, Channel::Raft)
                .await
                .map_err(|e| e.to_string())?;
            match conn.call(&RpcRequest::App(request)).await {
                Ok(RpcResponse::App(answer)) => answer,
                Ok(_) => Err(format!("{addr} answered with another response type")),
                Err(CallError::BadRequest(e)) => Err(format!("{addr} refused the request: {e}")),
                Err(e) => Err(format!("{addr}: {e}")),
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
    }

    /// The openraft handle, for membership changes.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Stops the proposer, the listener and openraft, and waits until openraft has released
    /// the storage. The database closes when this node and every `StateReader` are dropped.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        tracing::info!(node = self.node_id, "raft node shutting down");
        let _ = self.shutdown_tx.send(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        self.raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Internal(format!("raft core did not stop cleanly: {e}")))?;
        // openraft's state-machine worker outlives the core briefly.
        let deadline = tokio::time::Instant::now() + STORAGE_RELEASE_TIMEOUT;
        while self.storage.in_use() {
            if tokio::time::Instant::now() >= deadline {
                return Err(RaftError::Timeout {
                    what: "waiting for openraft to release the storage",
                    after: STORAGE_RELEASE_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for RaftNode {
    fn drop(&mut self) {
        if self.shut_down.load(Ordering::Acquire) {
            return;
        }
        // Best effort without an async context: stop our tasks so that the last Raft
        // handles go away, and ask the core to stop.
        let _ = self.shutdown_tx.send(true);
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let raft = self.raft.clone();
            rt.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}
