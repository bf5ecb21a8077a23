//! The messages that cross between sessions, user actors, features and the router.
//!
//! They carry actix `Recipient`s, never concrete actor types, so that no part needs to
//! name another's actor to talk to it.

use actix::prelude::*;

use super::session::SessionHandle;
use crate::xmpp::element::Element;
use crate::xmpp::error::StreamErrorKind;
use crate::xmpp::stanza::StanzaKind;

/// A stanza for one client stream to write out.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub Element);

/// End a client stream with this stream error (conflict, shutdown, ...).
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Kick {
    pub condition: StreamErrorKind,
    pub text: Option<String>,
}

/// A stream has bound a resource and can receive stanzas.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Register(pub SessionHandle);

/// A stream has ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Unregister {
    pub full_jid: String,
    pub session_id: String,
}

/// A stanza from a local client (with `from` already stamped) or from the
/// server itself, for the router to deliver by its `to`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RouteStanza(pub Element);

/// Close every client stream: the node is shutting down.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ShutdownSessions;

/// Presence for one account's streams on this node only (each node tells its own local
/// contacts that a stream elsewhere has ended, so each contact hears once).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PresenceLocal {
    pub user: String,
    pub stanza: Element,
}

/// Close every client stream with this text: the node stopped serving clients (cut off
/// from the majority, leaving the cluster).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DisconnectAll {
    pub text: String,
}

/// Counts for the status API and metrics.
#[derive(Message, Debug)]
#[rtype(result = "RouterStats")]
pub struct GetStats;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RouterStats {
    pub sessions: usize,
    pub online_users: usize,
    pub routed: u64,
    pub bounced: u64,
    /// Stanzas refused because a state read they depended on failed.
    pub read_refusals: u64,
    /// State-machine events (routing changes, account changes) the router has handled.
    pub state_events: u64,
    /// Which other nodes hold an account's streams: answered from memory (the state
    /// unchanged since it was read), or read from the routing table.
    pub remote_nodes_remembered: u64,
    pub remote_nodes_read: u64,
}

/// A per-stream switch a feature sets on the sender's own session.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum SessionFlag {
    /// XEP-0280: this stream wants (or no longer wants) copies of its account's chats.
    Carbons(bool),
    /// RFC 6121 2.1.6: this stream asked for the roster, so it gets roster pushes.
    RosterInterest,
    /// XEP-0191 3.3: this stream asked for the block list, so it gets block list pushes.
    BlocklistInterest,
}

/// Which of a user's resources get a `ToResources` stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Streams that asked for the roster (roster pushes, RFC 6121 2.1.6).
    RosterInterested,
    /// Streams that sent available presence (subscription requests, RFC 6121 3.1.3).
    Available,
    /// Streams that asked for the block list (block list pushes, XEP-0191 3.3).
    BlocklistInterested,
}

/// A stanza from the server for some of a user's resources; each copy is
/// addressed to the resource's full JID.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ToResources {
    pub user: String,
    pub which: Which,
    pub stanza: Element,
}

/// Send each available resource's current presence (or unavailable) of `user` to `to`
/// (after a subscription is approved or cancelled, RFC 6121 3.1.5, 3.2.2).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PresenceTo {
    pub user: String,
    pub to: String,
    pub available: bool,
}

/// A resource's own undirected presence (RFC 6121 4.2, 4.4, 4.5).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct OwnPresence {
    pub full_jid: String,
    pub session_id: String,
    pub stanza: Element,
}

/// A resource sent presence directly to `to` (RFC 6121 4.6): remembered so that
/// `to` hears when the resource goes away.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Directed {
    pub full_jid: String,
    pub to: String,
    pub available: bool,
}

/// Stanzas written to one stream in order, with back-pressure: the answer
/// (true) comes once all of them are written to the socket, false if the
/// stream ended first (offline delivery, XEP-0160).
#[derive(Message, Debug, Clone)]
#[rtype(result = "bool")]
pub struct DeliverBatch(pub Vec<Element>);

/// XEP-0280: a stream switched carbons on or off.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CarbonsEnabled {
    pub full_jid: String,
    pub on: bool,
}

/// XEP-0280: a message one of the account's streams sent (`sent`) or one
/// stream received by full JID (`received`), for the others' carbons.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Carbon {
    pub account: String,
    /// The stream that sent or received the original; it gets no copy.
    pub full_jid: String,
    pub direction: CarbonDirection,
    pub stanza: Element,
}

/// XEP-0280: which way the message a carbon copies went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CarbonDirection {
    /// One of the account's streams sent it.
    Sent,
    /// One of the account's streams received it.
    Received,
}

/// A stream bound a resource of this user on this node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddResource(pub SessionHandle);

/// A stream of this user on this node ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveResource {
    pub full_jid: String,
    pub session_id: String,
}

/// A stanza for this user that the router could not hand to one session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForUser {
    pub stanza: Element,
    pub kind: StanzaKind,
    /// `true`: addressed to a full JID whose resource is not (or no longer) here.
    pub missing_resource: bool,
}

/// This resource asked for the roster: it gets roster pushes from now on.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RosterInterest {
    pub full_jid: String,
}

/// This resource asked for the block list: it gets block list pushes from now on.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BlocklistInterest {
    pub full_jid: String,
}

/// Presence for this node's available resources only: every node sends its own copy
/// (a crashed node's users going unavailable).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LocalPresence(pub Element);

/// A message for this user was stored offline (the state machine said so).
#[derive(Message)]
#[rtype(result = "()")]
pub struct OfflineQueued;

/// Stop once the router has no more resources for this user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Everything the router hands to the actor of one online user (one `Recipient` for all,
/// so that the router needs to know nothing of the actor).
#[derive(Message)]
#[rtype(result = "()")]
pub enum UserEvent {
    AddResource(AddResource),
    RemoveResource(RemoveResource),
    ForUser(ForUser),
    OwnPresence(OwnPresence),
    Directed(Directed),
    PresenceTo(PresenceTo),
    ToResources(ToResources),
    RosterInterest(RosterInterest),
    BlocklistInterest(BlocklistInterest),
    CarbonsEnabled(CarbonsEnabled),
    Carbon(Carbon),
    LocalPresence(LocalPresence),
    OfflineQueued(OfflineQueued),
    Stop(Stop),
}

macro_rules! user_event_from {
    ($($variant:ident),*) => {
        $(impl From<$variant> for UserEvent {
            fn from(m: $variant) -> UserEvent {
                UserEvent::$variant(m)
            }
        })*
    };
}
user_event_from!(
    AddResource,
    RemoveResource,
    ForUser,
    OwnPresence,
    Directed,
    PresenceTo,
    ToResources,
    RosterInterest,
    BlocklistInterest,
    CarbonsEnabled,
    Carbon,
    LocalPresence,
    OfflineQueued,
    Stop
);

/// How the router reaches one online user's actor.
pub type UserHandle = actix::Recipient<UserEvent>;

/// Starts the actor of a user who just came online here (the node passes the router
/// one, so that the router never names the actor).
pub type UserSpawner = std::sync::Arc<dyn Fn(&str) -> UserHandle + Send + Sync>;
