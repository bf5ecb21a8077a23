//! The messages that cross between sessions, user actors and the router.
//!
//! They carry actix `Recipient`s, not concrete actor types, so that features
//! and sessions depend on the router and not the other way round.

use actix::prelude::*;

use crate::xmpp::element::Element;
use crate::xmpp::error::StreamErrorKind;

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

/// How the router and user actors reach one bound client stream.
#[derive(Clone)]
pub struct SessionHandle {
    pub full_jid: String,
    pub session_id: String,
    pub deliver: Recipient<Deliver>,
    pub kick: Recipient<Kick>,
    pub batch: Recipient<DeliverBatch>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("full_jid", &self.full_jid)
            .field("session_id", &self.session_id)
            .finish()
    }
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

/// A server-made probe (RFC 6121 4.3): `requester` wants `contact`'s presence.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Probe {
    pub contact: String,
    pub requester: String,
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
    pub direction: crate::xep::carbons::Direction,
    pub stanza: Element,
}
