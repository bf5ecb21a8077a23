//! chorus-raft: the replicated cluster state of Chorus.
//!
//! openraft 0.9 (storage v2) on RocksDB, a pure state machine (`machine`), snapshots, and
//! a TCP transport between nodes. It knows nothing of XMPP beyond the commands it applies:
//! JIDs are opaque strings, except that a full JID is its bare JID, '/', and a resource.
//!
//! See docs/raft.md for the storage layout, formats and durability rules.
#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
mod error;
mod faults;
pub mod machine;
pub mod network;
mod node;
mod proposer;
mod reader;
pub mod storage;
mod types;

pub use config::RaftConfig;
pub use error::RaftError;
pub use machine::QueueMeta;
pub use node::{Member, RaftNode, RaftStatus, StartMode};
pub use reader::{ReadError, StateReader};
pub use types::{node_down_key, SYSTEM_SETTING_PREFIX};
pub use types::{
    Command, CommandResult, Entry, LogId, NodeId, Request, Response, Route, ScramCredential,
    StateEvent, TypeConfig, UserRecord, PROTOCOL_VERSION,
};
