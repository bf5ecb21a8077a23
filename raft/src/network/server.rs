//! The listening side: one task per inbound cluster connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::Raft;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use super::auth::{self, ClusterIdentity, Role, Session};
use super::frame::{read_frame, write_frame};
use super::messages::{
    Channel, ForwardError, Hello, HelloReply, Proof, RpcRequest, RpcResponse, ANY_NODE,
};
use super::tls::ClusterStream;
use crate::codec;
use crate::config::{
    IDLE_CONNECTION_TIMEOUT, MAX_FRAME_BYTES, MAX_HELLO_BYTES, MAX_INBOUND_CONNECTIONS,
};
use crate::types::{NodeId, TypeConfig, PROTOCOL_VERSION};

/// The oldest protocol this build accepts on a cluster connection: version 3 introduced
/// the authenticated hello, which older nodes cannot speak.
pub const OLDEST_PEER_PROTOCOL: u16 = 3;

pub type AppFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>;
/// Answers an application request from a node that proved the cluster secret.
pub type AppHandler = Arc<dyn Fn(NodeId, Vec<u8>) -> AppFuture + Send + Sync>;

/// An authenticated `Channel::Link` connection, handed to the application.
pub struct LinkStream {
    pub peer: NodeId,
    pub stream: ClusterStream,
}

/// What the application plugs into the listener once it is ready for it.
#[derive(Default)]
pub struct AppHooks {
    pub(crate) handler: RwLock<Option<AppHandler>>,
    pub(crate) links: RwLock<Option<mpsc::Sender<LinkStream>>>,
}

pub(crate) struct ServerCtx {
    pub node_id: NodeId,
    /// When this node last heard AppendEntries (heartbeats included) from a leader.
    pub last_append: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    pub identity: ClusterIdentity,
    pub raft: Raft<TypeConfig>,
    pub hooks: Arc<AppHooks>,
    pub max_pending_per_address: usize,
    pub handshake_timeout: std::time::Duration,
    pub stats: Arc<NetStats>,
}

/// What the listener refused, for the application's metrics.
#[derive(Default)]
pub struct NetStats {
    pub refused_pending: std::sync::atomic::AtomicU64,
    pub refused_full: std::sync::atomic::AtomicU64,
    pub failed_handshakes: std::sync::atomic::AtomicU64,
}

/// The verdict on a hello before its sender proved anything: only what says nothing
/// of this node (the protocol range is public, like the build).
pub fn check_hello(hello: &Hello) -> Result<(), String> {
    if !(OLDEST_PEER_PROTOCOL..=PROTOCOL_VERSION).contains(&hello.protocol) {
        return Err(version_refusal(hello.protocol));
    }
    if hello.nonce.len() != auth::NONCE_LEN {
        return Err("malformed hello nonce".into());
    }
    Ok(())
}

fn version_refusal(found: u16) -> String {
    format!(
        "protocol version {found} is not supported; this node speaks \
         {OLDEST_PEER_PROTOCOL}..={PROTOCOL_VERSION}"
    )
}

/// What a client that did not prove the secret is told: nothing of this node or its
/// cluster. The node's own log says which of the two it was.
pub const UNPROVEN: &str = "the cluster secret was not proved: check that cluster.name and \
     cluster.secret are the same on every node";

/// The verdict on a hello whose sender proved the secret: now it may be told more.
fn check_proven(node_id: NodeId, hello: &Hello) -> Result<(), String> {
    if hello.to != node_id && hello.to != ANY_NODE {
        return Err(format!(
            "this is node {node_id}, not node {}; the address may have been reassigned: \
             check the cluster membership",
            hello.to
        ));
    }
    Ok(())
}

/// A frame's protocol version, for refusing an older peer with a message naming both
/// versions instead of a decoding error.
fn refuse_version(frame: &[u8]) -> Option<String> {
    let found = u16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
    (!(OLDEST_PEER_PROTOCOL..=PROTOCOL_VERSION).contains(&found)).then(|| version_refusal(found))
}

