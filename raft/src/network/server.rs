//! The listening side: one task per inbound cluster connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::frame::{read_frame, write_frame};
use super::messages::{Hello, HelloReply, RpcRequest, RpcResponse};
use crate::codec::{self, OLDEST_READABLE_VERSION};
use crate::config::{
    HELLO_TIMEOUT, IDLE_CONNECTION_TIMEOUT, MAX_FRAME_BYTES, MAX_HELLO_BYTES,
    MAX_INBOUND_CONNECTIONS,
};
use crate::types::{NodeId, TypeConfig, PROTOCOL_VERSION};

/// The verdict on a hello, with the reason when refused.
pub fn check_hello(node_id: NodeId, hello: &Hello) -> Result<(), String> {
    if !(OLDEST_READABLE_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol) {
        return Err(format!(
            "protocol version {} is not supported; node {node_id} speaks \
             {OLDEST_READABLE_VERSION}..={PROTOCOL_VERSION}",
            hello.protocol
        ));
    }
    if hello.to != node_id {
        return Err(format!(
            "this is node {node_id}, not node {}; the address may have been reassigned: \
             check the cluster membership",
            hello.to
        ));
    }
    Ok(())
}

pub(crate) async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    node_id: NodeId,
    mut shutdown: watch::Receiver<bool>,
) {
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
                    let raft = raft.clone();
                    conns.spawn(async move {
                        let _slot = slot;
                        if let Err(e) = serve_connection(stream, peer, raft, node_id).await {
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

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    raft: Raft<TypeConfig>,
    node_id: NodeId,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut stream, MAX_HELLO_BYTES))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello in time"))??;
    let verdict = codec::decode::<Hello>(&hello)
        .map_err(|e| format!("cannot decode hello: {e}"))
        .and_then(|h| check_hello(node_id, &h).map(|()| h));
    let reply = match &verdict {
        Ok(_) => HelloReply::Accepted {
            node: node_id,
            protocol: PROTOCOL_VERSION,
        },
        Err(reason) => HelloReply::Refused {
            reason: reason.clone(),
        },
    };
    write_frame(&mut stream, &encode(&reply)?).await?;
    let hello = match verdict {
        Ok(h) => h,
        Err(reason) => {
            tracing::warn!(node = node_id, %peer, %reason, "refused cluster connection");
            return Ok(());
        }
    };
    tracing::debug!(node = node_id, from = hello.from, %peer, "cluster connection accepted");

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
        let response = match codec::decode::<RpcRequest>(&frame) {
            Ok(RpcRequest::AppendEntries(req)) => {
                RpcResponse::AppendEntries(raft.append_entries(req).await)
            }
            Ok(RpcRequest::Vote(req)) => RpcResponse::Vote(raft.vote(req).await),
            Ok(RpcRequest::InstallSnapshot(req)) => {
                RpcResponse::InstallSnapshot(raft.install_snapshot(req).await)
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
