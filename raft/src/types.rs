//! The commands the cluster agrees on, their results, and the log entry that carries them.
//!
//! Everything here is stored in the log, in snapshots or sent between nodes, so every change
//! to these types is a protocol change: add variants at the end and bump `PROTOCOL_VERSION`.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Version of the log entry and cluster message formats this build writes.
///
/// 2: per-user data and queues (`DataWrite`, `QueuePush`, `QueueRemove`), and snapshots that
/// carry them.
/// 3: clustering: `NodeDown`, `NodeUp`, `CasSetting`, `RemoveSetting`; authenticated cluster
/// connections (challenge and proof of the cluster secret), forwarded proposals, the
/// application channel and peer links.
pub const PROTOCOL_VERSION: u16 = 3;

/// Settings keys the state machine itself keeps under this prefix (down nodes); the admin
/// API does not let clients write them.
pub const SYSTEM_SETTING_PREFIX: &str = "sys.";

/// The setting that marks a node as down (see `Command::NodeDown`).
pub fn node_down_key(node: NodeId) -> String {
    format!("{SYSTEM_SETTING_PREFIX}node.down.{node}")
}

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
    #[serde(with = "serde_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "serde_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
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
    /// Fails with `NoSuchUser`; also drops that user's routes, data (every kind, with its
    /// version) and queues (with their sequence numbers).
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
    /// Changes the keyed values of one (user, kind), e.g. a roster or a vCard, as one
    /// versioned write: first `clear` (every key of that kind), then `deletes`, then `puts`
    /// (a later put of the same key wins). `expect_version` makes it a compare-and-set on
    /// the version of (user, kind); `None` writes unconditionally. Answers `DataWritten`,
    /// `VersionMismatch`, `NoSuchUser` or `Invalid`.
    DataWrite {
        user: String,
        kind: String,
        clear: bool,
        deletes: Vec<String>,
        #[serde(with = "crate::codec::byte_pairs")]
        puts: Vec<(String, Vec<u8>)>,
        expect_version: Option<u64>,
    },
    /// Appends `value` to the queue unless it already holds `limit` items. Answers
    /// `Queued`, `QueueFull`, `NoSuchUser` or `Invalid`.
    QueuePush {
        user: String,
        queue: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        limit: u64,
    },
    /// Removes every item of the queue with `seq <= through_seq`. Answers `QueueRemoved`,
    /// `NoSuchUser` or `Invalid`.
    QueueRemove {
        user: String,
        queue: String,
        through_seq: u64,
    },
    /// The leader found that node unresponsive for the failure timeout: its routes are
    /// dropped and, until `NodeUp`, binds on it are refused (`NodeIsDown`), so a node cut
    /// off from the majority cannot hold routes the others have given up. Answers
    /// `RoutesDropped`.
    NodeDown {
        node: NodeId,
    },
    /// The node answers again (or restarted): it may bind routes again. Answers `Done`.
    NodeUp {
        node: NodeId,
    },
    /// Writes `value` only if the setting currently equals `expect` (`None`: absent).
    /// Answers `Done` or `SettingMismatch`.
    CasSetting {
        key: String,
        expect: Option<String>,
        value: String,
    },
    /// Removes a setting. Answers `Done`.
    RemoveSetting {
        key: String,
    },
    /// `SetPassword`, and the account's streams hear of it (`StateEvent::PasswordChanged`)
    /// so that every node can end them, except the stream `keep_session` that changed it.
    /// Fails with `NoSuchUser`.
    ChangePassword {
        user: String,
        record: UserRecord,
        keep_session: Option<String>,
    },
    /// `QueuePush`, refused (`QueueFull`) also when the queue's items would pass
    /// `max_bytes` in all.
    QueuePushBounded {
        user: String,
        queue: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        limit: u64,
        max_bytes: u64,
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
    /// The version of (user, kind) after the write: every successful `DataWrite` adds
    /// exactly 1, and the first write of a kind gives 1.
    DataWritten {
        version: u64,
    },
    /// `expect_version` differed from the stored version; nothing was written.
    VersionMismatch {
        current: u64,
    },
    /// The sequence number of the new item: 1 for the first item of a (user, queue), then
    /// strictly increasing, never reused after removals (only `DeleteUser` resets it).
    Queued {
        seq: u64,
    },
    /// The queue already holds `len >= limit` items; nothing was added.
    QueueFull {
        len: u64,
    },
    QueueRemoved {
        count: u64,
    },
    /// The command is malformed (an empty name, a NUL character, ...); nothing was done.
    Invalid {
        reason: String,
    },
    /// A bind named a node that is marked down; nothing was done.
    NodeIsDown {
        node: NodeId,
    },
    /// `CasSetting` expected another value; nothing was written.
    SettingMismatch {
        current: Option<String>,
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
    /// A `DataWrite` succeeded; `version` is the new version of (user, kind).
    DataChanged {
        user: String,
        kind: String,
        version: u64,
    },
    /// A `QueuePush` added an item.
    Queued {
        user: String,
        queue: String,
        seq: u64,
    },
    /// Every route of that node was dropped at once (`DropNodeRoutes` or `NodeDown`): the
    /// streams behind them are gone without having said goodbye. Every node applies this,
    /// so each tells only its own local contacts (exactly once per contact).
    RoutesLost {
        node: NodeId,
        routes: Vec<(String, Route)>,
    },
    NodeDown {
        node: NodeId,
    },
    NodeUp {
        node: NodeId,
    },
    /// `ChangePassword` replaced the account's keys.
    PasswordChanged {
        user: String,
        keep_session: Option<String>,
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