/// Connections from one address that have not finished the handshake. Anyone can open
/// them, so they are bounded per source address (`MAX_PENDING_PER_ADDRESS`) as well as in
/// all, and each has `HANDSHAKE_TIMEOUT` to prove the secret.
#[derive(Default)]
struct Pending(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct PendingSlot {
    pending: Arc<Pending>,
    ip: std::net::IpAddr,
}

impl Pending {
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<PendingSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            pending: self.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut map = self.pending.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<ServerCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let node_id = ctx.node_id;
    let slots = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
    let pending = Arc::new(Pending::default());
    // Dropping the set when the loop ends aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let limit = ctx.max_pending_per_address;
                    let Some(waiting) = pending.enter(peer.ip(), limit) else {
                        ctx.stats.refused_pending.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(node = node_id, %peer, limit,
                            "too many unproven cluster connections from one address; closing a new one");
                        continue;
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        ctx.stats.refused_full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(node = node_id, %peer, limit = MAX_INBOUND_CONNECTIONS,
                            "too many cluster connections; closing a new one");
                        continue;
                    };
                    let ctx = ctx.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        if let Err(e) = serve_connection(stream, peer, ctx, waiting).await {
                            tracing::debug!(node = node_id, %peer, error = %e, "cluster connection closed");
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(node = node_id, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// The handshake: hello, challenge, proof, answer. Returns the peer's hello when it
/// proved the secret; otherwise the peer has been told as little as possible and the
/// caller closes the connection.
async fn handshake(
    stream: &mut ClusterStream,
    peer: SocketAddr,
    ctx: &ServerCtx,
) -> io::Result<Option<Hello>> {
    let node_id = ctx.node_id;
    let frame = read_frame(stream, MAX_HELLO_BYTES).await?;
    let verdict = match refuse_version(&frame) {
        Some(reason) => Err(reason),
        None => codec::decode::<Hello>(&frame)
            .map_err(|e| format!("cannot decode hello: {e}"))
            .and_then(|h| check_hello(&h).map(|()| h)),
    };
    let hello = match verdict {
        Ok(h) => h,
        Err(reason) => return refuse(stream, peer, node_id, &reason, reason.clone()).await,
    };
    let nonce = auth::nonce();
    let challenge = HelloReply::Challenge {
        protocol: PROTOCOL_VERSION,
        nonce: nonce.clone(),
    };
    write_frame(stream, &encode(&challenge)?).await?;
    let frame = read_frame(stream, MAX_HELLO_BYTES).await?;
    let exporter = stream.exporter();
    let session = Session {
        exporter: &exporter,
        client_nonce: &hello.nonce,
        server_nonce: &nonce,
    };
    let claims = auth::client_claims(
        hello.from,
        hello.to,
        &ctx.identity.name,
        hello.channel.tag(),
    );
    let key = ctx.identity.key();
    let proved = codec::decode::<Proof>(&frame)
        .is_ok_and(|p| auth::verify(key, Role::Client, &session, &claims, &p.proof));
    if !proved {
        let why = if hello.cluster != ctx.identity.name {
            format!(
                "node {} claims cluster {:?}, this node is in {:?}",
                hello.from, hello.cluster, ctx.identity.name
            )
        } else {
            format!(
                "node {} did not prove the cluster secret: check cluster.secret",
                hello.from
            )
        };
        return refuse(stream, peer, node_id, &why, UNPROVEN.into()).await;
    }
    if let Err(reason) = check_proven(node_id, &hello) {
        return refuse(stream, peer, node_id, &reason, reason.clone()).await;
    }
    let accepted = HelloReply::Accepted {
        node: node_id,
        protocol: PROTOCOL_VERSION,
        proof: auth::prove(key, Role::Server, &session, &auth::server_claims(node_id)),
    };
    write_frame(stream, &encode(&accepted)?).await?;
    Ok(Some(hello))
}

/// Logs `why` and tells the peer `told`.
async fn refuse(
    stream: &mut ClusterStream,
    peer: SocketAddr,
    node_id: NodeId,
    why: &str,
    told: String,
) -> io::Result<Option<Hello>> {
    tracing::warn!(node = node_id, %peer, reason = %why, "refused cluster connection");
    write_frame(stream, &encode(&HelloReply::Refused { reason: told })?).await?;
    Ok(None)
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerCtx>,
    waiting: PendingSlot,
) -> io::Result<()> {
    let node_id = ctx.node_id;
    tcp.set_nodelay(true)?;
    let unproven = async {
        let mut stream = match &ctx.identity.tls {
            Some(tls) => tls.accept(tcp).await?,
            None => ClusterStream::Plain(tcp),
        };
        let hello = handshake(&mut stream, peer, &ctx).await?;
        Ok::<_, io::Error>((stream, hello))
    };
    let outcome = tokio::time::timeout(ctx.handshake_timeout, unproven).await;
    drop(waiting);
    let (mut stream, hello) = match outcome {
        Ok(Ok((stream, Some(hello)))) => (stream, hello),
        Ok(Ok((_, None))) => {
            ctx.stats
                .failed_handshakes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        Ok(Err(e)) => {
            ctx.stats
                .failed_handshakes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
        Err(_) => {
            ctx.stats
                .failed_handshakes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no proof of the secret in time",
            ));
        }
    };
    tracing::debug!(node = node_id, from = hello.from, %peer, channel = ?hello.channel,
        "cluster connection accepted");
    if hello.channel == Channel::Link {
        let links = ctx
            .hooks
            .links
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(links) = links {
            let _ = links
                .send(LinkStream {
                    peer: hello.from,
                    stream,
                })
                .await;
        }
        return Ok(());
    }

    loop {
        let next = tokio::time::timeout(
            IDLE_CONNECTION_TIMEOUT,
            read_frame(&mut stream, MAX_FRAME_BYTES),
        );
        let frame = match next.await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection"));
            }
        };
        let raft = &ctx.raft;
        let response = match codec::decode::<RpcRequest>(&frame) {
            Ok(RpcRequest::AppendEntries(req)) => {
                let resp = raft.append_entries(req).await;
                if matches!(&resp, Ok(openraft::raft::AppendEntriesResponse::Success)) {
                    *ctx.last_append.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(std::time::Instant::now());
                }
                RpcResponse::AppendEntries(resp)
            }
            Ok(RpcRequest::Vote(req)) => RpcResponse::Vote(raft.vote(req).await),
            Ok(RpcRequest::InstallSnapshot(req)) => {
                RpcResponse::InstallSnapshot(raft.install_snapshot(req).await)
            }
            Ok(RpcRequest::ClientWrite(req)) => {
                RpcResponse::ClientWrite(match raft.client_write(req).await {
                    Ok(resp) => Ok((resp.log_id.index, resp.data)),
                    Err(openraft::error::RaftError::APIError(
                        openraft::error::ClientWriteError::ForwardToLeader(f),
                    )) => Err(ForwardError::NotLeader {
                        leader: f.leader_id,
                    }),
                    Err(e) => Err(ForwardError::Failed(e.to_string())),
                })
            }
            Ok(RpcRequest::App(bytes)) => {
                let handler = ctx
                    .hooks
                    .handler
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                RpcResponse::App(match handler {
                    Some(h) => h(hello.from, bytes).await,
                    None => Err(format!("node {node_id} is still starting")),
                })
            }
            Err(e) => {
                let reason = format!("node {node_id} cannot decode the request: {e}");
                tracing::warn!(node = node_id, from = hello.from, %peer, %reason, "bad cluster request");
                write_frame(&mut stream, &encode(&RpcResponse::BadRequest(reason))?).await?;
                return Ok(());
            }
        };
        write_frame(&mut stream, &encode(&response)?).await?;
    }
}

fn encode<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    codec::encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
