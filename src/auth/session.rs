//! One SASL exchange: an rsasl server session, the callback that feeds it accounts, and
//! the translation of its outcome into `SaslStep`s.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use chorus_raft::ScramCredential;
use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::plain::PLAIN;
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechanisms::scram::{SCRAM_SHA1, SCRAM_SHA1_PLUS, SCRAM_SHA256, SCRAM_SHA256_PLUS};
use rsasl::prelude::{
    ChannelBindingCallback, Mechanism as RsaslMechanism, Mechname, MessageSent, Registry,
    SASLConfig, SASLServer, Session, SessionError, State,
};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};

use super::credentials::{
    credential_is_usable, fake_credential, plain_password_matches, ScramHash,
};
use super::scram_wire::{
    authcid_from_saslname, authzid_from_saslname, channel_binding_verdict, check_client_final,
    parse_client_first,
};
use super::{
    authzid_verdict, offered_mechanisms, CredentialStore, Mechanism, Rejection, SaslFailure,
    SaslStep, CHANNEL_BINDING_TYPE, MAX_CLIENT_MESSAGE_BYTES,
};

/// rsasl starts the plain SCRAM servers in "server supports channel binding" mode exactly
/// when its registry also holds the `-PLUS` variant, so the registry mirrors the offer.
static WITH_PLUS: &[RsaslMechanism] = &[
    SCRAM_SHA256_PLUS,
    SCRAM_SHA1_PLUS,
    SCRAM_SHA256,
    SCRAM_SHA1,
    PLAIN,
];
static WITHOUT_PLUS: &[RsaslMechanism] = &[SCRAM_SHA256, SCRAM_SHA1, PLAIN];

/// Marks a panic inside rsasl, turned into a failure instead of taking the connection's
/// task down. `scram_wire` exists so this never happens; tests check it does not.
pub(crate) const RSASL_PANICKED: &str = "rsasl panicked while handling the message";

/// One server-side SASL exchange on one stream. Drop it and start another to retry.
pub struct SaslSession {
    mechanism: Mechanism,
    server_offers_plus: bool,
    /// `None` once the exchange has ended, either way.
    exchange: Option<Session<Outcome, TlsExporter>>,
    phase: Phase,
    failure_reason: Option<Cow<'static, str>>,
}

impl std::fmt::Debug for SaslSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSession")
            .field("mechanism", &self.mechanism)
            .field("phase", &self.phase)
            .field("finished", &self.is_finished())
            .field("failure_reason", &self.failure_reason)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    AwaitingFirst { empty_challenge_sent: bool },
    AwaitingFinal,
}

impl SaslSession {
    /// Starts an exchange for `<auth mechanism='...'>`. `channel_binding` is the
    /// tls-exporter value of this stream's TLS session (RFC 9266), if any.
    pub fn start(
        mechanism: &str,
        store: Arc<dyn CredentialStore>,
        tls: bool,
        allow_plaintext_auth: bool,
        channel_binding: Option<Vec<u8>>,
    ) -> Result<SaslSession, SaslFailure> {
        let channel_binding = channel_binding.filter(|cb| tls && !cb.is_empty());
        let server_offers_plus = channel_binding.is_some();
        let offered = offered_mechanisms(tls, server_offers_plus, allow_plaintext_auth);
        let mechanism = match Mechanism::from_name(mechanism) {
            Some(m) if offered.contains(&m) => m,
            Some(Mechanism::Plain) => return Err(SaslFailure::EncryptionRequired),
            _ => return Err(SaslFailure::InvalidMechanism),
        };
        let registry = Registry::with_mechanisms(if server_offers_plus {
            WITH_PLUS
        } else {
            WITHOUT_PLUS
        });
        let config = SASLConfig::builder()
            .with_registry(registry)
            .with_callback(Accounts { store, mechanism })
            .map_err(|_| SaslFailure::TemporaryAuthFailure)?;
        let mechname = Mechname::parse(mechanism.name().as_bytes())
            .map_err(|_| SaslFailure::InvalidMechanism)?;
        let exchange =
            SASLServer::<Outcome, TlsExporter>::with_cb(config, TlsExporter(channel_binding))
                .start_suggested(mechname)
                .map_err(|_| SaslFailure::InvalidMechanism)?;
        Ok(SaslSession {
            mechanism,
            server_offers_plus,
            exchange: Some(exchange),
            phase: Phase::AwaitingFirst {
                empty_challenge_sent: false,
            },
            failure_reason: None,
        })
    }

