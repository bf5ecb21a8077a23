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

use super::auth::{self, ClusterIdentity, Role};
use super::frame::{read_frame, write_frame};
use super::messages::{
    Channel, ForwardError, Hello, HelloReply, Proof, RpcRequest, RpcResponse, ANY_NODE,
};
use crate::codec;
use crate::config::{
    HELLO_TIMEOUT, IDLE_CONNECTION_TIMEOUT, MAX_FRAME_BYTES, MAX_HELLO_BYTES,
    MAX_INBOUND_CONNECTIONS,
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
    pub stream: TcpStream,
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
}

/// The verdict on a hello, with the reason when refused.
pub fn check_hello(node_id: NodeId, cluster: &str, hello: &Hello) -> Result<(), String> {
    if !(OLDEST_PEER_PROTOCOL..=PROTOCOL_VERSION).contains(&hello.protocol) {
        return Err(format!(
            "protocol version {} is not supported; node {node_id} speaks \
             {OLDEST_PEER_PROTOCOL}..={PROTOCOL_VERSION}",
            hello.protocol
        ));
    }
    if hello.cluster != cluster {
        return Err(format!(
            "this node belongs to cluster {cluster:?}, not {:?}",
            hello.cluster
        ));
    }
    if hello.to != node_id && hello.to != ANY_NODE {
        return Err(format!(
            "this is node {node_id}, not node {}; the address may have been reassigned: \
             check the cluster membership",
            hello.to
        ));
    }
    if hello.nonce.len() != auth::NONCE_LEN {
        return Err("malformed hello nonce".into());
    }
    Ok(())
}

/// A frame's protocol version, for refusing an older peer with a message naming both
/// versions instead of a decoding error.
fn refuse_version(node_id: NodeId, frame: &[u8]) -> Option<String> {
    let found = u16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
    (!(OLDEST_PEER_PROTOCOL..=PROTOCOL_VERSION).contains(&found)).then(|| {
        format!(
            "protocol version {found} is not supported; node {node_id} speaks \
             {OLDEST_PEER_PROTOCOL}..={PROTOCOL_VERSION}"
        )
    })
}

pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<ServerCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let node_id = ctx.node_id;
    let slots = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
    // Dropping the set when the loop ends aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(node = node_id, %peer, limit = MAX_INBOUND_CONNECTIONS,
                            "too many cluster connections; closing a new one");
                        continue;
                    };
                    let ctx = ctx.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        if let Err(e) = serve_connection(stream, peer, ctx).await {
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

/// The handshake: hello, challenge, proof. Returns the peer's hello when it proved the
/// secret; otherwise the peer has been told why and the caller closes the connection.
async fn handshake(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &ServerCtx,
) -> io::Result<Option<Hello>> {
    let node_id = ctx.node_id;
    let frame = tokio::time::timeout(HELLO_TIMEOUT, read_frame(stream, MAX_HELLO_BYTES))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello in time"))??;
    let verdict = match refuse_version(node_id, &frame) {
        Some(reason) => Err(reason),
        None => codec::decode::<Hello>(&frame)
            .map_err(|e| format!("cannot decode hello: {e}"))
            .and_then(|h| check_hello(node_id, &ctx.identity.name, &h).map(|()| h)),
    };
    let hello = match verdict {
        Ok(h) => h,
        Err(reason) => return refuse(stream, peer, node_id, reason).await,
    };
    let nonce = auth::nonce();
    let challenge = HelloReply::Challenge {
        node: node_id,
        protocol: PROTOCOL_VERSION,
        proof: auth::prove(
            &ctx.identity.secret,
            Role::Server,
            &hello.nonce,
            &nonce,
            node_id,
        ),
        nonce: nonce.clone(),
    };
    write_frame(stream, &encode(&challenge)?).await?;
    let frame = tokio::time::timeout(HELLO_TIMEOUT, read_frame(stream, MAX_HELLO_BYTES))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no proof in time"))??;
    let proved = codec::decode::<Proof>(&frame).is_ok_and(|p| {
        auth::verify(
            &ctx.identity.secret,
            Role::Client,
            &hello.nonce,
            &nonce,
            hello.from,
            &p.proof,
        )
    });
    if !proved {
        let reason = format!(
            "node {} did not prove the cluster secret of {:?}: check cluster.secret",
            hello.from, ctx.identity.name
        );
        return refuse(stream, peer, node_id, reason).await;
    }
    let accepted = HelloReply::Accepted {
        node: node_id,
        protocol: PROTOCOL_VERSION,
    };
    write_frame(stream, &encode(&accepted)?).await?;
    Ok(Some(hello))
}

async fn refuse(
    stream: &mut TcpStream,
    peer: SocketAddr,
    node_id: NodeId,
    reason: String,
) -> io::Result<Option<Hello>> {
    tracing::warn!(node = node_id, %peer, %reason, "refused cluster connection");
    write_frame(stream, &encode(&HelloReply::Refused { reason })?).await?;
    Ok(None)
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ServerCtx>,
) -> io::Result<()> {
    let node_id = ctx.node_id;
    stream.set_nodelay(true)?;
    let Some(hello) = handshake(&mut stream, peer, &ctx).await? else {
        return Ok(());
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
