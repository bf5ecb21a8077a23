//! The cluster RPC transport: TCP with TLS (`tls`), length-prefixed frames, a hello that
//! proves the cluster secret and names the node the caller means to reach (`auth`), then
//! request/response pairs (AppendEntries, Vote, InstallSnapshot chunks).

pub mod auth;
mod connection;
pub mod frame;
pub mod messages;
pub(crate) mod server;
pub mod tls;

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::auth::ClusterIdentity;
pub use self::connection::{CallError, ConnectError, PeerConnection};
pub use self::messages::{
    Channel, ForwardError, Hello, HelloReply, RpcRequest, RpcResponse, ANY_NODE,
};
pub use self::server::{check_hello, AppFuture, AppHandler, AppHooks, LinkStream};
pub use self::tls::{ClusterStream, ClusterTls};
use crate::codec;
use crate::config::{MAX_APPEND_BYTES, MAX_FRAME_BYTES, MAX_IDLE_CONNECTIONS_PER_PEER};
use crate::types::{NodeId, TypeConfig};

type Rpc<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Idle connections by (node id, address): a connection is only reused for the node and
/// address it was opened to.
type IdlePool = Arc<Mutex<HashMap<(NodeId, String), Vec<PeerConnection>>>>;

/// openraft's network factory: one `PeerClient` per target, sharing idle connections.
#[derive(Clone)]
pub struct Network {
    node_id: NodeId,
    identity: Arc<ClusterIdentity>,
    idle: IdlePool,
    retry: Duration,
}

impl Network {
    /// `retry`: how soon a peer that could not be reached is tried again (the heartbeat
    /// interval). openraft's default, 500 ms, let a node resumed after a pause or a
    /// partition wait so long for the leader that its election timer fired first, and
    /// the election it started deposed a leader that was fine (found by tests/cluster.rs
    /// on a loaded machine).
    pub fn new(node_id: NodeId, identity: ClusterIdentity, retry: Duration) -> Self {
        Network {
            node_id,
            identity: Arc::new(identity),
            idle: Arc::default(),
            retry,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            from: self.node_id,
            identity: self.identity.clone(),
            target,
            node: node.clone(),
            conn: None,
            connecting: None,
            idle: self.idle.clone(),
            retry: self.retry,
        }
    }
}

pub struct PeerClient {
    from: NodeId,
    identity: Arc<ClusterIdentity>,
    target: NodeId,
    node: BasicNode,
    conn: Option<PeerConnection>,
    /// A connection being made, which may outlive the call that started it (see `connect`).
    connecting: Option<JoinHandle<Result<PeerConnection, ConnectError>>>,
    idle: IdlePool,
    retry: Duration,
}

enum Failure {
    Unreachable(ConnectError),
    Call(CallError),
    Timeout(Duration),
}

impl Drop for PeerClient {
    fn drop(&mut self) {
        if let Some(connecting) = self.connecting.take() {
            connecting.abort();
        }
        if let Some(conn) = self.conn.take() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let slot = idle
                .entry((self.target, self.node.addr.clone()))
                .or_default();
            if slot.len() < MAX_IDLE_CONNECTIONS_PER_PEER {
                slot.push(conn);
            }
        }
    }
}

