//! Requests between members (and would-be members) over the authenticated cluster
//! channel, and the messages of the peer links. Both are encoded with the versioned codec
//! of `chorus_raft`, so a node that cannot read a message says which version it got.

use chorus_raft::NodeId;
use serde::{Deserialize, Serialize};

/// A request for another node's cluster service (`RpcRequest::App`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// Who are you, and what do you know of your cluster?
    Info,
    /// A fresh node asks to be added (sent to any member; forwarded to the leader).
    Join {
        node: NodeId,
        addr: String,
        protocol: u16,
    },
    /// Take this member out of the membership (sent to any member; forwarded).
    Remove { node: NodeId },
    /// The leader's liveness probe; a follower that gets it knows it is in contact.
    Ping { leader: NodeId, term: u64 },
    /// Sent by the leader to a node it just removed, which may never see the membership
    /// entry that removed it.
    YouWereRemoved,
    /// A linearizable read of a cluster setting, answered by the leader after it confirmed
    /// its leadership with a quorum.
    ReadSetting { key: String },
    /// The leader's applied index once it has confirmed its leadership with a quorum: a
    /// replica that applies that much has every write committed before the request.
    ReadIndex,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterResponse {
    Info(Box<NodeInfo>),
    Joined { cluster_id: Option<String> },
    Removed,
    Pong,
    Refused(String),
    Setting(Option<String>),
    Index(u64),
}

/// What one node says about itself (`cluster status`, seeds at start-up).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: NodeId,
    pub cluster_addr: String,
    /// `Some` once the node belongs to an initialised cluster.
    pub cluster_id: Option<String>,
    pub initialized: bool,
    pub leader: Option<NodeId>,
    pub role: String,
    pub term: u64,
    pub applied_index: Option<u64>,
    pub protocol: u16,
    pub version: String,
    pub uptime_secs: u64,
    pub sessions: u64,
    pub c2s: String,
    pub http: String,
    /// Cut off from the majority: this node serves no clients now.
    pub cut_off: bool,
}

/// One frame on a peer link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkFrame {
    /// The first frame each way on a new connection: the sender's incarnation (a random
    /// number per process run), and the last numbered message it took from the receiver's
    /// incarnation `from` (0, 0 when it took none from it). The receiver sends again what
    /// it holds beyond that, or, when the sender is a new process, routes it anew.
    Hello {
        incarnation: u64,
        from: u64,
        took: u64,
    },
    /// A message the sender keeps until the receiver acknowledges its number. `after`:
    /// the sender's applied Raft index when it sent it; the receiver acts on the message
    /// once its own replica has applied that much (a bound wait), so that what the sender
    /// saw committed (the sending stream's bind, a roster change) is seen here too.
    Numbered {
        seq: u64,
        after: u64,
        msg: PeerMessage,
    },
    /// State a new connection sends in full anyway (resource updates): never resent.
    Unnumbered(PeerMessage),
    /// The receiver took every numbered message up to `seq` (handed to its router).
    Ack { seq: u64 },
}

/// One message on a peer link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// A stanza (serialized with its namespace) for the receiving node's router, which delivers it locally and never sends
    /// it on again (so a stale routing table cannot make stanzas loop).
    Route { xml: String },
    /// A stanza for one session on the receiving node, written as it is. `alone`: no
    /// copy of it went to a resource on another node (so if this one never arrives, the
    /// account has none).
    Deliver {
        full_jid: String,
        xml: String,
        alone: bool,
    },
    /// For the receiving node's user actor of `user` only.
    ToUser { user: String, msg: UserMessage },
    /// The presence-relevant state of one of the sender's resources.
    Resource(ResourceState),
    /// One of the sender's resources is gone.
    ResourceGone { full_jid: String, session: String },
}

impl PeerMessage {
    /// Stanzas are numbered and kept until acknowledged; resource state is not, since a new
    /// connection starts by sending all of it again.
    pub fn numbered(&self) -> bool {
        matches!(
            self,
            PeerMessage::Route { .. } | PeerMessage::Deliver { .. } | PeerMessage::ToUser { .. }
        )
    }

    /// Roughly the bytes it holds, for the per-peer memory budget.
    pub fn weight(&self) -> usize {
        64 + match self {
            PeerMessage::Route { xml } => xml.len(),
            PeerMessage::Deliver { full_jid, xml, .. } => full_jid.len() + xml.len(),
            PeerMessage::ToUser { user, msg } => {
                user.len()
                    + match msg {
                        UserMessage::ToResources { xml, .. } => xml.len(),
                        UserMessage::PresenceTo { to, .. } => to.len(),
                    }
            }
            PeerMessage::Resource(r) => r.full_jid.len() + r.session.len(),
            PeerMessage::ResourceGone { full_jid, session } => full_jid.len() + session.len(),
        }
    }
}

/// What a user actor on another node acts on for its local resources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserMessage {
    /// A server stanza for some of the user's resources (roster and block list pushes,
    /// subscription requests): 0 roster-interested, 1 available, 2 block-list-interested.
    ToResources { which: u8, xml: String },
    /// Send each local resource's presence (or unavailable) to `to`.
    PresenceTo { to: String, available: bool },
}

/// A resource as the nodes that do not hold it need to know it: enough to choose
/// where a message to the bare JID goes (RFC 6121 8.5.2) and who gets carbons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceState {
    pub full_jid: String,
    pub session: String,
    pub node: NodeId,
    pub available: bool,
    pub priority: i8,
    pub carbons: bool,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    chorus_raft::codec::encode(value).expect("cluster messages always encode")
}

pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    chorus_raft::codec::decode(bytes).map_err(|e| e.to_string())
}
