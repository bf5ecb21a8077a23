//! Proof of the cluster secret on every cluster connection.
//!
//! Both sides contribute a random nonce; each proves it holds the secret with an
//! HMAC-SHA256 over both nonces, its own node id and a label naming its role, so that a
//! proof cannot be replayed on another connection or reflected back to its sender. The
//! secret itself never crosses the wire. The connection is not encrypted: cluster traffic
//! belongs on a private network (docs/clustering.md).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::types::NodeId;

pub const NONCE_LEN: usize = 16;

/// What a node needs to be let into a cluster: its name and shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    pub name: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Default for ClusterIdentity {
    fn default() -> Self {
        ClusterIdentity {
            name: "chorus".into(),
            secret: Vec::new(),
        }
    }
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

fn mac(secret: &[u8], role: Role, client: &[u8], server: &[u8], node: NodeId) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(role.label());
    m.update(&(client.len() as u32).to_be_bytes());
    m.update(client);
    m.update(&(server.len() as u32).to_be_bytes());
    m.update(server);
    m.update(&node.to_be_bytes());
    m
}

pub fn prove(secret: &[u8], role: Role, client: &[u8], server: &[u8], node: NodeId) -> Vec<u8> {
    mac(secret, role, client, server, node)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Constant-time check of a peer's proof.
pub fn verify(
    secret: &[u8],
    role: Role,
    client: &[u8],
    server: &[u8],
    node: NodeId,
    proof: &[u8],
) -> bool {
    mac(secret, role, client, server, node)
        .verify_slice(proof)
        .is_ok()
}

pub fn nonce() -> Vec<u8> {
    (0..NONCE_LEN).map(|_| rand::random::<u8>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_only_verifies_with_the_same_secret_nonces_role_and_node() {
        let (c, s) = (nonce(), nonce());
        let p = prove(b"secret", Role::Client, &c, &s, 7);
        assert!(verify(b"secret", Role::Client, &c, &s, 7, &p));
        assert!(!verify(b"other", Role::Client, &c, &s, 7, &p));
        assert!(!verify(b"secret", Role::Server, &c, &s, 7, &p));
        assert!(!verify(b"secret", Role::Client, &s, &c, 7, &p));
        assert!(!verify(b"secret", Role::Client, &c, &s, 8, &p));
        assert!(!verify(b"secret", Role::Client, &c, &s, 7, &p[..31]));
    }
}
