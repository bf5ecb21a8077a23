//! The commands the cluster agrees on, their results, and the log entry that carries them.
//!
//! Everything here is stored in the log, in snapshots or sent between nodes, so every change
//! to these types is a protocol change: add variants at the end and bump `PROTOCOL_VERSION`.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Version of the log entry and cluster message formats this build writes.
pub const PROTOCOL_VERSION: u16 = 1;

pub type NodeId = u64;

/// Where one full JID is connected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub node: NodeId,
    pub session: String,
}

/// The PBKDF2-derived SCRAM keys of one hash function (RFC 5802).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub scram_sha1: ScramCredential,
    pub scram_sha256: ScramCredential,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Noop,
    /// `user` is the normalized bare JID ("alice@localhost"); fails with `UserExists`.
    CreateUser {
        user: String,
        record: UserRecord,
    },
    /// Fails with `NoSuchUser`.
    SetPassword {
        user: String,
        record: UserRecord,
    },
    /// Fails with `NoSuchUser`; also drops that user's routes.
    DeleteUser {
        user: String,
    },
    /// Inserts or replaces the route of that full JID ("alice@localhost/phone").
    BindResource {
        full_jid: String,
        route: Route,
    },
    /// Removes the route only if the stored route has that session.
    UnbindResource {
        full_jid: String,
        session: String,
    },
    /// Removes every route on that node (a restarting node drops its stale sessions).
    DropNodeRoutes {
        node: NodeId,
    },
    /// Cluster-wide settings.
    SetSetting {
        key: String,
        value: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Done,
    UserExists,
    NoSuchUser,
    /// `replaced` is the route that was displaced; `None` for a new route or when the same
    /// route (node and session) was bound again.
    Bound {
        replaced: Option<Route>,
    },
    Unbound {
        removed: bool,
    },
    RoutesDropped {
        count: u64,
    },
}

/// What changed, emitted when entries are applied (not when a snapshot is installed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateEvent {
    RouteReplaced {
        full_jid: String,
        old: Route,
        new: Route,
    },
    RouteRemoved {
        full_jid: String,
        route: Route,
    },
    UserDeleted {
        user: String,
    },
}

/// The payload of one normal log entry: a batch of commands from one proposer.
///
/// `(client, serial)` identify the batch so that a retried request is applied once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u16,
    pub client: u64,
    pub serial: u64,
    pub commands: Vec<Command>,
}

/// One result per command of the request, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<CommandResult>,
}

openraft::declare_raft_types!(
    /// Chorus's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;
