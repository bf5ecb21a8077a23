//! Client-to-server streams (RFC 6120): listeners, TLS, stream negotiation
//! (STARTTLS, SASL, resource binding) and the session actor of a bound stream.
//!
//! Negotiation runs in a plain task that owns the socket, because STARTTLS has
//! to take the socket back from the parser; once a resource is bound the
//! stream is split between a parser task, a writer task and the session actor.

pub mod listener;
pub mod negotiate;
pub mod session;
pub mod tls;
pub mod transport;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use actix::prelude::*;
use chorus_raft::{RaftNode, StateReader, UserRecord};

use crate::auth::CredentialStore;
use crate::config::Settings;
use crate::router::Router;
use crate::xmpp::stream::Limits;

/// What every client connection of this node shares.
pub struct C2s {
    pub settings: Arc<Settings>,
    pub node_id: u64,
    pub raft: Arc<RaftNode>,
    pub router: Addr<Router>,
    pub tls: tokio_rustls::TlsAcceptor,
    pub credentials: Arc<dyn CredentialStore>,
    pub limits: Limits,
    /// Where session actors live (actors cannot start inside plain tokio tasks).
    pub arbiter: actix::ArbiterHandle,
    pub stats: C2sStats,
}

#[derive(Default)]
pub struct C2sStats {
    pub connections_accepted: AtomicU64,
    pub auth_successes: AtomicU64,
    pub auth_failures: AtomicU64,
    pub stream_errors: AtomicU64,
}

impl C2s {
    pub fn domain(&self) -> &str {
        &self.settings.domain
    }

    pub fn limits_from(settings: &Settings) -> Limits {
        Limits {
            max_stanza_bytes: settings.c2s.max_stanza_bytes as usize,
            max_depth: settings.c2s.max_depth as usize,
            max_attrs: settings.c2s.max_attrs as usize,
        }
    }
}

/// SASL looks accounts up in the local replica of the state machine.
pub struct StateCredentials {
    pub state: StateReader,
    pub domain: String,
}

impl StateCredentials {
    /// The bare JID a SASL username names, normalized as the store keys it.
    pub fn bare_jid(&self, username: &str) -> Option<jid::BareJid> {
        if username.contains('@') || username.contains('/') {
            return None;
        }
        jid::BareJid::new(&format!("{username}@{}", self.domain)).ok()
    }
}

impl CredentialStore for StateCredentials {
    fn lookup(&self, username: &str) -> Option<UserRecord> {
        self.state.user(self.bare_jid(username)?.as_str())
    }
}