    /// Handles one client message, already base64-decoded ("=" and an absent initial
    /// response both arrive as empty). PLAIN costs one PBKDF2 run here: call it where a
    /// few milliseconds of CPU do not stall other streams.
    pub fn step(&mut self, client_data: &[u8]) -> SaslStep {
        match self.advance(client_data) {
            Ok(step) => step,
            Err(rejection) => {
                self.exchange = None;
                let failure = rejection.failure;
                self.failure_reason = Some(rejection.reason);
                SaslStep::Failure(failure)
            }
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the exchange has ended (success or failure); further steps fail.
    pub fn is_finished(&self) -> bool {
        self.exchange.is_none()
    }

    /// Why the last step failed, for the server's log. Never send it to the client: it
    /// tells apart unknown accounts and wrong passwords.
    pub fn failure_reason(&self) -> Option<&str> {
        self.failure_reason.as_deref()
    }

    fn advance(&mut self, data: &[u8]) -> Result<SaslStep, Rejection> {
        let mut exchange = self.exchange.take().ok_or_else(|| {
            Rejection::new(
                SaslFailure::MalformedRequest,
                "a step after the exchange ended",
            )
        })?;
        if data.len() > MAX_CLIENT_MESSAGE_BYTES {
            return Err(Rejection::new(
                SaslFailure::MalformedRequest,
                "client message exceeds MAX_CLIENT_MESSAGE_BYTES",
            ));
        }
        match self.phase {
            Phase::AwaitingFirst {
                empty_challenge_sent,
            } if data.is_empty() => {
                // Neither PLAIN nor SCRAM has an empty first message, so an empty one is a
                // missing initial response: ask for it, once, with an empty challenge.
                if empty_challenge_sent {
                    return Err(Rejection::new(
                        SaslFailure::MalformedRequest,
                        "empty first message after an empty challenge",
                    ));
                }
                self.phase = Phase::AwaitingFirst {
                    empty_challenge_sent: true,
                };
                self.exchange = Some(exchange);
                return Ok(SaslStep::Challenge(Vec::new()));
            }
            Phase::AwaitingFirst { .. } => {
                if self.mechanism.scram_hash().is_some() {
                    let first = parse_client_first(data)?;
                    channel_binding_verdict(self.mechanism, self.server_offers_plus, &first.cbind)?;
                }
            }
            Phase::AwaitingFinal => {
                if let Some(hash) = self.mechanism.scram_hash() {
                    check_client_final(data, hash)?;
                }
            }
        }

        let mut out = Vec::new();
        let stepped = catch_unwind(AssertUnwindSafe(|| exchange.step(Some(data), &mut out)));
        let state = match stepped {
            Ok(result) => result.map_err(classify)?,
            Err(_) => {
                return Err(Rejection::new(
                    SaslFailure::TemporaryAuthFailure,
                    RSASL_PANICKED,
                ))
            }
        };
        match state {
            State::Running => {
                self.phase = Phase::AwaitingFinal;
                self.exchange = Some(exchange);
                Ok(SaslStep::Challenge(out))
            }
            State::Finished(sent) => match exchange.validation() {
                Some(Ok(username)) => Ok(SaslStep::Success {
                    username,
                    additional_data: matches!(sent, MessageSent::Yes).then_some(out),
                }),
                Some(Err(rejection)) => Err(rejection),
                // rsasl's SCRAM server ends without calling validate when the proof or
                // the channel binding is wrong, having written "e=..." instead.
                None => Err(Rejection::new(
                    SaslFailure::NotAuthorized,
                    scram_error_reason(&out),
                )),
            },
        }
    }
}

fn scram_error_reason(server_final: &[u8]) -> &'static str {
    match server_final {
        b"e=invalid-proof" => "invalid proof: wrong password, unknown account or wrong nonce",
        b"e=channel-bindings-dont-match" => {
            "c= does not match the gs2 header and this stream's channel binding"
        }
        _ => "rsasl finished without validating the client",
    }
}

fn classify(error: SessionError) -> Rejection {
    match error {
        SessionError::Boxed(error) => match error.downcast::<CallbackRejection>() {
            Ok(rejection) => rejection.0,
            Err(error) => Rejection::new(
                SaslFailure::TemporaryAuthFailure,
                format!("credential callback failed: {error}"),
            ),
        },
        SessionError::CallbackError(_) | SessionError::ValidationError(_) => Rejection::new(
            SaslFailure::TemporaryAuthFailure,
            format!("credential callback failed: {error}"),
        ),
        other => Rejection::new(
            SaslFailure::MalformedRequest,
            format!("rsasl refused the message: {other}"),
        ),
    }
}

/// The verdict the callback hands back through rsasl: the username, or why not.
struct Outcome;
impl Validation for Outcome {
    type Value = Result<String, Rejection>;
}

/// Carries a `Rejection` out of the callback through rsasl's error type.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.reason)]
struct CallbackRejection(Rejection);

struct TlsExporter(Option<Vec<u8>>);
impl ChannelBindingCallback for TlsExporter {
    fn get_cb_data(&self, cbname: &str) -> Option<&[u8]> {
        if cbname == CHANNEL_BINDING_TYPE {
            self.0.as_deref()
        } else {
            None
        }
    }
}

struct Accounts {
    store: Arc<dyn CredentialStore>,
    mechanism: Mechanism,
}

impl SessionCallback for Accounts {
    fn callback(
        &self,
        _session_data: &SessionData,
        context: &Context,
        request: &mut Request<'_>,
    ) -> Result<(), SessionError> {
        // The only thing rsasl's servers ask for is SCRAM's stored keys.
        let Some(hash) = self.mechanism.scram_hash() else {
            return Ok(());
        };
        if !request.is::<ScramStoredPassword>() {
            return Ok(());
        }
        let credential = context
            .get_ref::<AuthId>()
            .ok_or_else(|| {
                Rejection::new(
                    SaslFailure::TemporaryAuthFailure,
                    "rsasl asked for SCRAM keys without a username",
                )
            })
            .and_then(authcid_from_saslname)
            .and_then(|authcid| self.scram_credential(hash, &authcid))
            .map_err(|rejection| SessionError::Boxed(Box::new(CallbackRejection(rejection))))?;
        request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(
            credential.iterations,
            &credential.salt,
            &credential.stored_key,
            &credential.server_key,
        ))?;
        Ok(())
    }

