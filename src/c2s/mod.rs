//! Client-to-server streams (RFC 6120): listeners, TLS, stream negotiation
//! (STARTTLS, SASL, resource binding) and the session actor of a bound stream.
//!
//! Negotiation runs in a plain task that owns the socket, because STARTTLS has
//! to take the socket back from the parser; once a resource is bound the
//! stream is split between a parser task, a writer task and the session actor.

pub mod admission;
pub mod listener;
pub mod negotiate;
pub mod outbound;
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
    /// What the features answering this node's streams use to reach the router.
    pub port: crate::bus::RouterPort,
    pub hooks: crate::bus::hooks::Hooks,
    pub tls: tokio_rustls::TlsAcceptor,
    pub credentials: Arc<dyn CredentialStore>,
    pub limits: Limits,
    /// Tighter limits until SASL succeeds.
    pub limits_before_auth: Limits,
    /// Where session actors live (actors cannot start inside plain tokio tasks).
    pub arbiter: actix::ArbiterHandle,
    pub stats: C2sStats,
    /// When the node began serving clients: its uptime (XEP-0012) counts from here.
    pub started: std::time::Instant,
    /// Whether this node may serve clients now (in contact with the majority).
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Open connections and their bounds.
    pub admission: Arc<admission::Admission>,
    /// Rate limits by address, account and session.
    pub rates: Arc<crate::rate::Rates>,
    /// Where PBKDF2 runs.
    pub hashing: Arc<crate::auth::pool::HashPool>,
}

#[derive(Default)]
pub struct C2sStats {
    pub connections_accepted: AtomicU64,
    pub auth_successes: AtomicU64,
    pub auth_failures: AtomicU64,
    pub stream_errors: AtomicU64,
    /// Sessions closed because their outbound queue overflowed.
    pub slow_clients: AtomicU64,
    /// Connections closed because a write made no progress for `c2s.write_timeout_secs`.
    pub write_timeouts: AtomicU64,
}

impl C2s {
    pub fn domain(&self) -> &str {
        &self.settings.domain
    }

    pub fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.c2s.write_timeout_secs)
    }

    /// The connection bounds of `settings`, `c2s.max_connections` capped by the file limit.
    pub fn admission_from(settings: &Settings) -> Arc<admission::Admission> {
        admission::Admission::new(admission::Bounds {
            total: admission::effective_max_connections(settings.c2s.max_connections),
            per_ip: settings.c2s.max_connections_per_ip,
            unauthenticated: settings.c2s.max_unauthenticated,
        })
    }

    /// The parser limits after authentication, and before it.
    pub fn limits_from(settings: &Settings) -> (Limits, Limits) {
        let after = Limits {
            max_stanza_bytes: settings.c2s.max_stanza_bytes as usize,
            max_depth: settings.c2s.max_depth as usize,
            max_attrs: settings.c2s.max_attrs as usize,
        };
        let before = Limits {
            max_stanza_bytes: settings
                .c2s
                .max_stanza_bytes_before_auth
                .min(settings.c2s.max_stanza_bytes) as usize,
            ..after.clone()
        };
        (after, before)
    }
}

/// SASL looks accounts up in the local replica of the state machine.
pub struct StateCredentials {
    pub state: StateReader,
    pub domain: String,
    /// What an unknown user is told, so that its challenge looks like a real
    /// account's: the configured iteration count and a salt keyed by a secret
    /// that survives restarts (a new salt after a restart would give it away).
    pub iterations: u32,
    pub salt_key: [u8; 32],
}

/// The key a SASL username is rate-limited under: its account's bare JID, or
/// the name itself (lowercased) when it names no valid account.
pub fn account_key(username: &str, domain: &str) -> String {
    account_jid(username, domain)
        .map(|j| j.to_string())
        .unwrap_or_else(|| username.to_lowercase())
}

/// The bare JID a SASL username names in `domain`, normalized as the store keys it.
pub fn account_jid(username: &str, domain: &str) -> Option<jid::BareJid> {
    if username.contains('@') || username.contains('/') {
        return None;
    }
    jid::BareJid::new(&format!("{username}@{domain}")).ok()
}

impl CredentialStore for StateCredentials {
    fn lookup(&self, username: &str) -> Result<Option<UserRecord>, chorus_raft::ReadError> {
        match account_jid(username, &self.domain) {
            Some(jid) => self.state.user(jid.as_str()),
            None => Ok(None),
        }
    }

    fn iterations_for_unknown_users(&self) -> u32 {
        self.iterations
    }

    fn unknown_user_salt_key(&self) -> Option<[u8; 32]> {
        Some(self.salt_key)
    }

    fn domain(&self) -> Option<&str> {
        Some(&self.domain)
    }
}
