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

/// A resource's own (undirected) presence changed.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PresenceChanged {
    pub full_jid: String,
    pub session_id: String,
    pub available: bool,
    pub priority: i8,
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
}
