use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal};

use crate::codec::CodecError;
use crate::types::{NodeId, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    #[error("raft storage failed: {0}")]
    Storage(Box<StorageError>),
    #[error("{}", not_leader_message(.leader))]
    NotLeader { leader: Option<NodeId> },
    #[error("the raft node is shut down")]
    ShutDown,
    #[error("the raft core panicked; restart this node")]
    Panicked,
    #[error("timed out after {after:?} while {what}")]
    Timeout { what: &'static str, after: Duration },
    #[error("cannot reach a quorum of the cluster: {0}")]
    NoQuorum(String),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("invalid raft configuration: {0}")]
    Config(String),
    #[error("cluster listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("command of {bytes} bytes exceeds the {limit}-byte limit")]
    CommandTooLarge { bytes: usize, limit: usize },
    #[error("internal error: {0}")]
    Internal(String),
}

fn not_leader_message(leader: &Option<NodeId>) -> String {
    match leader {
        Some(id) => format!("this node is not the leader; send the request to node {id}"),
        None => "this node is not the leader and no leader is known yet; retry shortly".into(),
    }
}

impl From<StorageError> for RaftError {
    fn from(e: StorageError) -> Self {
        RaftError::Storage(Box::new(e))
    }
}

impl From<Fatal<NodeId>> for RaftError {
    fn from(f: Fatal<NodeId>) -> Self {
        match f {
            Fatal::StorageError(e) => e.into(),
            Fatal::Panicked => RaftError::Panicked,
            Fatal::Stopped => RaftError::ShutDown,
        }
    }
}

impl<E: Into<RaftError>> From<openraft::error::RaftError<NodeId, E>> for RaftError {
    fn from(e: openraft::error::RaftError<NodeId, E>) -> Self {
        match e {
            openraft::error::RaftError::APIError(api) => api.into(),
            openraft::error::RaftError::Fatal(f) => f.into(),
        }
    }
}

impl From<ClientWriteError<NodeId, openraft::BasicNode>> for RaftError {
    fn from(e: ClientWriteError<NodeId, openraft::BasicNode>) -> Self {
        match e {
            ClientWriteError::ForwardToLeader(f) => RaftError::NotLeader {
                leader: f.leader_id,
            },
            ClientWriteError::ChangeMembershipError(e) => RaftError::Membership(e.to_string()),
        }
    }
}

impl From<CheckIsLeaderError<NodeId, openraft::BasicNode>> for RaftError {
    fn from(e: CheckIsLeaderError<NodeId, openraft::BasicNode>) -> Self {
        match e {
            CheckIsLeaderError::ForwardToLeader(f) => RaftError::NotLeader {
                leader: f.leader_id,
            },
            CheckIsLeaderError::QuorumNotEnough(q) => RaftError::NoQuorum(q.to_string()),
        }
    }
}

impl From<openraft::error::Infallible> for RaftError {
    fn from(e: openraft::error::Infallible) -> Self {
        match e {}
    }
}
