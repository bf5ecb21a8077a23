//! The calling side of one cluster connection.

use std::io;

use tokio::net::TcpStream;

use super::auth::{self, ClusterIdentity, Role, Session};
use super::frame::{read_frame, write_frame};
use super::messages::{Channel, Hello, HelloReply, Proof, RpcRequest, RpcResponse, ANY_NODE};
use super::tls::ClusterStream;
use crate::codec::{self, CodecError};
use crate::config::{CONNECT_TIMEOUT, MAX_FRAME_BYTES, MAX_HELLO_BYTES};
use crate::types::{NodeId, PROTOCOL_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("timed out connecting to {addr}")]
    Timeout { addr: String },
    #[error("node at {addr} refused the connection: {reason}")]
    Refused { addr: String, reason: String },
    #[error("{addr} answered as node {actual}, not node {expected}")]
    WrongNode {
        addr: String,
        expected: NodeId,
        actual: NodeId,
    },
    #[error("hello exchange with {addr}: {source}")]
    Codec { addr: String, source: CodecError },
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("request of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit")]
    TooLarge { len: usize },
    #[error("peer could not decode the request: {0}")]
    BadRequest(String),
}

/// The reason of a TLS failure (a certificate refused by either side, an alert), if
/// `e` is one.
fn tls_failure(e: &io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<tokio_rustls::rustls::Error>()?;
    Some(format!(
        "the TLS handshake failed ({tls}): check cluster.tls.enabled, cluster.tls.cert, \
         cluster.tls.key and cluster.tls.ca"
    ))
}

/// A connection on which the handshake succeeded: the peer is the node we meant and both
/// sides proved the cluster secret.
pub struct PeerConnection {
    stream: ClusterStream,
    peer: NodeId,
    addr: String,
}

impl PeerConnection {
    /// Connects to `addr` as node `from`, expecting to reach node `to` (`ANY_NODE`: any),
    /// for `channel`. Bounded by `CONNECT_TIMEOUT`.
    pub async fn connect(
        addr: &str,
        from: NodeId,
        to: NodeId,
        identity: &ClusterIdentity,
        channel: Channel,
    ) -> Result<Self, ConnectError> {
        let work = Self::connect_unbounded(addr, from, to, identity, channel);
        match tokio::time::timeout(CONNECT_TIMEOUT, work).await {
            Ok(res) => res,
            Err(_) => Err(ConnectError::Timeout { addr: addr.into() }),
        }
    }

    async fn connect_unbounded(
        addr: &str,
        from: NodeId,
        to: NodeId,
        identity: &ClusterIdentity,
        channel: Channel,
    ) -> Result<Self, ConnectError> {
        let io_err = |source| ConnectError::Io {
            addr: addr.into(),
            source,
        };
        let codec_err = |source| ConnectError::Codec {
            addr: addr.into(),
            source,
        };
        let refused = |reason: String| ConnectError::Refused {
            addr: addr.into(),
            reason,
        };
        let tcp = TcpStream::connect(addr).await.map_err(io_err)?;
        tcp.set_nodelay(true).map_err(io_err)?;
        // A TLS failure, or bytes that are no frame of ours, is a refusal (a
        // configuration to fix), not a node that is away.
        let mismatch = |e: io::Error| match tls_failure(&e) {
            Some(reason) => refused(reason),
            None if e.kind() == io::ErrorKind::InvalidData => refused(format!(
                "the peer does not speak this protocol ({e}); is cluster.tls.enabled the same \
                 on every node?"
            )),
            None => io_err(e),
        };
        let mut stream = match &identity.tls {
            Some(tls) => tls.connect(addr, tcp).await.map_err(mismatch)?,
            None => ClusterStream::Plain(tcp),
        };
        let nonce = auth::nonce();
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            from,
            to,
            cluster: identity.name.clone(),
            nonce: nonce.clone(),
            channel,
        };
        write_frame(&mut stream, &codec::encode(&hello).map_err(codec_err)?)
            .await
            .map_err(io_err)?;
        let reply = read_frame(&mut stream, MAX_HELLO_BYTES)
            .await
            .map_err(mismatch)?;
        let server_nonce = match codec::decode::<HelloReply>(&reply).map_err(codec_err)? {
            HelloReply::Challenge { nonce, .. } => nonce,
            HelloReply::Refused { reason } => return Err(refused(reason)),
            HelloReply::Accepted { .. } => {
                return Err(refused("the peer skipped the secret challenge".into()))
            }
        };
        let exporter = stream.exporter();
        let session = Session {
            exporter: &exporter,
            client_nonce: &nonce,
            server_nonce: &server_nonce,
        };
        let claims = auth::client_claims(from, to, &identity.name, channel.tag());
        let mine = Proof {
            proof: auth::prove(identity.key(), Role::Client, &session, &claims),
        };
        write_frame(&mut stream, &codec::encode(&mine).map_err(codec_err)?)
            .await
            .map_err(io_err)?;
        let reply = read_frame(&mut stream, MAX_HELLO_BYTES)
            .await
            .map_err(io_err)?;
        let (node, proof) = match codec::decode::<HelloReply>(&reply).map_err(codec_err)? {
            HelloReply::Accepted { node, proof, .. } => (node, proof),
            HelloReply::Refused { reason } => return Err(refused(reason)),
            HelloReply::Challenge { .. } => {
                return Err(refused("the peer challenged twice".into()))
            }
        };
        let claims = auth::server_claims(node);
        if !auth::verify(identity.key(), Role::Server, &session, &claims, &proof) {
            return Err(refused(format!(
                "node {node} did not prove the cluster secret of {:?}",
                identity.name
            )));
        }
        if to != ANY_NODE && node != to {
            return Err(ConnectError::WrongNode {
                addr: addr.into(),
                expected: to,
                actual: node,
            });
        }
        Ok(PeerConnection {
            stream,
            peer: node,
            addr: addr.into(),
        })
    }

    /// The authenticated stream, for a `Channel::Link` connection.
    pub fn into_stream(self) -> ClusterStream {
        self.stream
    }

    pub fn peer(&self) -> NodeId {
        self.peer
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request and waits for its response. Not cancel-safe: a connection whose
    /// call was abandoned must be dropped.
    pub async fn call(&mut self, request: &RpcRequest) -> Result<RpcResponse, CallError> {
        let payload = codec::encode(request)?;
        self.call_encoded(&payload).await
    }

    pub(crate) async fn call_encoded(&mut self, payload: &[u8]) -> Result<RpcResponse, CallError> {
        if payload.len() > MAX_FRAME_BYTES {
            return Err(CallError::TooLarge { len: payload.len() });
        }
        write_frame(&mut self.stream, payload).await?;
        let frame = read_frame(&mut self.stream, MAX_FRAME_BYTES).await?;
        match codec::decode::<RpcResponse>(&frame)? {
            RpcResponse::BadRequest(reason) => Err(CallError::BadRequest(reason)),
            resp => Ok(resp),
        }
    }
}
