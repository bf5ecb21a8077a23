//! Stored SCRAM keys (RFC 5802 section 3): their derivation, PLAIN checks against them,
//! and the fake ones shown for accounts that do not exist.

use std::sync::OnceLock;

use chorus_raft::{ScramCredential, UserRecord};
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::Digest;
use hmac::{Hmac, Mac, SimpleHmac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Fewest PBKDF2 iterations a new record may use: RFC 5802 and RFC 7677 ask for at least
/// 4096, and every record derived here is attackable offline if the store leaks.
pub const MIN_ITERATIONS: u32 = crate::config::MIN_SCRAM_ITERATIONS;

/// The iteration count a server uses unless its operator chose another.
pub const DEFAULT_ITERATIONS: u32 = crate::config::DEFAULT_SCRAM_ITERATIONS;

/// Salt length of new records (RFC 7677 asks for at least 16 bytes of random salt).
pub const SALT_LEN: usize = 16;

/// Why a user record could not be made. Each message says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "{requested} PBKDF2 iterations is too few; set the iteration count to at least {minimum}"
    )]
    TooFewIterations { requested: u32, minimum: u32 },
    #[error(
        "the password is refused by SASLprep (RFC 4013): {0}; choose one without control, \
         unassigned or bidirectionally ambiguous characters"
    )]
    PasswordRefused(String),
    #[error("the password is empty after SASLprep; choose a non-empty password")]
    EmptyPassword,
}

/// The hash a SCRAM credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// Length of the hash output, and so of both stored keys.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => <Sha1 as Digest>::output_size(),
            ScramHash::Sha256 => <Sha256 as Digest>::output_size(),
        }
    }

    pub fn credential(self, record: &UserRecord) -> &ScramCredential {
        match self {
            ScramHash::Sha1 => &record.scram_sha1,
            ScramHash::Sha256 => &record.scram_sha256,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            ScramHash::Sha1 => b"SHA-1",
            ScramHash::Sha256 => b"SHA-256",
        }
    }
}

/// A new account record. Each hash gets its own random salt, so the SHA-1 and SHA-256
/// credentials cannot be cross-checked; each costs one PBKDF2 run of `iterations`.
pub fn make_user_record(password: &str, iterations: u32) -> Result<UserRecord, AuthError> {
    if iterations < MIN_ITERATIONS {
        return Err(AuthError::TooFewIterations {
            requested: iterations,
            minimum: MIN_ITERATIONS,
        });
    }
    let password = prepare_password(password)?;
    Ok(UserRecord {
        scram_sha1: derive_credential(
            ScramHash::Sha1,
            password.as_bytes(),
            random_salt(),
            iterations,
        ),
        scram_sha256: derive_credential(
            ScramHash::Sha256,
            password.as_bytes(),
            random_salt(),
            iterations,
        ),
    })
}

/// SASLprep (RFC 4013), which SCRAM and PLAIN both apply to passwords; storing keys of
/// the unprepared form would lock out users whose client prepares it.
fn prepare_password(password: &str) -> Result<String, AuthError> {
    let prepared =
        stringprep::saslprep(password).map_err(|e| AuthError::PasswordRefused(e.to_string()))?;
    if prepared.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    Ok(prepared.into_owned())
}

fn random_salt() -> Vec<u8> {
    rand::random::<[u8; SALT_LEN]>().to_vec()
}

/// RFC 5802: SaltedPassword = Hi(password, salt, i), StoredKey = H(HMAC(SaltedPassword,
/// "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key"). `password` must already
/// be SASLprep'd.
pub(crate) fn derive_credential(
    hash: ScramHash,
    password: &[u8],
    salt: Vec<u8>,
    iterations: u32,
) -> ScramCredential {
    let (stored_key, server_key) = match hash {
        ScramHash::Sha1 => scram_keys::<Sha1, Hmac<Sha1>>(password, &salt, iterations),
        ScramHash::Sha256 => scram_keys::<Sha256, Hmac<Sha256>>(password, &salt, iterations),
    };
    ScramCredential {
        salt,
        iterations,
        stored_key,
        server_key,
    }
}

/// `M` is HMAC over `D`, the block-level `Hmac` (its key pads are hashed once, not at
/// every PBKDF2 round as `SimpleHmac`'s are: half the work per login).
fn scram_keys<D, M>(password: &[u8], salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>)
where
    D: Digest + BlockSizeUser + Clone + Sync,
    M: hmac::digest::KeyInit + hmac::digest::Update + hmac::digest::FixedOutput + Clone + Sync,
{
    let mut salted_password = vec![0u8; <D as Digest>::output_size()];
    pbkdf2::pbkdf2::<M>(password, salt, iterations, &mut salted_password)
        .expect("HMAC takes keys of any length");
    let client_key = hmac::<D>(&salted_password, b"Client Key");
    let stored_key = D::digest(&client_key).to_vec();
    let server_key = hmac::<D>(&salted_password, b"Server Key");
    (stored_key, server_key)
}

fn hmac<D: Digest + BlockSizeUser>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac =
        <SimpleHmac<D> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Whether a PLAIN password (SASLprep'd) matches the stored SCRAM-SHA-256 keys. Costs one
/// PBKDF2 run at the stored iteration count; the comparison takes the same time wherever
/// the keys differ.
pub(crate) fn plain_password_matches(sha256: &ScramCredential, password: &[u8]) -> bool {
    let derived = derive_credential(
        ScramHash::Sha256,
        password,
        sha256.salt.clone(),
        sha256.iterations,
    );
    derived.stored_key.ct_eq(&sha256.stored_key).into()
}

/// Whether rsasl can use a stored credential: it refuses keys of the wrong length, and
/// PBKDF2 needs at least one iteration. Older records below `MIN_ITERATIONS` still work.
pub(crate) fn credential_is_usable(hash: ScramHash, credential: &ScramCredential) -> bool {
    credential.stored_key.len() == hash.output_len()
        && credential.server_key.len() == hash.output_len()
        && !credential.salt.is_empty()
        && credential.iterations >= 1
}

/// A credential for a name that has no account. The salt depends only on `key`, the hash
/// and the name, so asking twice gets the same salt, as it would for a real account; the
/// keys are random, so no password matches them.
pub(crate) fn fake_credential(
    hash: ScramHash,
    username: &str,
    key: Option<[u8; 32]>,
    iterations: u32,
) -> ScramCredential {
    let key = key.unwrap_or_else(|| *process_salt_key());
    let mut mac = <SimpleHmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(b"chorus fake SCRAM salt\0");
    mac.update(hash.label());
    mac.update(b"\0");
    mac.update(username.as_bytes());
    let salt = mac.finalize().into_bytes()[..SALT_LEN].to_vec();
    let random_key = || {
        let mut k = vec![0u8; hash.output_len()];
        rand::Rng::fill(&mut rand::rng(), &mut k[..]);
        k
    };
    ScramCredential {
        salt,
        iterations,
        stored_key: random_key(),
        server_key: random_key(),
    }
}

fn process_salt_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}
