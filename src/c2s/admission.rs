//! Who may open a client connection: at most `c2s.max_connections` in all,
//! `c2s.max_connections_per_ip` from one address, and
//! `c2s.max_unauthenticated` that have not authenticated yet (those cost a
//! parser and, during SASL, PBKDF2 work, and anyone can open them).
//!
//! A connection holds a [`Ticket`] from accept to close; dropping it gives
//! its places back, so no path can leak a count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::xmpp::error::StreamErrorKind;

/// The three bounds, as configured (`max_connections` already capped by the
/// process's file limit, see [`effective_max_connections`]).
#[derive(Clone, Debug)]
pub struct Bounds {
    pub total: u64,
    pub per_ip: u64,
    pub unauthenticated: u64,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    PerIp,
    Unauthenticated,
}

impl Refusal {
    /// The stream error the refused client reads (RFC 6120 4.9.3).
    pub fn stream_error(self) -> (StreamErrorKind, &'static str) {
        match self {
            Refusal::MaxConnections => (
                StreamErrorKind::ResourceConstraint,
                "the server has too many connections; try another node or later",
            ),
            Refusal::PerIp => (
                StreamErrorKind::PolicyViolation,
                "too many connections from your address",
            ),
            Refusal::Unauthenticated => (
                StreamErrorKind::ResourceConstraint,
                "too many connections are logging in; try again shortly",
            ),
        }
    }
}

/// The counts a decision looks at.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub total: u64,
    pub from_ip: u64,
    pub unauthenticated: u64,
}

/// May one more connection come in? The refusal names the bound it would break.
pub fn admit(counts: Counts, bounds: &Bounds) -> Result<(), Refusal> {
    if counts.total >= bounds.total {
        Err(Refusal::MaxConnections)
    } else if counts.from_ip >= bounds.per_ip {
        Err(Refusal::PerIp)
    } else if counts.unauthenticated >= bounds.unauthenticated {
        Err(Refusal::Unauthenticated)
    } else {
        Ok(())
    }
}

#[derive(Default)]
struct Open {
    total: u64,
    unauthenticated: u64,
    per_ip: HashMap<IpAddr, u64>,
}

/// This node's open client connections, and how many were refused.
pub struct Admission {
    bounds: Bounds,
    open: Mutex<Open>,
    refused: [AtomicU64; 3],
}

impl Admission {
    pub fn new(bounds: Bounds) -> Arc<Admission> {
        Arc::new(Admission {
            bounds,
            open: Mutex::new(Open::default()),
            refused: Default::default(),
        })
    }

    pub fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    /// Take places for a new connection from `ip`, or say why not.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let counts = Counts {
            total: open.total,
            from_ip: open.per_ip.get(&ip).copied().unwrap_or(0),
            unauthenticated: open.unauthenticated,
        };
        if let Err(refusal) = admit(counts, &self.bounds) {
            drop(open);
            self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        open.total += 1;
        open.unauthenticated += 1;
        *open.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Ticket {
            admission: self.clone(),
            ip,
            unauthenticated: true,
        })
    }

    /// (open connections, of which unauthenticated).
    pub fn open(&self) -> (u64, u64) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        (open.total, open.unauthenticated)
    }

    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }
}

/// One connection's places; given back when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    unauthenticated: bool,
}

impl Ticket {
    /// The connection authenticated: it no longer counts against `c2s.max_unauthenticated`.
    pub fn authenticated(&mut self) {
        if std::mem::take(&mut self.unauthenticated) {
            let mut open = self
                .admission
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            open.unauthenticated -= 1;
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if self.unauthenticated {
            open.unauthenticated -= 1;
        }
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// File descriptors kept back when client connections are counted against the file
/// limit: RocksDB's table files (capped at `chorus_raft::config::MAX_OPEN_TABLE_FILES`,
/// 128) and its logs, the listeners, peer links, Raft connections (at most 256 inbound),
/// admin API requests. An idle node uses about 40; with 1024 kept back a node here
/// (20,000 files) could not hold 19,000 sessions.
pub const RESERVED_FDS: u64 = 512;

/// Raise the soft limit on open files to the hard one, and keep
/// `c2s.max_connections` below it: a node at its file limit would fail to
/// accept (and to open RocksDB files) instead of refusing politely. 0 means
/// "as many as the limit allows".
pub fn effective_max_connections(configured: u64) -> u64 {
    let allowed = raise_file_limit()
        .map(|limit| limit.saturating_sub(RESERVED_FDS).max(1))
        .unwrap_or(u64::MAX);
    if configured == 0 {
        return allowed;
    }
    if configured > allowed {
        tracing::warn!(
            configured,
            allowed,
            "c2s.max_connections is above what the open-file limit allows; using the lower figure"
        );
    }
    configured.min(allowed)
}

/// The soft RLIMIT_NOFILE after raising it to the hard limit, if it can be read.
fn raise_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let unlimited = |v: Option<u64>| v.unwrap_or(u64::MAX);
    if unlimited(lim.current) < unlimited(lim.maximum) {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return Some(unlimited(lim.maximum));
        }
    }
    Some(unlimited(lim.current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            total: 3,
            per_ip: 2,
            unauthenticated: 2,
        }
    }

    #[test]
    fn each_bound_is_named_when_it_refuses() {
        let b = bounds();
        let c = |total, from_ip, unauthenticated| Counts {
            total,
            from_ip,
            unauthenticated,
        };
        assert_eq!(admit(c(0, 0, 0), &b), Ok(()));
        assert_eq!(admit(c(3, 0, 0), &b), Err(Refusal::MaxConnections));
        assert_eq!(admit(c(2, 2, 0), &b), Err(Refusal::PerIp));
        assert_eq!(admit(c(2, 1, 2), &b), Err(Refusal::Unauthenticated));
    }

    #[test]
    fn tickets_give_their_places_back() {
        let a = Admission::new(bounds());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t1 = a.enter(ip).unwrap();
        let _t2 = a.enter(ip).unwrap();
        assert_eq!(a.enter(ip).err(), Some(Refusal::PerIp));
        assert_eq!(a.enter(other).err(), Some(Refusal::Unauthenticated));
        t1.authenticated();
        t1.authenticated();
        let t3 = a.enter(other).unwrap();
        assert_eq!(a.open(), (3, 2));
        assert_eq!(a.enter(other).err(), Some(Refusal::MaxConnections));
        drop(t3);
        drop(t1);
        assert_eq!(a.open(), (1, 1));
        assert_eq!(a.refused(Refusal::PerIp), 1);
        assert_eq!(a.refused(Refusal::MaxConnections), 1);
    }
}
