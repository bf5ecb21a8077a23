//! SASL for the generated clients (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256) through rsasl, with
//! the salted password kept per account as real clients keep it (RFC 5802 section 5.1),
//! so that a login storm measures the server, not the generator's PBKDF2.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::{Iterations, Salt, SaltedPassword};
use rsasl::prelude::*;
use rsasl::property::{AuthId, Password};
use serde::{Deserialize, Serialize};

/// One account's salted password for one mechanism, salt and iteration count.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedKey {
    pub user: String,
    pub mechanism: String,
    pub salt: String,
    pub iterations: u32,
    pub salted: String,
}

type Key = (String, String, Vec<u8>, u32);

/// Salted passwords by account; filled as logins run PBKDF2, reused by later logins.
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<Key, Vec<u8>>>,
    fresh: Mutex<Vec<CachedKey>>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl KeyCache {
    pub fn load(path: &Path) -> anyhow::Result<KeyCache> {
        let cache = KeyCache::default();
        if !path.exists() {
            return Ok(cache);
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Ok(cache);
        }
        let entries: Vec<CachedKey> = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a key cache: {e}", path.display()))?;
        cache.insert_all(entries)?;
        Ok(cache)
    }

    pub fn insert_all(&self, entries: Vec<CachedKey>) -> anyhow::Result<()> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            keys.insert(
                (e.user, e.mechanism, b64().decode(&e.salt)?, e.iterations),
                b64().decode(&e.salted)?,
            );
        }
        Ok(())
    }

    /// Every key known, for the coordinator to write back.
    pub fn all(&self) -> Vec<CachedKey> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<CachedKey> = keys
            .iter()
            .map(|((user, mechanism, salt, iterations), salted)| CachedKey {
                user: user.clone(),
                mechanism: mechanism.clone(),
                salt: b64().encode(salt),
                iterations: *iterations,
                salted: b64().encode(salted),
            })
            .collect();
        out.sort_by(|a, b| (&a.user, &a.mechanism).cmp(&(&b.user, &b.mechanism)));
        out
    }

    /// Keys computed since the last call (a worker reports them to the coordinator).
    pub fn take_fresh(&self) -> Vec<CachedKey> {
        std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn salted(
        &self,
        user: &str,
        mechanism: &str,
        salt: &[u8],
        iterations: u32,
        password: &str,
    ) -> Vec<u8> {
        let key = (
            user.to_string(),
            mechanism.to_string(),
            salt.to_vec(),
            iterations,
        );
        if let Some(s) = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return s.clone();
        }
        let salted = if mechanism == "SCRAM-SHA-1" {
            let mut out = [0u8; 20];
            pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password.as_bytes(), salt, iterations, &mut out);
            out.to_vec()
        } else {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt, iterations, &mut out);
            out.to_vec()
        };
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(CachedKey {
                user: user.to_string(),
                mechanism: mechanism.to_string(),
                salt: b64().encode(salt),
                iterations,
                salted: b64().encode(&salted),
            });
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, salted.clone());
        salted
    }
}

struct Credentials {
    user: String,
    password: String,
    cache: Arc<KeyCache>,
}

impl SessionCallback for Credentials {
    fn callback(
        &self,
        session: &SessionData,
        context: &Context,
        request: &mut Request<'_>,
    ) -> Result<(), SessionError> {
        if request.is::<SaltedPassword>() {
            let (Some(salt), Some(iterations)) =
                (context.get_ref::<Salt>(), context.get_ref::<Iterations>())
            else {
                return Ok(());
            };
            let mechanism = session.mechanism().mechanism.as_str();
            let salted =
                self.cache
                    .salted(&self.user, mechanism, salt, *iterations, &self.password);
            request.satisfy::<SaltedPassword>(&salted)?;
        } else if request.is::<AuthId>() {
            request.satisfy::<AuthId>(&self.user)?;
        } else if request.is::<Password>() {
            request.satisfy::<Password>(self.password.as_bytes())?;
        }
        Ok(())
    }
}

/// A client-side SASL exchange for one login.
pub struct Exchange {
    session: Session,
}

/// What one step says to send next, if anything.
pub enum Step {
    Send(Vec<u8>),
    Done,
}

impl Exchange {
    pub fn start(
        mechanism: &str,
        user: &str,
        password: &str,
        cache: Arc<KeyCache>,
    ) -> anyhow::Result<Exchange> {
        let config = SASLConfig::builder()
            .with_defaults()
            .with_callback(Credentials {
                user: user.to_string(),
                password: password.to_string(),
                cache,
            })
            .map_err(|e| anyhow::anyhow!("SASL set-up: {e}"))?;
        let name = Mechname::parse(mechanism.as_bytes())
            .map_err(|e| anyhow::anyhow!("bad mechanism name {mechanism}: {e}"))?;
        let session = SASLClient::new(config)
            .start_suggested(&[name])
            .map_err(|e| anyhow::anyhow!("cannot start {mechanism}: {e}"))?;
        Ok(Exchange { session })
    }

    /// One step: `input` is the server's data (None for the client's first message).
    pub fn step(&mut self, input: Option<&[u8]>) -> anyhow::Result<Step> {
        let mut out = Vec::new();
        let state = self
            .session
            .step(input, &mut out)
            .map_err(|e| anyhow::anyhow!("SASL: {e}"))?;
        Ok(match state {
            State::Running | State::Finished(MessageSent::Yes) => Step::Send(out),
            State::Finished(MessageSent::No) => Step::Done,
        })
    }
}
