//! SASL authentication for c2s streams (RFC 6120 section 6): SCRAM-SHA-1/-256 with and
//! without `-PLUS` (RFC 5802, RFC 7677, tls-exporter channel binding RFC 9266) and PLAIN
//! (RFC 4616), served from stored SCRAM keys only.
//!
//! rsasl runs the exchanges; this module adds what rsasl 2.3.1 leaves to the application
//! or gets wrong for a server: the credential lookup, fake credentials for unknown users,
//! PLAIN checked against the stored SCRAM-SHA-256 keys, the authzid policy, a strict
//! grammar check of every SCRAM client message before rsasl parses it (see `scram_wire`),
//! and the mapping of every outcome to an RFC 6120 failure condition.
//!
//! Knows nothing of XML, sockets or JIDs: the caller base64-decodes `<auth/>` and
//! `<response/>`, encodes challenges, and maps the authenticated username to a bare JID.

mod credentials;
pub mod pool;
mod scram_wire;
mod session;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use chorus_raft::UserRecord;

pub(crate) use credentials::ScramHash;
pub use credentials::{make_user_record, AuthError, DEFAULT_ITERATIONS, MIN_ITERATIONS, SALT_LEN};
pub use session::SaslSession;

/// The username a client's first SASL message names, read without any
/// cryptography so that a rate limit can refuse before a PBKDF2 run: PLAIN's
/// authcid (RFC 4616) or SCRAM's `n=` attribute (RFC 5802 5.1, `=2C` and
/// `=3D` decoded). `None` when the message does not parse; the mechanism
/// itself refuses such a message.
pub fn claimed_username(mechanism: Mechanism, first: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(first).ok()?;
    let name = if mechanism == Mechanism::Plain {
        text.split('\0').nth(1)?.to_string()
    } else {
        // gs2-header ("n,," / "y,," / "p=...,a=...,") then the bare message.
        let bare = text.splitn(3, ',').nth(2)?;
        let raw = bare.split(',').find_map(|a| a.strip_prefix("n="))?;
        raw.replace("=2C", ",").replace("=3D", "=")
    };
    (!name.is_empty()).then_some(name)
}

/// Largest client message accepted in one step, after base64 decoding. A SCRAM message is
/// a few hundred bytes; PLAIN carries a password, which 8 KiB leaves ample room for.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 8 * 1024;

/// The channel binding type `-PLUS` mechanisms use: the only one TLS 1.3 defines (RFC 9266).
pub const CHANNEL_BINDING_TYPE: &str = "tls-exporter";

/// A SASL mechanism this server implements, strongest first in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The IANA-registered name, as sent in `<mechanism/>` and `<auth mechanism=.../>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// Exact, case-sensitive match: SASL mechanism names are upper case (RFC 4422 3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the mechanism binds the exchange to the TLS channel.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub(crate) fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mechanisms to advertise, strongest first.
///
/// `-PLUS` needs channel binding data, which only exists under TLS. PLAIN sends the
/// password itself, so it is offered without TLS only when the operator allowed it.
pub fn offered_mechanisms(
    tls: bool,
    channel_binding_available: bool,
    allow_plaintext_auth: bool,
) -> Vec<Mechanism> {
    Mechanism::ALL
        .into_iter()
        .filter(|m| match m {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus => {
                tls && channel_binding_available
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha1 => true,
            Mechanism::Plain => tls || allow_plaintext_auth,
        })
        .collect()
}

/// Where SASL sessions find accounts. Implemented by the server over the replicated state.
pub trait CredentialStore: Send + Sync {
    /// The record for `username`: the SASL authcid (the XMPP localpart) after SASLprep.
    /// A store that cannot answer says so (the client gets `<temporary-auth-failure/>`),
    /// never "no such user".
    fn lookup(&self, username: &str) -> Result<Option<UserRecord>, chorus_raft::ReadError>;

    /// Iteration count announced to unknown users. Return the server's iteration setting,
    /// so that an unknown user's challenge looks like a real account's.
    fn iterations_for_unknown_users(&self) -> u32 {
        DEFAULT_ITERATIONS
    }

    /// Key for the fake salts of unknown users. `None` uses a random per-process key; give
    /// every node of a cluster the same key, or comparing two nodes' challenges for one
    /// name reveals whether the account exists.
    fn unknown_user_salt_key(&self) -> Option<[u8; 32]> {
        None
    }

    /// The domain accounts live in: an authzid equal to the account's own bare JID
    /// (`authcid@domain`) then means the same as no authzid.
    fn domain(&self) -> Option<&str> {
        None
    }
}

/// SASL failure conditions (RFC 6120 section 6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaslFailure {
    Aborted,
    AccountDisabled,
    CredentialsExpired,
    EncryptionRequired,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    MechanismTooWeak,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// The child element name of `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>`.
    pub fn name(&self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::AccountDisabled => "account-disabled",
            SaslFailure::CredentialsExpired => "credentials-expired",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::MechanismTooWeak => "mechanism-too-weak",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl fmt::Display for SaslFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to send the client after one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslStep {
    /// Send `<challenge/>` with these bytes base64-encoded. Empty bytes ask for a
    /// missing initial response: send an empty element.
    Challenge(Vec<u8>),
    /// Send `<success/>`, carrying `additional_data` if present (SCRAM's `v=` message).
    Success {
        username: String,
        additional_data: Option<Vec<u8>>,
    },
    /// Send `<failure/>` with this condition; the session is over.
    Failure(SaslFailure),
}

/// A refusal with the reason behind it, so that logs and tests can say why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub failure: SaslFailure,
    pub reason: Cow<'static, str>,
}

impl Rejection {
    pub fn new(failure: SaslFailure, reason: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            failure,
            reason: reason.into(),
        }
    }
}

/// Authorization identity policy: a client may only act as itself. An absent or empty
/// authzid means "the authcid's own identity" (RFC 6120 6.4.6), and so does the
/// account's own bare JID, which some clients send (RFC 6120 6.3.8 gives the authzid
/// as a bare JID); anything else is refused rather than guessed at.
pub(crate) fn authzid_verdict(
    authcid: &str,
    authzid: Option<&str>,
    domain: Option<&str>,
) -> Result<(), Rejection> {
    let own_bare_jid = |authzid: &str| {
        domain.is_some_and(|d| {
            authzid.split_once('@').is_some_and(|(local, host)| {
                local == authcid && host.trim_end_matches('.').eq_ignore_ascii_case(d)
            })
        })
    };
    match authzid {
        None | Some("") => Ok(()),
        Some(authzid) if authzid == authcid || own_bare_jid(authzid) => Ok(()),
        Some(_) => Err(Rejection::new(
            SaslFailure::InvalidAuthzid,
            "authzid names another identity than the authcid",
        )),
    }
}