impl PeerClient {
    fn take_idle(&self) -> Option<PeerConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(&(self.target, self.node.addr.clone()))?.pop()
    }

    /// One request/response within `ttl`. A reused connection that fails is replaced by a
    /// fresh one once: the peer may have restarted since it was last used.
    async fn call(&mut self, request: RpcRequest, ttl: Duration) -> Result<RpcResponse, Failure> {
        let deadline = Instant::now() + ttl;
        let payload = codec::encode(&request).map_err(|e| Failure::Call(e.into()))?;
        if payload.len() > MAX_FRAME_BYTES {
            return Err(Failure::Call(CallError::TooLarge { len: payload.len() }));
        }
        let mut retried = false;
        loop {
            let reused = self.conn.take().or_else(|| self.take_idle());
            let was_reused = reused.is_some();
            let mut conn = match reused {
                Some(c) => c,
                None => self.connect(deadline).await?,
            };
            // On timeout the connection is dropped with the future: its stream may still
            // carry the late response.
            match tokio::time::timeout_at(deadline, conn.call_encoded(&payload)).await {
                Err(_) => return Err(Failure::Timeout(ttl)),
                Ok(Ok(resp)) => {
                    self.conn = Some(conn);
                    return Ok(resp);
                }
                Ok(Err(CallError::Io(e))) if was_reused && !retried => {
                    tracing::debug!(node = self.from, target = self.target, error = %e,
                        "reused cluster connection failed; reconnecting");
                    retried = true;
                }
                Ok(Err(e)) => return Err(Failure::Call(e)),
            }
        }
    }

    /// A new connection by `deadline`. The attempt itself runs for up to
    /// `CONNECT_TIMEOUT` whatever the deadline, and a call that runs out of time leaves it
    /// for the next call to pick up: a TLS handshake to a loaded peer can take longer than
    /// one heartbeat-bound RPC, and an attempt dropped at each deadline would never
    /// connect at all (found by tests/cluster.rs on a loaded machine: a leader stayed
    /// cut off from both followers).
    async fn connect(&mut self, deadline: Instant) -> Result<PeerConnection, Failure> {
        let attempt = self.connecting.get_or_insert_with(|| {
            let (addr, from, to) = (self.node.addr.clone(), self.from, self.target);
            let identity = self.identity.clone();
            // Bounded by CONNECT_TIMEOUT inside.
            tokio::spawn(async move {
                PeerConnection::connect(&addr, from, to, &identity, Channel::Raft).await
            })
        });
        let outcome = match tokio::time::timeout_at(deadline, attempt).await {
            Err(_) => {
                return Err(Failure::Unreachable(ConnectError::Timeout {
                    addr: self.node.addr.clone(),
                }))
            }
            Ok(outcome) => outcome,
        };
        self.connecting = None;
        match outcome {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(Failure::Unreachable(e)),
            Err(join) => Err(Failure::Unreachable(ConnectError::Io {
                addr: self.node.addr.clone(),
                source: std::io::Error::other(join.to_string()),
            })),
        }
    }

    fn rpc_error<E: Error>(&self, f: Failure, action: RPCTypes) -> RPCError<NodeId, BasicNode, E> {
        match f {
            Failure::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            Failure::Call(e) => RPCError::Network(NetworkError::new(&e)),
            Failure::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.from,
                target: self.target,
                timeout,
            }),
        }
    }

    fn remote<E: Error>(&self, e: E) -> RPCError<NodeId, BasicNode, E> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.node.clone(),
            e,
        ))
    }

    fn unexpected<E: Error>(&self, what: &str) -> RPCError<NodeId, BasicNode, E> {
        let e = std::io::Error::other(format!(
            "node {} answered a {what} request with another response type",
            self.target
        ));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.retry))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        // openraft gives an AppendEntries one heartbeat interval, whatever its size: a
        // message of many large entries (offline messages of 16 KiB each, say) could never
        // finish in time, and the leader would lose its followers. Past the budget it is
        // sent in parts (docs/raft.md, "Limits").
        if entries > 1 {
            let fit = entries_within(&rpc.entries, MAX_APPEND_BYTES);
            if fit < entries {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(fit),
                ));
            }
        }
        match self
            .call(RpcRequest::AppendEntries(rpc), option.soft_ttl())
            .await
        {
            Ok(RpcResponse::AppendEntries(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.unexpected("AppendEntries")),
            // Ask openraft to send fewer entries per message; a single entry cannot shrink.
            Err(Failure::Call(CallError::TooLarge { .. })) if entries > 1 => Err(
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)),
            ),
            Err(f) => Err(self.rpc_error(f, RPCTypes::AppendEntries)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self
            .call(RpcRequest::InstallSnapshot(rpc), option.soft_ttl())
            .await
        {
            Ok(RpcResponse::InstallSnapshot(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.unexpected("InstallSnapshot")),
            Err(f) => Err(self.rpc_error(f, RPCTypes::InstallSnapshot)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>> {
        match self.call(RpcRequest::Vote(rpc), option.soft_ttl()).await {
            Ok(RpcResponse::Vote(r)) => r.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.unexpected("Vote")),
            Err(f) => Err(self.rpc_error(f, RPCTypes::Vote)),
        }
    }
}

/// How many of `entries`, from the first, fit in `budget` bytes encoded: at least one.
fn entries_within(entries: &[crate::types::Entry], budget: usize) -> u64 {
    let mut bytes = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        bytes = bytes.saturating_add(codec::encoded_len(entry).unwrap_or(usize::MAX));
        if bytes > budget {
            return (i as u64).max(1);
        }
    }
    entries.len() as u64
}
