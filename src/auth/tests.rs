//! Exchanges against rsasl's client and against a hand-written RFC 5802 client, plus the
//! RFC 5802 / RFC 7677 example vectors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chorus_raft::UserRecord;
use hmac::{Hmac, Mac};
use rand::{Rng, SeedableRng};
use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::plain::PLAIN;
use rsasl::mechanisms::scram::{SCRAM_SHA1, SCRAM_SHA1_PLUS, SCRAM_SHA256, SCRAM_SHA256_PLUS};
use rsasl::prelude::{
    ChannelBindingCallback, Mechanism as RsaslMechanism, Mechname, Registry, SASLClient,
    SASLConfig, SessionError,
};
use rsasl::property::{AuthId, AuthzId, Password};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::credentials::{derive_credential, fake_credential};
use super::session::RSASL_PANICKED;
use super::*;

const PASSWORD: &str = "pencil";
const EXPORTER: &[u8] = b"0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------- fixtures

#[derive(Default)]
struct MemoryStore {
    users: HashMap<String, UserRecord>,
    unknown_iterations: Option<u32>,
    salt_key: Option<[u8; 32]>,
    /// Every lookup fails, as a storage error would.
    unreadable: bool,
}

impl CredentialStore for MemoryStore {
    fn lookup(&self, username: &str) -> Result<Option<UserRecord>, chorus_raft::ReadError> {
        if self.unreadable {
            return Err(chorus_raft::ReadError::Storage("disk on fire".into()));
        }
        Ok(self.users.get(username).cloned())
    }
    fn iterations_for_unknown_users(&self) -> u32 {
        self.unknown_iterations.unwrap_or(DEFAULT_ITERATIONS)
    }
    fn unknown_user_salt_key(&self) -> Option<[u8; 32]> {
        self.salt_key
    }
    fn domain(&self) -> Option<&str> {
        Some("example.org")
    }
}

/// One record for PASSWORD, derived once: each derivation is two PBKDF2 runs.
fn pencil_record() -> UserRecord {
    static RECORD: OnceLock<UserRecord> = OnceLock::new();
    RECORD
        .get_or_init(|| make_user_record(PASSWORD, DEFAULT_ITERATIONS).unwrap())
        .clone()
}

fn memory_store() -> MemoryStore {
    let mut store = MemoryStore::default();
    for name in ["alice", "a,b=c"] {
        store.users.insert(name.to_owned(), pencil_record());
    }
    store
}

fn store() -> Arc<dyn CredentialStore> {
    Arc::new(memory_store())
}

fn start(mechanism: Mechanism) -> SaslSession {
    SaslSession::start(mechanism.name(), store(), true, false, None).unwrap()
}

fn start_with_binding(mechanism: Mechanism, exporter: &[u8]) -> SaslSession {
    SaslSession::start(
        mechanism.name(),
        store(),
        true,
        false,
        Some(exporter.to_vec()),
    )
    .unwrap()
}

