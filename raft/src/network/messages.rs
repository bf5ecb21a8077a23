//! Messages on a cluster connection. Each frame holds one of these, codec-encoded.
//!
//! Connection set-up, inside TLS: `Hello` (client) -> `HelloReply::Challenge` (the
//! server's nonce, nothing else) -> `Proof` (the client proves the secret first) ->
//! `HelloReply::Accepted` (the server's proof) or `Refused`. Then, on a `Channel::Raft`
//! connection, `RpcRequest`/`RpcResponse` pairs; a `Channel::Link` connection is handed
//! to the application as a framed stream.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, Request, Response, TypeConfig};

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channel {
    /// Raft RPCs, forwarded proposals and application requests, one at a time.
    Raft,
    /// A long-lived application stream (Chorus's peer link for stanzas).
    Link,
}

impl Channel {
    /// The byte a proof binds for this channel.
    pub fn tag(self) -> u8 {
        match self {
            Channel::Raft => 0,
            Channel::Link => 1,
        }
    }
}

/// First frame from the connecting side: who it is and which node it means to reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u16,
    pub from: NodeId,
    /// The node the caller believes it is connecting to; a node refuses any other id,
    /// because an address may now belong to a different node. `ANY_NODE` when the caller
    /// does not know it yet (joining through a seed address).
    pub to: NodeId,
    pub cluster: String,
    pub nonce: Vec<u8>,
    pub channel: Channel,
}

/// `Hello::to` of a caller that does not know which node it is calling.
pub const ANY_NODE: NodeId = 0;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The client proved the secret; the server proves it back.
    Accepted {
        node: NodeId,
        protocol: u16,
        proof: Vec<u8>,
    },
    /// The connection is closed after this reply. Before the client proved the secret
    /// the reason names nothing of this node or its cluster.
    Refused { reason: String },
    /// The server's nonce; the client answers with `Proof`.
    Challenge { protocol: u16, nonce: Vec<u8> },
}

/// The client's proof of the secret, over the session and its hello's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub proof: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower's batch of commands for the leader to propose (with the follower's
    /// client id and serial, so that a retry is applied once).
    ClientWrite(Request),
    /// An application request (membership, status, ...), answered by the handler the
    /// application registered.
    App(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardError {
    NotLeader { leader: Option<NodeId> },
    Failed(String),
}

#[derive(Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The request frame could not be decoded; the connection is closed after this.
    BadRequest(String),
    /// The response and the index of the log entry that carried the request, so that the
    /// follower can wait until its own replica has applied it (read your writes).
    ClientWrite(Result<(u64, Response), ForwardError>),
    App(Result<Vec<u8>, String>),
}
