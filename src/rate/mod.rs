//! Rate limits: token buckets per IP address, per account and per session.
//!
//! - SASL: failed attempts per IP and per account (`rate.sasl_*`). An attempt
//!   is let through while both buckets hold a token and charged if it fails,
//!   so a user who types the password right is never slowed by the limit, and
//!   a password guesser gets `<temporary-auth-failure/>` without a PBKDF2 run.
//! - In-band registrations per IP, in-band password changes per account.
//! - What a session reads: stanzas and bytes per second ([`Shaper`]). Over the
//!   limit, reading pauses (TCP pushes back on the client); nothing is dropped.
//!
//! Every table is bounded (`rate.tracked_keys`); the limits are this node's:
//! a client spreading over N nodes gets N times the rate.

pub mod bucket;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucket::{Bucket, Buckets, Spec};

use crate::config::Settings;

/// Which limit refused something (for metrics and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    SaslPerIp,
    SaslPerAccount,
    RegistrationsPerIp,
    PasswordChangesPerAccount,
}

pub struct Rates {
    sasl_ip: Mutex<Buckets<IpAddr>>,
    sasl_account: Mutex<Buckets<String>>,
    registrations: Mutex<Buckets<IpAddr>>,
    password_changes: Mutex<Buckets<String>>,
    pub session_stanzas: Spec,
    pub session_bytes: Spec,
    refused: [AtomicU64; 4],
    /// Times a session's reading paused for its shaper.
    pub shaped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Rates {
    pub fn from_settings(settings: &Settings) -> Arc<Rates> {
        let r = &settings.rate;
        let keys = r.tracked_keys as usize;
        Arc::new(Rates {
            sasl_ip: Mutex::new(Buckets::new(
                Spec::per_minute(r.sasl_failures_per_ip_per_minute),
                keys,
            )),
            sasl_account: Mutex::new(Buckets::new(
                Spec::per_minute(r.sasl_failures_per_account_per_minute),
                keys,
            )),
            registrations: Mutex::new(Buckets::new(
                Spec::per_minute(r.registrations_per_ip_per_minute),
                keys,
            )),
            password_changes: Mutex::new(Buckets::new(
                Spec::per_minute(r.password_changes_per_account_per_minute),
                keys,
            )),
            session_stanzas: Spec::per_second(r.session_stanzas_per_second, r.session_stanza_burst),
            session_bytes: Spec::per_second(r.session_bytes_per_second, r.session_byte_burst),
            refused: Default::default(),
            shaped: AtomicU64::new(0),
        })
    }

    fn refuse(&self, limit: Limit) -> Result<(), Limit> {
        self.refused[limit as usize].fetch_add(1, Ordering::Relaxed);
        Err(limit)
    }

    /// May a SASL attempt from `ip` for `account` (as the client named it) go ahead?
    pub fn sasl_allowed(&self, ip: IpAddr, account: Option<&str>) -> Result<(), Limit> {
        let now = Instant::now();
        if !lock(&self.sasl_ip).has_token(&ip, now) {
            return self.refuse(Limit::SaslPerIp);
        }
        if let Some(account) = account {
            if !lock(&self.sasl_account).has_token(&account.to_string(), now) {
                return self.refuse(Limit::SaslPerAccount);
            }
        }
        Ok(())
    }

    /// A SASL attempt failed: charge it to its address and account.
    pub fn sasl_failed(&self, ip: IpAddr, account: Option<&str>) {
        let now = Instant::now();
        lock(&self.sasl_ip).charge(&ip, now);
        if let Some(account) = account {
            lock(&self.sasl_account).charge(&account.to_string(), now);
        }
    }

    /// Take a registration from `ip`'s allowance.
    pub fn registration(&self, ip: IpAddr) -> Result<(), Limit> {
        if lock(&self.registrations).try_take(&ip, Instant::now()) {
            Ok(())
        } else {
            self.refuse(Limit::RegistrationsPerIp)
        }
    }

    /// Take a password change from `account`'s allowance.
    pub fn password_change(&self, account: &str) -> Result<(), Limit> {
        if lock(&self.password_changes).try_take(&account.to_string(), Instant::now()) {
            Ok(())
        } else {
            self.refuse(Limit::PasswordChangesPerAccount)
        }
    }

    pub fn refused(&self, limit: Limit) -> u64 {
        self.refused[limit as usize].load(Ordering::Relaxed)
    }

    pub fn shaper(self: &Arc<Self>) -> Shaper {
        let now = Instant::now();
        Shaper {
            stanzas: Bucket::full(&self.session_stanzas, now),
            bytes: Bucket::full(&self.session_bytes, now),
            rates: self.clone(),
        }
    }
}

/// One session's reading allowance, asked after each stanza it read.
pub struct Shaper {
    stanzas: Bucket,
    bytes: Bucket,
    rates: Arc<Rates>,
}

impl Shaper {
    /// How long reading pauses after a stanza of `bytes` bytes.
    pub fn after_stanza(&mut self, bytes: u64) -> Duration {
        let now = Instant::now();
        let a = self
            .stanzas
            .take_and_wait(&self.rates.session_stanzas, 1.0, now);
        let b = self
            .bytes
            .take_and_wait(&self.rates.session_bytes, bytes as f64, now);
        let wait = a.max(b);
        if !wait.is_zero() {
            self.rates.shaped.fetch_add(1, Ordering::Relaxed);
        }
        wait
    }
}