fn challenge(step: SaslStep) -> Vec<u8> {
    match step {
        SaslStep::Challenge(data) => data,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn assert_no_rsasl_panic(session: &SaslSession) {
    assert_ne!(session.failure_reason(), Some(RSASL_PANICKED));
}

// ---------------------------------------------------------------- rsasl as the client

static CLIENT_MECHANISMS: &[RsaslMechanism] = &[
    SCRAM_SHA256_PLUS,
    SCRAM_SHA1_PLUS,
    SCRAM_SHA256,
    SCRAM_SHA1,
    PLAIN,
];

struct TestClient {
    authcid: &'static str,
    authzid: Option<&'static str>,
    password: &'static str,
    supports_channel_binding: bool,
}

impl TestClient {
    fn new(authcid: &'static str, password: &'static str) -> Self {
        TestClient {
            authcid,
            authzid: None,
            password,
            supports_channel_binding: false,
        }
    }
}

impl SessionCallback for TestClient {
    fn callback(
        &self,
        _session_data: &SessionData,
        _context: &Context,
        request: &mut Request<'_>,
    ) -> Result<(), SessionError> {
        request
            .satisfy::<AuthId>(self.authcid)?
            .satisfy::<Password>(self.password.as_bytes())?;
        if let Some(authzid) = self.authzid {
            request.satisfy::<AuthzId>(authzid)?;
        }
        Ok(())
    }

    fn enable_channel_binding(&self) -> bool {
        self.supports_channel_binding
    }
}

struct ClientBinding(Option<Vec<u8>>);
impl ChannelBindingCallback for ClientBinding {
    fn get_cb_data(&self, cbname: &str) -> Option<&[u8]> {
        (cbname == "tls-exporter")
            .then_some(())
            .and(self.0.as_deref())
    }
}

/// Runs rsasl's client against `server` until the server ends the exchange. On success
/// the client must also accept the server's final message (mutual authentication).
fn rsasl_exchange(
    server: &mut SaslSession,
    client: TestClient,
    exporter: Option<&[u8]>,
) -> Result<String, SaslFailure> {
    let mechname = Mechname::parse(server.mechanism().name().as_bytes()).unwrap();
    let config = SASLConfig::builder()
        .with_registry(Registry::with_mechanisms(CLIENT_MECHANISMS))
        .with_callback(client)
        .unwrap();
    let mut client = SASLClient::with_cb(config, ClientBinding(exporter.map(<[u8]>::to_vec)))
        .start_suggested(&[mechname])
        .unwrap();
    let mut to_server = Vec::new();
    client.step(None, &mut to_server).unwrap();
    loop {
        match server.step(&to_server) {
            SaslStep::Challenge(data) => {
                to_server.clear();
                client.step(Some(&data), &mut to_server).unwrap();
            }
            SaslStep::Success {
                username,
                additional_data,
            } => {
                if let Some(data) = additional_data {
                    assert!(data.starts_with(b"v="), "server-final is not v=...");
                    client
                        .step(Some(&data), &mut Vec::new())
                        .expect("the client must accept the server signature");
                }
                return Ok(username);
            }
            SaslStep::Failure(failure) => return Err(failure),
        }
    }
}

// ---------------------------------------------------------------- a hand-written RFC 5802 client

fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => {
            let mut mac = Hmac::<Sha1>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        ScramHash::Sha256 => {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn h(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// Hi() of RFC 5802, memoized: the mutation test asks for the same one many times.
fn salted_password(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    type Key = (ScramHash, String, Vec<u8>, u32);
    static CACHE: OnceLock<Mutex<HashMap<Key, Vec<u8>>>> = OnceLock::new();
    let key = (hash, password.to_owned(), salt.to_vec(), iterations);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap().get(&key) {
        return hit.clone();
    }
    let mut out = vec![0; hash.output_len()];
    match hash {
        ScramHash::Sha1 => {
            pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut out)
        }
        ScramHash::Sha256 => {
            pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out)
        }
    }
    cache.lock().unwrap().insert(key, out.clone());
    out
}

fn attribute(message: &str, name: char) -> &str {
    message
        .split(',')
        .find_map(|a| a.strip_prefix(name).and_then(|a| a.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {message}"))
}

struct RfcClient {
    hash: ScramHash,
    password: &'static str,
    gs2_header: String,
    channel_binding: Vec<u8>,
    first_bare: String,
}

impl RfcClient {
    fn new(hash: ScramHash, escaped_username: &str, password: &'static str) -> Self {
        RfcClient {
            hash,
            password,
            gs2_header: "n,,".to_owned(),
            channel_binding: Vec::new(),
            first_bare: format!("n={escaped_username},r=fyko+d2lbbFgONRv9qkxdawL"),
        }
    }

    fn gs2(mut self, header: &str, channel_binding: &[u8]) -> Self {
        header.clone_into(&mut self.gs2_header);
        self.channel_binding = channel_binding.to_vec();
        self
    }

    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.first_bare).into_bytes()
    }

    /// The client-final-message for `server_first`, and the v= value to expect.
    fn last(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let nonce = attribute(server_first, 'r');
        let salt = BASE64.decode(attribute(server_first, 's')).unwrap();
        let iterations = attribute(server_first, 'i').parse().unwrap();
        let salted = salted_password(self.hash, self.password, &salt, iterations);
        let client_key = hmac(self.hash, &salted, b"Client Key");
        let stored_key = h(self.hash, &client_key);
        let mut cbind_input = self.gs2_header.clone().into_bytes();
        cbind_input.extend_from_slice(&self.channel_binding);
        let without_proof = format!("c={},r={nonce}", BASE64.encode(cbind_input));
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(self.hash, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(self.hash, &salted, b"Server Key");
        let verifier = hmac(self.hash, &server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes(),
            format!("v={}", BASE64.encode(verifier)).into_bytes(),
        )
    }
}

/// Runs `client` against a fresh session; returns the final step and the expected v=.
fn rfc_exchange(server: &mut SaslSession, client: &RfcClient) -> (SaslStep, Vec<u8>) {
    let server_first = challenge(server.step(&client.first()));
    let (last, verifier) = client.last(&server_first);
    (server.step(&last), verifier)
}

// ---------------------------------------------------------------- mechanisms and failures

#[test]
fn mechanism_names_round_trip_and_unknown_names_are_refused() {
    for mechanism in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
    }
    assert_eq!(Mechanism::ScramSha256Plus.name(), "SCRAM-SHA-256-PLUS");
    assert_eq!(Mechanism::from_name("scram-sha-1"), None);
    assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
}

#[test]
fn offered_mechanisms_are_strongest_first_and_filtered() {
    use Mechanism::*;
    assert_eq!(
        offered_mechanisms(true, true, false),
        vec![
            ScramSha256Plus,
            ScramSha1Plus,
            ScramSha256,
            ScramSha1,
            Plain
        ]
    );
    assert_eq!(
        offered_mechanisms(true, false, false),
        vec![ScramSha256, ScramSha1, Plain]
    );
    assert_eq!(
        offered_mechanisms(false, false, false),
        vec![ScramSha256, ScramSha1]
    );
    assert_eq!(
        offered_mechanisms(false, false, true),
        vec![ScramSha256, ScramSha1, Plain]
    );
    // Binding data without TLS cannot be real.
    assert_eq!(
        offered_mechanisms(false, true, false),
        vec![ScramSha256, ScramSha1]
    );
}

#[test]
fn failure_names_are_rfc_6120_conditions() {
    let names: Vec<&str> = [
        SaslFailure::Aborted,
        SaslFailure::AccountDisabled,
        SaslFailure::CredentialsExpired,
        SaslFailure::EncryptionRequired,
        SaslFailure::IncorrectEncoding,
        SaslFailure::InvalidAuthzid,
        SaslFailure::InvalidMechanism,
        SaslFailure::MalformedRequest,
        SaslFailure::MechanismTooWeak,
        SaslFailure::NotAuthorized,
        SaslFailure::TemporaryAuthFailure,
    ]
    .iter()
    .map(SaslFailure::name)
    .collect();
    assert_eq!(
        names,
        [
            "aborted",
            "account-disabled",
            "credentials-expired",
            "encryption-required",
            "incorrect-encoding",
            "invalid-authzid",
            "invalid-mechanism",
            "malformed-request",
            "mechanism-too-weak",
            "not-authorized",
            "temporary-auth-failure"
        ]
    );
}

#[test]
fn sasl_session_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<SaslSession>();
}

#[test]
fn unknown_or_unoffered_mechanism_is_invalid_mechanism() {
    let start = |name: &str, tls: bool, cb: Option<&[u8]>| {
        SaslSession::start(name, store(), tls, false, cb.map(<[u8]>::to_vec)).err()
    };
    assert_eq!(
        start("DIGEST-MD5", true, None),
        Some(SaslFailure::InvalidMechanism)
    );
    assert_eq!(
        start("scram-sha-256", true, None),
        Some(SaslFailure::InvalidMechanism)
    );
    assert_eq!(
        start("SCRAM-SHA-256-PLUS", true, None),
        Some(SaslFailure::InvalidMechanism)
    );
    assert_eq!(
        start("SCRAM-SHA-1-PLUS", false, Some(EXPORTER)),
        Some(SaslFailure::InvalidMechanism)
    );
    assert_eq!(start("SCRAM-SHA-256-PLUS", true, Some(EXPORTER)), None);
}

#[test]
fn plain_without_tls_is_encryption_required_unless_allowed() {
    let refused = SaslSession::start("PLAIN", store(), false, false, None).err();
    assert_eq!(refused, Some(SaslFailure::EncryptionRequired));
    let mut allowed = SaslSession::start("PLAIN", store(), false, true, None).unwrap();
    assert_eq!(
        allowed.step(b"\0alice\0pencil"),
        SaslStep::Success {
            username: "alice".into(),
            additional_data: None
        }
    );
}

// ---------------------------------------------------------------- records

#[test]
fn make_user_record_refuses_fewer_than_4096_iterations() {
    assert_eq!(
        make_user_record(PASSWORD, 4095),
        Err(AuthError::TooFewIterations {
            requested: 4095,
            minimum: 4096
        })
    );
    assert_eq!(
        make_user_record(PASSWORD, 0).unwrap_err().to_string(),
        "0 PBKDF2 iterations is too few; set the iteration count to at least 4096"
    );
}

#[test]
fn make_user_record_uses_fresh_salts_per_hash_and_call() {
    let a = pencil_record();
    let b = make_user_record(PASSWORD, DEFAULT_ITERATIONS).unwrap();
    for credential in [
        &a.scram_sha1,
        &a.scram_sha256,
        &b.scram_sha1,
        &b.scram_sha256,
    ] {
        assert!(credential.salt.len() >= 16);
        assert_eq!(credential.iterations, DEFAULT_ITERATIONS);
    }
    assert_eq!(a.scram_sha1.stored_key.len(), 20);
    assert_eq!(a.scram_sha256.server_key.len(), 32);
    assert_ne!(a.scram_sha1.salt, a.scram_sha256.salt);
    assert_ne!(a.scram_sha256.salt, b.scram_sha256.salt);
    assert_ne!(a.scram_sha256.stored_key, b.scram_sha256.stored_key);
}

#[test]
fn make_user_record_saslpreps_the_password() {
    // SASLprep maps U+00AD SOFT HYPHEN to nothing and U+00A0 to a space.
    let record = make_user_record("pen\u{AD}cil\u{A0}x", 4096).unwrap();
    let expected = derive_credential(
        ScramHash::Sha256,
        b"pencil x",
        record.scram_sha256.salt.clone(),
        4096,
    );
    assert_eq!(record.scram_sha256, expected);
    assert!(matches!(
        make_user_record("bell\u{7}", 4096),
        Err(AuthError::PasswordRefused(_))
    ));
    assert_eq!(
        make_user_record("\u{AD}", 4096),
        Err(AuthError::EmptyPassword)
    );
}

/// The examples of RFC 5802 section 5 and RFC 7677 section 3 (user "user", password
/// "pencil"), checked using nothing but the derived record, as the server does.
#[test]
fn derived_keys_match_rfc_5802_and_rfc_7677_examples() {
    let cases = [
        (
            ScramHash::Sha1,
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
            "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        ),
        (
            ScramHash::Sha256,
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        ),
    ];
    for (hash, first_bare, server_first, final_without_proof, proof, verifier) in cases {
        let salt = BASE64.decode(attribute(server_first, 's')).unwrap();
        let credential = derive_credential(hash, b"pencil", salt, 4096);
        let auth_message = format!("{first_bare},{server_first},{final_without_proof}");
        let signature = hmac(hash, &credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = BASE64
            .decode(proof)
            .unwrap()
            .iter()
            .zip(&signature)
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(
            h(hash, &client_key),
            credential.stored_key,
            "{hash:?} proof"
        );
        assert_eq!(
            BASE64.encode(hmac(hash, &credential.server_key, auth_message.as_bytes())),
            verifier,
            "{hash:?} verifier"
        );
    }
}

// ---------------------------------------------------------------- SCRAM

#[test]
fn scram_sha256_succeeds_with_right_password_and_client_verifies_server() {
    let mut server = start(Mechanism::ScramSha256);
    let outcome = rsasl_exchange(&mut server, TestClient::new("alice", PASSWORD), None);
    assert_eq!(outcome, Ok("alice".to_owned()));
    assert!(server.is_finished());
}

#[test]
fn scram_sha1_succeeds_with_right_password_and_client_verifies_server() {
    let mut server = start(Mechanism::ScramSha1);
    let outcome = rsasl_exchange(&mut server, TestClient::new("alice", PASSWORD), None);
    assert_eq!(outcome, Ok("alice".to_owned()));
}

#[test]
fn scram_sha256_wrong_password_is_not_authorized() {
    let mut server = start(Mechanism::ScramSha256);
    let outcome = rsasl_exchange(&mut server, TestClient::new("alice", "crayon"), None);
    assert_eq!(outcome, Err(SaslFailure::NotAuthorized));
}

#[test]
fn scram_sha1_wrong_password_is_not_authorized() {
    let mut server = start(Mechanism::ScramSha1);
    let outcome = rsasl_exchange(&mut server, TestClient::new("alice", "crayon"), None);
    assert_eq!(outcome, Err(SaslFailure::NotAuthorized));
}

#[test]
fn hand_written_rfc_5802_client_succeeds_and_gets_the_expected_verifier() {
    for (mechanism, hash) in [
        (Mechanism::ScramSha1, ScramHash::Sha1),
        (Mechanism::ScramSha256, ScramHash::Sha256),
    ] {
        let mut server = start(mechanism);
        let (last, verifier) = rfc_exchange(&mut server, &RfcClient::new(hash, "alice", PASSWORD));
        assert_eq!(
            last,
            SaslStep::Success {
                username: "alice".into(),
                additional_data: Some(verifier)
            }
        );
    }
}

#[test]
fn scram_username_escapes_are_undone_for_lookup_and_success() {
    // rsasl's client sends "a=2Cb=3Dc"; the account is "a,b=c".
    let mut server = start(Mechanism::ScramSha256);
    let outcome = rsasl_exchange(&mut server, TestClient::new("a,b=c", PASSWORD), None);
    assert_eq!(outcome, Ok("a,b=c".to_owned()));
}

#[test]
fn empty_initial_response_gets_one_empty_challenge() {
    let mut server = start(Mechanism::ScramSha256);
    assert_eq!(server.step(b""), SaslStep::Challenge(Vec::new()));
    let client = RfcClient::new(ScramHash::Sha256, "alice", PASSWORD);
    assert!(matches!(
        rfc_exchange(&mut server, &client).0,
        SaslStep::Success { .. }
    ));

    let mut server = start(Mechanism::Plain);
    assert_eq!(server.step(b""), SaslStep::Challenge(Vec::new()));
    assert_eq!(
        server.step(b""),
        SaslStep::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn unknown_user_gets_a_stable_salt_and_real_iteration_count_then_not_authorized() {
    let server_first = |name: &str| {
        let mut server = start(Mechanism::ScramSha256);
        let first = format!("n,,n={name},r=abcdef").into_bytes();
        String::from_utf8(challenge(server.step(&first))).unwrap()
    };
    let (once, twice) = (server_first("mallory"), server_first("mallory"));
    assert_eq!(attribute(&once, 's'), attribute(&twice, 's'));
    assert_eq!(
        BASE64.decode(attribute(&once, 's')).unwrap().len(),
        SALT_LEN
    );
    assert_eq!(attribute(&once, 'i'), DEFAULT_ITERATIONS.to_string());
    assert_ne!(
        attribute(&once, 's'),
        attribute(&server_first("trudy"), 's')
    );
    // A real account's challenge has the same shape.
    let real = server_first("alice");
    assert_eq!(attribute(&real, 'i'), DEFAULT_ITERATIONS.to_string());
    assert_eq!(attribute(&real, 's').len(), attribute(&once, 's').len());

    let mut server = start(Mechanism::ScramSha256);
    let client = RfcClient::new(ScramHash::Sha256, "mallory", PASSWORD);
    assert_eq!(
        rfc_exchange(&mut server, &client).0,
        SaslStep::Failure(SaslFailure::NotAuthorized)
    );
}

#[test]
fn unknown_user_iterations_and_salt_key_follow_the_store() {
    let node = |key: u8| {
        Arc::new(MemoryStore {
            unknown_iterations: Some(10_000),
            salt_key: Some([key; 32]),
            ..memory_store()
        })
    };
    let server_first = |store: Arc<MemoryStore>| {
        let mut server = SaslSession::start("SCRAM-SHA-1", store, true, false, None).unwrap();
        String::from_utf8(challenge(server.step(b"n,,n=mallory,r=abcdef"))).unwrap()
    };
    let on_node_a = server_first(node(1));
    assert_eq!(attribute(&on_node_a, 'i'), "10000");
    // Nodes sharing the key show the same salt; a salt is not just a function of the name.
    assert_eq!(
        attribute(&on_node_a, 's'),
        attribute(&server_first(node(1)), 's')
    );
    assert_ne!(
        attribute(&on_node_a, 's'),
        attribute(&server_first(node(2)), 's')
    );
    // SHA-1 and SHA-256 get different fake salts, as real accounts do.
    let sha256 = fake_credential(ScramHash::Sha256, "mallory", Some([1; 32]), 10_000);
    assert_ne!(BASE64.encode(sha256.salt), attribute(&on_node_a, 's'));
}

#[test]
fn scram_authzid_other_than_own_is_invalid_authzid() {
    let run = |authzid: Option<&'static str>| {
        let mut server = start(Mechanism::ScramSha256);
        let client = TestClient {
            authzid,
            ..TestClient::new("alice", PASSWORD)
        };
        rsasl_exchange(&mut server, client, None)
    };
    assert_eq!(run(Some("bob")), Err(SaslFailure::InvalidAuthzid));
    assert_eq!(
        run(Some("bob@example.org")),
        Err(SaslFailure::InvalidAuthzid)
    );
    assert_eq!(
        run(Some("alice@elsewhere.example")),
        Err(SaslFailure::InvalidAuthzid)
    );
    assert_eq!(
        run(Some("alice@example.org/phone")),
        Err(SaslFailure::InvalidAuthzid)
    );
    // The account's own bare JID means the account itself (RFC 6120 6.3.8).
    assert_eq!(run(Some("alice@example.org")), Ok("alice".to_owned()));
    assert_eq!(run(Some("alice")), Ok("alice".to_owned()));

    let mut server = start(Mechanism::ScramSha1);
    let client = RfcClient::new(ScramHash::Sha1, "alice", PASSWORD).gs2("n,a=bob,", b"");
    assert_eq!(
        rfc_exchange(&mut server, &client).0,
        SaslStep::Failure(SaslFailure::InvalidAuthzid)
    );
}

#[test]
fn malformed_client_first_messages_fail_without_panic() {
    let cases: &[&[u8]] = &[
        b"x",
        b"n",
        b"n,",
        b"n,,",
        b"n,,x",
        b"n,,n",
        b"n,,n=alice",
        b"n,,n=alice,r",
        b"n,,n=alice,r=",
        b"n,a,n=alice,r=abc",
        b"n,x=bob,n=alice,r=abc",
        b"n,a=,n=alice,r=abc",
        b"q,,n=alice,r=abc",
        b"p=,,n=alice,r=abc",
        b"p=tls exporter,,n=alice,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=al=ZZice,r=abc",
        b"n,,n=alice=2,r=abc",
        b"n,,n=alice,r=ab\x7fc",
        b"n,,m=ext,n=alice,r=abc",
        b"n,,n=alice,r=abc,x=extension",
        b"n,,r=abc,n=alice",
        b"n,,n=\xff\xfe,r=abc",
        b"n,,n=\x07,r=abc",
        b"\0\0\0\0",
        b",,,,,,,,",
        b"=,=,=,=",
    ];
    for mechanism in [Mechanism::ScramSha1, Mechanism::ScramSha256] {
        for &case in cases {
            let mut server = start(mechanism);
            let step = server.step(case);
            assert_eq!(
                step,
                SaslStep::Failure(SaslFailure::MalformedRequest),
                "{mechanism} {:?}",
                String::from_utf8_lossy(case)
            );
            assert_no_rsasl_panic(&server);
        }
    }
    let mut server = start(Mechanism::ScramSha256);
    let oversized = vec![b'a'; MAX_CLIENT_MESSAGE_BYTES + 1];
    assert_eq!(
        server.step(&oversized),
        SaslStep::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn malformed_client_final_messages_fail_without_panic() {
    let client = RfcClient::new(ScramHash::Sha256, "alice", PASSWORD);
    type Mutation = fn(&str) -> String;
    let cases: &[(Mutation, SaslFailure)] = &[
        (|_| "garbage".into(), SaslFailure::MalformedRequest),
        (|_| "c".into(), SaslFailure::MalformedRequest),
        (|_| "c=biws".into(), SaslFailure::MalformedRequest),
        (|v| v.replace("p=", "x="), SaslFailure::MalformedRequest),
        (
            |v| v.replace("c=biws", "c=!!!!"),
            SaslFailure::MalformedRequest,
        ),
        (|v| v.replace("c=biws", "c="), SaslFailure::MalformedRequest),
        (
            |v| v.replace(",p=", ",x=ext,p="),
            SaslFailure::MalformedRequest,
        ),
        (|v| format!("{v},x=ext"), SaslFailure::MalformedRequest),
        (
            |v| format!("{}AAAA", &v[..v.len() - 1]),
            SaslFailure::MalformedRequest,
        ),
        (
            |v| format!("{}@", &v[..v.len() - 1]),
            SaslFailure::MalformedRequest,
        ),
        // Well-formed but wrong: the gs2 header in c=, the nonce.
        (
            |v| v.replace("c=biws", "c=eSws"),
            SaslFailure::NotAuthorized,
        ),
        (
            |v| v.replace("r=fyko", "r=Fyko"),
            SaslFailure::NotAuthorized,
        ),
        (
            |v| {
                let (head, _) = v.split_once(",p=").unwrap();
                let (start, _) = head.split_once(",r=").unwrap();
                format!(
                    "{start},r=fyko+d2lbbFgONRv9qkxdawL,p={}",
                    &v[v.len() - 44..]
                )
            },
            SaslFailure::NotAuthorized,
        ),
    ];
    for &(mutate, expected) in cases {
        let mut server = start(Mechanism::ScramSha256);
        let server_first = challenge(server.step(&client.first()));
        let (valid, _) = client.last(&server_first);
        let message = mutate(std::str::from_utf8(&valid).unwrap());
        assert_eq!(
            server.step(message.as_bytes()),
            SaslStep::Failure(expected),
            "{message}"
        );
        assert_no_rsasl_panic(&server);
    }
}

/// Byte-level mutations of valid SCRAM messages; none may reach a panic inside rsasl.
#[test]
fn mutated_scram_messages_never_panic() {
    const ALPHABET: &[u8] = b",=anprcpmyv2C3D0\0\xff+/ ";
    fn mutate(message: &[u8], rng: &mut rand::rngs::StdRng) -> Vec<u8> {
        let mut m = message.to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..=m.len());
            match rng.random_range(0..4) {
                0 => m.truncate(at),
                1 if at < m.len() => m[at] = ALPHABET[rng.random_range(0..ALPHABET.len())],
                2 if at < m.len() => {
                    m.remove(at);
                }
                _ => m.insert(at, ALPHABET[rng.random_range(0..ALPHABET.len())]),
            }
        }
        m
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(5802);
    for round in 0..1500 {
        let (mechanism, hash) = if round % 2 == 0 {
            (Mechanism::ScramSha1, ScramHash::Sha1)
        } else {
            (Mechanism::ScramSha256Plus, ScramHash::Sha256)
        };
        let client = if mechanism.is_plus() {
            RfcClient::new(hash, "alice", PASSWORD).gs2("p=tls-exporter,,", EXPORTER)
        } else {
            RfcClient::new(hash, "alice", PASSWORD)
        };
        let mut server = start_with_binding(mechanism, EXPORTER);
        if round % 3 == 0 {
            server.step(&mutate(&client.first(), &mut rng));
        } else {
            let server_first = challenge(server.step(&client.first()));
            let (last, _) = client.last(&server_first);
            server.step(&mutate(&last, &mut rng));
        }
        assert_no_rsasl_panic(&server);
    }
}

#[test]
fn step_after_success_or_failure_fails() {
    let mut server = start(Mechanism::ScramSha256);
    let client = RfcClient::new(ScramHash::Sha256, "alice", PASSWORD);
    let (last, _) = rfc_exchange(&mut server, &client);
    assert!(matches!(last, SaslStep::Success { .. }));
    assert_eq!(
        server.step(b"c=biws,r=x,p=AAAA"),
        SaslStep::Failure(SaslFailure::MalformedRequest)
    );
    assert_eq!(
        server.step(&client.first()),
        SaslStep::Failure(SaslFailure::MalformedRequest)
    );

    let mut server = start(Mechanism::Plain);
    assert_eq!(
        server.step(b"\0alice\0crayon"),
        SaslStep::Failure(SaslFailure::NotAuthorized)
    );
    assert_eq!(
        server.step(b"\0alice\0pencil"),
        SaslStep::Failure(SaslFailure::MalformedRequest)
    );
    assert_eq!(
        server.failure_reason(),
        Some("a step after the exchange ended")
    );
}

#[test]
fn corrupt_stored_record_is_temporary_auth_failure() {
    let mut record = pencil_record();
    record.scram_sha256.stored_key.pop();
    let store = MemoryStore {
        users: HashMap::from([("alice".to_owned(), record)]),
        ..MemoryStore::default()
    };
    let store: Arc<dyn CredentialStore> = Arc::new(store);
    let mut server = SaslSession::start("SCRAM-SHA-256", store.clone(), true, false, None).unwrap();
    assert_eq!(
        server.step(b"n,,n=alice,r=abc"),
        SaslStep::Failure(SaslFailure::TemporaryAuthFailure)
    );
    let mut server = SaslSession::start("PLAIN", store, true, false, None).unwrap();
    assert_eq!(
        server.step(b"\0alice\0pencil"),
        SaslStep::Failure(SaslFailure::TemporaryAuthFailure)
    );
}

// ---------------------------------------------------------------- channel binding

#[test]
fn scram_sha256_plus_succeeds_with_matching_tls_exporter() {
    let mut server = start_with_binding(Mechanism::ScramSha256Plus, EXPORTER);
    let client = TestClient {
        supports_channel_binding: true,
        ..TestClient::new("alice", PASSWORD)
    };
    assert_eq!(
        rsasl_exchange(&mut server, client, Some(EXPORTER)),
        Ok("alice".into())
    );

    let mut server = start_with_binding(Mechanism::ScramSha1Plus, EXPORTER);
    let client =
        RfcClient::new(ScramHash::Sha1, "alice", PASSWORD).gs2("p=tls-exporter,,", EXPORTER);
    assert!(matches!(
        rfc_exchange(&mut server, &client).0,
        SaslStep::Success { .. }
    ));
}

#[test]
fn scram_sha256_plus_fails_when_tls_exporter_differs() {
    let mut server = start_with_binding(Mechanism::ScramSha256Plus, EXPORTER);
    let client = TestClient {
        supports_channel_binding: true,
        ..TestClient::new("alice", PASSWORD)
    };
    let other = b"a different TLS session exporter";
    assert_eq!(
        rsasl_exchange(&mut server, client, Some(other)),
        Err(SaslFailure::NotAuthorized)
    );
    assert!(server.failure_reason().unwrap().contains("channel binding"));
}

#[test]
fn plus_mechanism_requires_tls_exporter_binding() {
    for header in ["n,,", "y,,", "p=tls-unique,,", "p=tls-server-end-point,,"] {
        let mut server = start_with_binding(Mechanism::ScramSha256Plus, EXPORTER);
        let client = RfcClient::new(ScramHash::Sha256, "alice", PASSWORD).gs2(header, b"");
        assert_eq!(
            server.step(&client.first()),
            SaslStep::Failure(SaslFailure::MalformedRequest),
            "{header}"
        );
    }
}

#[test]
fn channel_binding_with_a_non_plus_mechanism_is_refused() {
    let mut server = start_with_binding(Mechanism::ScramSha256, EXPORTER);
    let client =
        RfcClient::new(ScramHash::Sha256, "alice", PASSWORD).gs2("p=tls-exporter,,", EXPORTER);
    assert_eq!(
        server.step(&client.first()),
        SaslStep::Failure(SaslFailure::MalformedRequest)
    );
}

#[test]
fn y_flag_is_a_downgrade_when_plus_was_offered() {
    // rsasl's client, supporting channel binding but offered only SCRAM-SHA-256, says "y".
    let client = || TestClient {
        supports_channel_binding: true,
        ..TestClient::new("alice", PASSWORD)
    };
    let mut server = start_with_binding(Mechanism::ScramSha256, EXPORTER);
    assert_eq!(
        rsasl_exchange(&mut server, client(), Some(EXPORTER)),
        Err(SaslFailure::NotAuthorized)
    );
    assert!(server.failure_reason().unwrap().contains("downgrade"));
    // Without -PLUS on offer, "y" is the truth and is accepted.
    let mut server = start(Mechanism::ScramSha256);
    assert_eq!(
        rsasl_exchange(&mut server, client(), None),
        Ok("alice".into())
    );
}

// ---------------------------------------------------------------- PLAIN

#[test]
fn plain_succeeds_with_right_password() {
    let mut server = start(Mechanism::Plain);
    assert_eq!(
        rsasl_exchange(&mut server, TestClient::new("alice", PASSWORD), None),
        Ok("alice".into())
    );
}

#[test]
fn an_unreadable_account_store_is_a_temporary_failure_not_an_unknown_user() {
    for mechanism in [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
    ] {
        let store = MemoryStore {
            unreadable: true,
            ..memory_store()
        };
        let mut server =
            SaslSession::start(mechanism.name(), Arc::new(store), true, false, None).unwrap();
        assert_eq!(
            rsasl_exchange(&mut server, TestClient::new("alice", PASSWORD), None),
            Err(SaslFailure::TemporaryAuthFailure),
            "{mechanism:?}"
        );
    }
}

#[test]
fn plain_wrong_password_is_not_authorized() {
    let mut server = start(Mechanism::Plain);
    assert_eq!(
        rsasl_exchange(&mut server, TestClient::new("alice", "crayon"), None),
        Err(SaslFailure::NotAuthorized)
    );
    assert_eq!(server.failure_reason(), Some("wrong password"));
}

#[test]
fn plain_unknown_user_is_not_authorized() {
    let mut server = start(Mechanism::Plain);
    assert_eq!(
        server.step(b"\0mallory\0pencil"),
        SaslStep::Failure(SaslFailure::NotAuthorized)
    );
    assert_eq!(server.failure_reason(), Some("no such account"));
}

#[test]
fn plain_checks_the_saslprepped_password() {
    // The record holds keys of "pencil"; SASLprep drops the soft hyphen.
    let mut server = start(Mechanism::Plain);
    let outcome = server.step("\0alice\0pen\u{AD}cil".as_bytes());
    assert!(matches!(outcome, SaslStep::Success { .. }), "{outcome:?}");
}

#[test]
fn plain_authzid_other_than_own_is_invalid_authzid() {
    let run = |message: &[u8]| start(Mechanism::Plain).step(message);
    assert_eq!(
        run(b"bob\0alice\0pencil"),
        SaslStep::Failure(SaslFailure::InvalidAuthzid)
    );
    assert!(matches!(
        run(b"alice\0alice\0pencil"),
        SaslStep::Success { .. }
    ));
    // The wrong password is reported as such, whatever the authzid.
    assert_eq!(
        run(b"bob\0alice\0crayon"),
        SaslStep::Failure(SaslFailure::NotAuthorized)
    );
}

#[test]
fn malformed_plain_messages_fail_without_panic() {
    let cases: &[&[u8]] = &[
        b"x",
        b"alice pencil",
        b"\0alice",
        b"\0alice\0",
        b"\0\0pencil",
        b"\0alice\0pencil\0",
        b"\xff\0alice\0pencil",
        b"\0\xff\0pencil",
        b"\0ali\x07ce\0pencil",
    ];
    for &case in cases {
        let mut server = start(Mechanism::Plain);
        assert_eq!(
            server.step(case),
            SaslStep::Failure(SaslFailure::MalformedRequest),
            "{:?}",
            String::from_utf8_lossy(case)
        );
        assert_no_rsasl_panic(&server);
    }
}

#[test]
fn the_claimed_username_is_read_before_any_cryptography() {
    use super::{claimed_username, Mechanism};
    assert_eq!(
        claimed_username(Mechanism::Plain, b"\0alice\0secret").as_deref(),
        Some("alice")
    );
    assert_eq!(
        claimed_username(Mechanism::Plain, b"admin@x\0bob\0pw").as_deref(),
        Some("bob")
    );
    assert_eq!(claimed_username(Mechanism::Plain, b"nothing"), None);
    assert_eq!(
        claimed_username(Mechanism::ScramSha256, b"n,,n=carol,r=abc").as_deref(),
        Some("carol")
    );
    assert_eq!(
        claimed_username(
            Mechanism::ScramSha1Plus,
            b"p=tls-exporter,a=x,n=a=2Cb=3Dc,r=1"
        )
        .as_deref(),
        Some("a,b=c")
    );
    assert_eq!(claimed_username(Mechanism::ScramSha256, b"n,,r=abc"), None);
    assert_eq!(
        claimed_username(Mechanism::ScramSha256, &[0xff, 0xfe]),
        None
    );
}