    fn validate(
        &self,
        _session_data: &SessionData,
        context: &Context,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let verdict = match self.mechanism.scram_hash() {
            Some(_) => self.scram_verdict(context),
            None => self.plain_verdict(context),
        };
        validate.finalize::<Outcome>(verdict);
        Ok(())
    }
}

/// The account store could not be read: a temporary failure, never "no such account".
fn unreadable(e: chorus_raft::ReadError) -> Rejection {
    tracing::error!(error = %e, "account unreadable during SASL");
    Rejection::new(
        SaslFailure::TemporaryAuthFailure,
        "the account could not be read",
    )
}

impl Accounts {
    /// An unknown name gets a fake credential rather than a refusal, so the challenge
    /// looks the same whether or not the account exists (RFC 5802 section 9).
    fn scram_credential(
        &self,
        hash: ScramHash,
        authcid: &str,
    ) -> Result<ScramCredential, Rejection> {
        match self.store.lookup(authcid).map_err(unreadable)? {
            Some(record) => {
                let credential = hash.credential(&record);
                if credential_is_usable(hash, credential) {
                    Ok(credential.clone())
                } else {
                    Err(malformed_record())
                }
            }
            None => Ok(fake_credential(
                hash,
                authcid,
                self.store.unknown_user_salt_key(),
                self.store.iterations_for_unknown_users().max(1),
            )),
        }
    }

    /// Called by rsasl once the client's proof matched the stored keys.
    fn scram_verdict(&self, context: &Context) -> Result<String, Rejection> {
        let raw = context.get_ref::<AuthId>().ok_or_else(|| {
            Rejection::new(
                SaslFailure::TemporaryAuthFailure,
                "rsasl validated SCRAM without a username",
            )
        })?;
        let authcid = authcid_from_saslname(raw)?;
        // A fake credential's random keys match no proof, but an account deleted during
        // the exchange should not log in either.
        if self.store.lookup(&authcid).map_err(unreadable)?.is_none() {
            return Err(Rejection::new(
                SaslFailure::NotAuthorized,
                "the account no longer exists",
            ));
        }
        let authzid = context
            .get_ref::<AuthzId>()
            .map(authzid_from_saslname)
            .transpose()?;
        authzid_verdict(&authcid, authzid.as_deref(), self.store.domain())?;
        Ok(authcid)
    }

    /// rsasl has already split the message and SASLprep'd the authcid and password.
    fn plain_verdict(&self, context: &Context) -> Result<String, Rejection> {
        let (Some(authcid), Some(password)) =
            (context.get_ref::<AuthId>(), context.get_ref::<Password>())
        else {
            return Err(Rejection::new(
                SaslFailure::TemporaryAuthFailure,
                "rsasl validated PLAIN without a username or password",
            ));
        };
        match self.store.lookup(authcid).map_err(unreadable)? {
            Some(record) => {
                if !credential_is_usable(ScramHash::Sha256, &record.scram_sha256) {
                    return Err(malformed_record());
                }
                if !plain_password_matches(&record.scram_sha256, password) {
                    return Err(Rejection::new(SaslFailure::NotAuthorized, "wrong password"));
                }
            }
            None => {
                // Spend the same PBKDF2 run as for a real account, so that the response
                // time does not tell which names exist.
                let fake = fake_credential(
                    ScramHash::Sha256,
                    authcid,
                    self.store.unknown_user_salt_key(),
                    self.store.iterations_for_unknown_users().max(1),
                );
                std::hint::black_box(plain_password_matches(&fake, password));
                return Err(Rejection::new(
                    SaslFailure::NotAuthorized,
                    "no such account",
                ));
            }
        }
        authzid_verdict(authcid, context.get_ref::<AuthzId>(), self.store.domain())?;
        Ok(authcid.to_owned())
    }
}

fn malformed_record() -> Rejection {
    Rejection::new(
        SaslFailure::TemporaryAuthFailure,
        "the stored SCRAM credential has keys of the wrong length; reset the account's password",
    )
}
