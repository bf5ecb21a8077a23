//! Proof of the cluster secret on every cluster connection.
//!
//! The secret is never used as it is: at start each node derives a key from it with
//! PBKDF2 (`KEY_ITERATIONS`, salted with the cluster name), so that every guess at the
//! secret from something seen on the network (a proof, a beacon, a fake SCRAM salt)
//! costs that much work, on top of the 16 bytes a secret must have.
//!
//! The connecting side proves first: after its hello the server answers only with a
//! nonce, and says nothing more (not its cluster name, not its node id) until the
//! client's proof verifies, so a stranger learns nothing it could guess against. Each
//! proof is an HMAC over the TLS session's exporter value (when TLS is on), both nonces,
//! and what the prover claims (client: its id, the node it means, the cluster name and the
//! channel; server: its id), under a label naming its role: a proof cannot be replayed on
//! another connection, relayed through a man in the middle, or reflected to its sender.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::tls::ClusterTls;
use crate::types::NodeId;

pub const NONCE_LEN: usize = 16;

/// PBKDF2-HMAC-SHA256 iterations from the secret to the key that proofs and beacons use.
pub const KEY_ITERATIONS: u32 = 100_000;

/// What a node needs to be let into a cluster: its name, the key derived from the shared
/// secret, and (unless turned off) the TLS configuration of its cluster connections.
#[derive(Clone)]
pub struct ClusterIdentity {
    pub name: String,
    key: [u8; 32],
    pub tls: Option<Arc<ClusterTls>>,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Same name, same key, TLS on or off alike.
impl PartialEq for ClusterIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.key == other.key
            && self.tls.is_some() == other.tls.is_some()
    }
}

impl Eq for ClusterIdentity {}

impl ClusterIdentity {
    /// Derives the key from `secret` (about 0.1 s of PBKDF2: call once per process).
    pub fn new(name: &str, secret: &[u8], tls: Option<Arc<ClusterTls>>) -> ClusterIdentity {
        ClusterIdentity {
            name: name.to_string(),
            key: derive_key(name, secret),
            tls,
        }
    }

    /// The key derived from the secret: for proofs, beacons and anything else the
    /// application keys from the cluster secret.
    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

impl Default for ClusterIdentity {
    fn default() -> Self {
        ClusterIdentity::new("chorus", b"", None)
    }
}

pub fn derive_key(name: &str, secret: &[u8]) -> [u8; 32] {
    let mut salt = b"chorus cluster key v3\0".to_vec();
    salt.extend_from_slice(name.as_bytes());
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret, &salt, KEY_ITERATIONS, &mut key);
    key
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"chorus cluster client proof v3",
            Role::Server => b"chorus cluster server proof v3",
        }
    }
}

/// What a proof covers besides the claims: the session and both nonces.
pub struct Session<'a> {
    pub exporter: &'a [u8],
    pub client_nonce: &'a [u8],
    pub server_nonce: &'a [u8],
}

fn mac(key: &[u8], role: Role, session: &Session<'_>, claims: &[Vec<u8>]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(role.label());
    for part in [session.exporter, session.client_nonce, session.server_nonce]
        .into_iter()
        .chain(claims.iter().map(Vec::as_slice))
    {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part);
    }
    m
}

pub fn prove(key: &[u8], role: Role, session: &Session<'_>, claims: &[Vec<u8>]) -> Vec<u8> {
    mac(key, role, session, claims)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Constant-time check of a peer's proof.
pub fn verify(
    key: &[u8],
    role: Role,
    session: &Session<'_>,
    claims: &[Vec<u8>],
    proof: &[u8],
) -> bool {
    mac(key, role, session, claims).verify_slice(proof).is_ok()
}

/// What a client's proof claims: who it is, whom it means, its cluster and channel.
pub fn client_claims(from: NodeId, to: NodeId, cluster: &str, channel: u8) -> Vec<Vec<u8>> {
    vec![
        from.to_be_bytes().to_vec(),
        to.to_be_bytes().to_vec(),
        cluster.as_bytes().to_vec(),
        vec![channel],
    ]
}

/// What a server's proof claims: who it is.
pub fn server_claims(node: NodeId) -> Vec<Vec<u8>> {
    vec![node.to_be_bytes().to_vec()]
}

pub fn nonce() -> Vec<u8> {
    (0..NONCE_LEN).map(|_| rand::random::<u8>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_only_verifies_with_the_same_key_session_role_and_claims() {
        let session = |e: &'static [u8]| Session {
            exporter: e,
            client_nonce: b"c",
            server_nonce: b"s",
        };
        let claims = client_claims(7, 9, "x", 0);
        let other_claims = client_claims(8, 9, "x", 0);
        let k = derive_key("x", b"secret");
        let p = prove(&k, Role::Client, &session(b"tls"), &claims);
        assert!(verify(&k, Role::Client, &session(b"tls"), &claims, &p));
        let other_secret = derive_key("x", b"other");
        assert!(!verify(
            &other_secret,
            Role::Client,
            &session(b"tls"),
            &claims,
            &p
        ));
        let other_name = derive_key("y", b"secret");
        assert!(!verify(
            &other_name,
            Role::Client,
            &session(b"tls"),
            &claims,
            &p
        ));
        assert!(!verify(&k, Role::Server, &session(b"tls"), &claims, &p));
        assert!(!verify(&k, Role::Client, &session(b"relayed"), &claims, &p));
        assert!(!verify(
            &k,
            Role::Client,
            &session(b"tls"),
            &other_claims,
            &p
        ));
        assert!(!verify(
            &k,
            Role::Client,
            &session(b"tls"),
            &claims,
            &p[..31]
        ));
    }
}
