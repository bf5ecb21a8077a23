//! Settings: every limit and address of a node, with its default in one place.
//!
//! Settings come, lowest precedence first, from the defaults below, a TOML file
//! (`--config`), `CHORUS_*` environment variables, and command-line flags. All
//! layers are merged as TOML tables and checked against the defaults' keys and
//! types, so an unknown key or a value of the wrong type stops start-up with one
//! line that names it. `docs/configuration.md` lists every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A shorter cluster secret could be guessed from one recorded handshake.
pub const MIN_SECRET_BYTES: usize = 16;

/// Fewer PBKDF2 iterations than this make stored SCRAM keys too cheap to attack.
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// New SCRAM keys are made with this many PBKDF2 iterations unless
/// `auth.scram_iterations` says otherwise (its cost: docs/benchmarks.md).
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The XMPP domain this node serves.
    pub domain: String,
    /// Where the node keeps its id, admin token, certificate and Raft store.
    pub data_dir: PathBuf,
    pub c2s: C2sSettings,
    pub tls: TlsSettings,
    pub http: HttpSettings,
    pub cluster: ClusterSettings,
    pub auth: AuthSettings,
    pub registration: RegistrationSettings,
    pub limits: UserLimits,
    pub rate: RateSettings,
    pub log: LogSettings,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct C2sSettings {
    /// Client connections with STARTTLS (RFC 6120).
    pub listen: String,
    /// Client connections with direct TLS (XEP-0368).
    pub tls_listen: String,
    /// Allow SASL PLAIN and authentication before TLS (benchmarks only).
    pub allow_plaintext_auth: bool,
    /// Largest stanza accepted, in bytes; larger ones end the stream with policy-violation.
    pub max_stanza_bytes: u64,
    /// Largest stanza accepted before authentication: unauthenticated peers get less.
    pub max_stanza_bytes_before_auth: u64,
    /// Deepest element nesting accepted inside a stanza.
    pub max_depth: u64,
    /// Most attributes accepted on one element.
    pub max_attrs: u64,
    /// Seconds a connection may take from connect to bound resource.
    pub auth_timeout_secs: u64,
    /// Seconds without any traffic after which the server pings the client (XEP-0199).
    pub ping_interval_secs: u64,
    /// Seconds without any traffic after which the stream is closed.
    pub idle_timeout_secs: u64,
    /// Stanzas waiting to be written to one client; a client that lets more pile up is disconnected.
    pub outbound_queue: u64,
    /// Bytes waiting to be written to one client; a client that lets more pile up is disconnected.
    pub outbound_queue_bytes: u64,
    /// Seconds a write to a client may make no progress before the connection is closed.
    pub write_timeout_secs: u64,
    /// Client connections this node holds at once; 0: as many as the open-file limit
    /// allows, less 512 kept for storage and the cluster (a larger figure is capped so).
    pub max_connections: u64,
    /// Client connections from one IP address.
    pub max_connections_per_ip: u64,
    /// Client connections that have not authenticated yet.
    pub max_unauthenticated: u64,
    /// Seconds of silence before the kernel probes a client socket (TCP keep-alive); 0: off.
    pub tcp_keepalive_secs: u64,
    /// Failed SASL attempts allowed on one connection before it is closed.
    pub max_auth_failures: u64,
    /// Requests of one stream being worked on at once (iqs answered after a Raft write,
    /// subscription changes); beyond, an iq gets `<resource-constraint/>`.
    pub max_pending_requests: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain; empty: a self-signed one made on first start in DATA_DIR/tls.
    pub cert: String,
    /// PEM private key for `cert`.
    pub key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Admin API (`/api/v1/...`) and metrics.
    pub listen: String,
    /// Seconds a connection may take to send a request's headers; then it is closed.
    pub header_read_timeout_secs: u64,
    /// HTTP connections open at once; more wait in the kernel's backlog.
    pub max_connections: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Raft RPC between nodes.
    pub listen: String,
    /// Build a Raft snapshot after this many log entries since the last one.
    pub snapshot_threshold: u64,
    /// Log entries kept behind a snapshot before they are purged.
    pub logs_to_keep: u64,
    /// Most commands packed into one Raft log entry.
    pub max_batch: u64,
    /// Raft heartbeat interval, milliseconds.
    pub heartbeat_ms: u64,
    /// Raft election timeout range, milliseconds.
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Nodes join only a cluster of the same name (and secret).
    pub name: String,
    /// Shared secret every cluster connection and beacon must prove. Empty: a random one
    /// made on first start and kept in DATA_DIR/cluster.secret (such a node can form a
    /// cluster of its own only).
    pub secret: String,
    /// Members or would-be members to contact at start-up, comma-separated HOST:PORT
    /// cluster addresses (for networks without multicast).
    pub seeds: String,
    /// Fresh nodes wait until this many (themselves included) have found each other, then
    /// exactly one of them forms a cluster of all of them.
    pub bootstrap_expect: u64,
    /// Voting members the leader keeps (promoting learners); further members are
    /// non-voting learners that still serve clients.
    pub voters: u64,
    pub startup: StartupSettings,
    pub task: TaskSettings,
    pub failure: FailureSettings,
    pub multicast: MulticastSettings,
    pub tls: ClusterTlsSettings,
    /// Inbound cluster connections from one address that may be in their handshake at once.
    pub max_pending_per_address: u64,
    /// Milliseconds a new inbound cluster connection has to finish TLS and prove the secret.
    pub handshake_timeout_ms: u64,
    /// Messages waiting to be written on one peer link (all the node's traffic to that
    /// peer); beyond, or beyond 64 MiB of them, a message is refused.
    pub link_queue: u64,
    /// Bytes of rosters read lately kept in memory for the next read (0: none).
    pub data_cache_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTlsSettings {
    /// TLS 1.3 on every cluster connection; peers are authenticated by the secret, bound
    /// to the TLS session. Off: cluster traffic is in clear (trusted networks only).
    pub enabled: bool,
    /// Operator certificates for mutual TLS: this node's PEM chain and key, and the CA
    /// every peer's certificate must chain to. All three, or none (a certificate is made
    /// for the process).
    pub cert: String,
    pub key: String,
    pub ca: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StartupSettings {
    /// Seconds a fresh node listens for peers before it forms or joins a cluster.
    pub delay: u64,
    pub retry: RetrySettings,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// How many times a failed first join is retried before start-up fails.
    pub count: u64,
    /// Seconds between join attempts.
    pub seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSettings {
    /// Seconds a request run on other members (join, status, remove) may take.
    pub timeout: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FailureSettings {
    /// Seconds without an answer after which the leader declares a member down, and a
    /// node without contact to a leader declares itself cut off.
    pub timeout: u64,
    /// Declare a member down at once when its host refuses connections to its cluster
    /// port (its process is gone); a pause or a partition still waits `timeout`.
    pub fast_when_refused: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MulticastSettings {
    /// Announce and discover peers with UDP multicast beacons (bootstrap only).
    pub enabled: bool,
    pub group: String,
    pub port: u64,
    /// Address of the interface beacons are sent and heard on; empty: the IP of
    /// cluster.listen.
    pub interface: String,
    pub ttl: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// PBKDF2 iterations for new SCRAM keys (at least 4096).
    pub scram_iterations: u64,
    /// Threads that run password hashing (PLAIN checks, new passwords); 0: one less than
    /// the CPUs (at least one), so a login flood always leaves a CPU to the rest.
    pub hash_threads: u64,
    /// Hashing jobs that may wait for a thread; beyond, logins get temporary-auth-failure.
    pub hash_queue: u64,
    /// A password change ends the account's other streams (every node, `<not-authorized/>`).
    pub password_change_ends_sessions: bool,
}

/// Token-bucket rate limits (0: no limit). Per minute for attempts, per second for traffic.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateSettings {
    /// Failed SASL attempts from one IP address a minute (and saved up at most).
    pub sasl_failures_per_ip_per_minute: u64,
    /// Failed SASL attempts for one account a minute.
    pub sasl_failures_per_account_per_minute: u64,
    /// In-band registrations (XEP-0077) from one IP address a minute.
    pub registrations_per_ip_per_minute: u64,
    /// In-band password changes of one account a minute.
    pub password_changes_per_account_per_minute: u64,
    /// Stanzas one session may send a second; over it, reading pauses.
    pub session_stanzas_per_second: u64,
    pub session_stanza_burst: u64,
    /// Bytes one session may send a second; over it, reading pauses.
    pub session_bytes_per_second: u64,
    pub session_byte_burst: u64,
    /// IP addresses and accounts each table above remembers at most.
    pub tracked_keys: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSettings {
    /// XEP-0077 in-band registration of new accounts by anyone who connects.
    pub open: bool,
}

/// Per-account bounds on what an account keeps on the server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UserLimits {
    /// Contacts in one roster.
    pub roster_items: u64,
    /// Bytes of one roster item (name and groups).
    pub roster_item_bytes: u64,
    /// Messages kept for an account while it is offline (XEP-0160).
    pub offline_messages: u64,
    /// Bytes of the messages kept for an account while it is offline.
    pub offline_bytes: u64,
    /// Bytes of one vCard (XEP-0054).
    pub vcard_bytes: u64,
    /// Bytes of one private XML storage item (XEP-0049).
    pub private_bytes: u64,
    /// JIDs on one block list (XEP-0191).
    pub blocked_jids: u64,
    /// Elements in one account's private XML storage (XEP-0049).
    pub private_items: u64,
    /// Subscription requests waiting for one account's answer (RFC 6121 3.1.3).
    pub pending_subscriptions: u64,
    /// JIDs one stream has sent directed presence to (RFC 6121 4.6).
    pub directed_presences: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// tracing filter, e.g. "info" or "chorus=debug,openraft=warn".
    pub filter: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            c2s: C2sSettings::default(),
            tls: TlsSettings::default(),
            http: HttpSettings::default(),
            cluster: ClusterSettings::default(),
            auth: AuthSettings::default(),
            registration: RegistrationSettings::default(),
            limits: UserLimits::default(),
            rate: RateSettings::default(),
            log: LogSettings::default(),
        }
    }
}

impl Default for C2sSettings {
    fn default() -> Self {
        C2sSettings {
            listen: "127.0.0.1:5222".into(),
            tls_listen: "127.0.0.1:5223".into(),
            allow_plaintext_auth: false,
            max_stanza_bytes: 256 * 1024,
            max_stanza_bytes_before_auth: 16 * 1024,
            max_depth: 32,
            max_attrs: 64,
            auth_timeout_secs: 30,
            ping_interval_secs: 120,
            idle_timeout_secs: 300,
            outbound_queue: 8192,
            outbound_queue_bytes: 2 * 1024 * 1024,
            write_timeout_secs: 30,
            max_connections: 0,
            max_connections_per_ip: 5000,
            max_unauthenticated: 5000,
            tcp_keepalive_secs: 60,
            max_auth_failures: 3,
            max_pending_requests: 128,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:5280".into(),
            header_read_timeout_secs: 10,
            max_connections: 256,
        }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            listen: "127.0.0.1:7070".into(),
            snapshot_threshold: 5000,
            logs_to_keep: 1000,
            max_batch: 1024,
            heartbeat_ms: 250,
            election_min_ms: 1000,
            election_max_ms: 2000,
            name: "chorus".into(),
            secret: String::new(),
            seeds: String::new(),
            bootstrap_expect: 1,
            voters: 5,
            startup: StartupSettings {
                delay: 5,
                retry: RetrySettings {
                    count: 1,
                    seconds: 10,
                },
            },
            task: TaskSettings { timeout: 30 },
            failure: FailureSettings {
                timeout: 5,
                fast_when_refused: true,
            },
            multicast: MulticastSettings {
                enabled: true,
                group: "224.2.2.3".into(),
                port: 54327,
                interface: String::new(),
                ttl: 1,
            },
            tls: ClusterTlsSettings {
                enabled: true,
                cert: String::new(),
                key: String::new(),
                ca: String::new(),
            },
            max_pending_per_address: 16,
            handshake_timeout_ms: 3000,
            link_queue: 262_144,
            data_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for StartupSettings {
    fn default() -> Self {
        ClusterSettings::default().startup
    }
}
impl Default for RetrySettings {
    fn default() -> Self {
        ClusterSettings::default().startup.retry
    }
}
impl Default for TaskSettings {
    fn default() -> Self {
        ClusterSettings::default().task
    }
}
impl Default for FailureSettings {
    fn default() -> Self {
        ClusterSettings::default().failure
    }
}
impl Default for MulticastSettings {
    fn default() -> Self {
        ClusterSettings::default().multicast
    }
}
impl Default for ClusterTlsSettings {
    fn default() -> Self {
        ClusterSettings::default().tls
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            scram_iterations: DEFAULT_SCRAM_ITERATIONS as u64,
            hash_threads: 0,
            hash_queue: 64,
            password_change_ends_sessions: true,
        }
    }
}

impl Default for RateSettings {
    fn default() -> Self {
        RateSettings {
            sasl_failures_per_ip_per_minute: 30,
            sasl_failures_per_account_per_minute: 10,
            registrations_per_ip_per_minute: 3,
            password_changes_per_account_per_minute: 3,
            session_stanzas_per_second: 200,
            session_stanza_burst: 1000,
            session_bytes_per_second: 256 * 1024,
            session_byte_burst: 1024 * 1024,
            tracked_keys: 100_000,
        }
    }
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            roster_items: 5000,
            roster_item_bytes: 4096,
            offline_messages: 10_000,
            offline_bytes: 32 * 1024 * 1024,
            vcard_bytes: 64 * 1024,
            private_bytes: 64 * 1024,
            blocked_jids: 5000,
            private_items: 100,
            pending_subscriptions: 1000,
            directed_presences: 1000,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            filter: "info,openraft=warn".into(),
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("unknown setting `{key}` (from {origin}); see docs/configuration.md for the list")]
    UnknownKey { key: String, origin: String },
    #[error("setting `{key}` (from {origin}) must be {expected}, got {got}")]
    BadType {
        key: String,
        origin: String,
        expected: &'static str,
        got: String,
    },
    #[error("setting `{key}`: {message}")]
    BadValue { key: String, message: String },
    #[error("cannot read config file {path}: {message}")]
    File { path: String, message: String },
}

/// One layer of settings given as dotted keys with raw string values (env, flags).
pub type Overrides = Vec<(String, String, String)>; // (key, value, source)

/// The addresses and limits of a validated `Settings`, parsed once.
#[derive(Clone, Debug)]
pub struct Addresses {
    pub c2s: SocketAddr,
    pub c2s_tls: SocketAddr,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
}

impl Settings {
    /// Merge the layers and check every key and value.
    pub fn load(
        file: Option<&str>,
        env: &Overrides,
        flags: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let defaults = default_table();
        let mut merged = defaults.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.into(),
                message: e.to_string(),
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.into(),
                        message: e.message().to_string(),
                    })?;
            merge_file(&defaults, &mut merged, &table, "", &format!("file {path}"))?;
        }
        for (key, value, source) in env.iter().chain(flags.iter()) {
            set_dotted(&defaults, &mut merged, key, value, source)?;
        }
        let settings: Settings =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::BadValue {
                    key: "?".into(),
                    message: e.message().to_string(),
                })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every dotted key with its default, in file order (for docs and env lookup).
    pub fn keys() -> Vec<String> {
        let mut out = Vec::new();
        collect_keys(&default_table(), "", &mut out);
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.addresses()?;
        if jid::BareJid::new(&self.domain)
            .map(|j| j.node().is_some())
            .unwrap_or(true)
        {
            return Err(ConfigError::BadValue {
                key: "domain".into(),
                message: format!("`{}` is not a valid XMPP domain", self.domain),
            });
        }
        if self.auth.scram_iterations < MIN_SCRAM_ITERATIONS as u64
            || self.auth.scram_iterations > u32::MAX as u64
        {
            return Err(ConfigError::BadValue {
                key: "auth.scram_iterations".into(),
                message: format!("must be at least {MIN_SCRAM_ITERATIONS}"),
            });
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return Err(ConfigError::BadValue {
                key: "tls.cert".into(),
                message: "tls.cert and tls.key must be given together".into(),
            });
        }
        let positive = [
            ("c2s.max_stanza_bytes", self.c2s.max_stanza_bytes),
            (
                "c2s.max_stanza_bytes_before_auth",
                self.c2s.max_stanza_bytes_before_auth,
            ),
            ("c2s.max_depth", self.c2s.max_depth),
            ("c2s.max_attrs", self.c2s.max_attrs),
            ("c2s.auth_timeout_secs", self.c2s.auth_timeout_secs),
            ("c2s.ping_interval_secs", self.c2s.ping_interval_secs),
            ("c2s.idle_timeout_secs", self.c2s.idle_timeout_secs),
            ("c2s.outbound_queue", self.c2s.outbound_queue),
            ("c2s.outbound_queue_bytes", self.c2s.outbound_queue_bytes),
            ("c2s.write_timeout_secs", self.c2s.write_timeout_secs),
            (
                "c2s.max_connections_per_ip",
                self.c2s.max_connections_per_ip,
            ),
            ("c2s.max_unauthenticated", self.c2s.max_unauthenticated),
            (
                "cluster.snapshot_threshold",
                self.cluster.snapshot_threshold,
            ),
            ("cluster.max_batch", self.cluster.max_batch),
            ("cluster.heartbeat_ms", self.cluster.heartbeat_ms),
            ("cluster.bootstrap_expect", self.cluster.bootstrap_expect),
            ("cluster.voters", self.cluster.voters),
            ("cluster.task.timeout", self.cluster.task.timeout),
            ("cluster.failure.timeout", self.cluster.failure.timeout),
            ("cluster.multicast.port", self.cluster.multicast.port),
            ("limits.roster_items", self.limits.roster_items),
            ("limits.roster_item_bytes", self.limits.roster_item_bytes),
            ("limits.offline_messages", self.limits.offline_messages),
            ("limits.offline_bytes", self.limits.offline_bytes),
            ("auth.hash_queue", self.auth.hash_queue),
            ("c2s.max_pending_requests", self.c2s.max_pending_requests),
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            ("http.max_connections", self.http.max_connections),
            (
                "cluster.max_pending_per_address",
                self.cluster.max_pending_per_address,
            ),
            (
                "cluster.handshake_timeout_ms",
                self.cluster.handshake_timeout_ms,
            ),
            ("cluster.link_queue", self.cluster.link_queue),
            ("rate.tracked_keys", self.rate.tracked_keys),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::BadValue {
                    key: key.into(),
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.cluster.election_min_ms <= self.cluster.heartbeat_ms
            || self.cluster.election_max_ms <= self.cluster.election_min_ms
        {
            return Err(ConfigError::BadValue {
                key: "cluster.election_min_ms".into(),
                message: "need heartbeat_ms < election_min_ms < election_max_ms".into(),
            });
        }
        if self.cluster.failure.timeout * 1000 < 2 * self.cluster.election_max_ms {
            return Err(ConfigError::BadValue {
                key: "cluster.failure.timeout".into(),
                message: format!(
                    "must be at least twice cluster.election_max_ms ({} ms): a leader election \
                     must not look like a failure",
                    self.cluster.election_max_ms
                ),
            });
        }
        if self.cluster.multicast.port > u16::MAX as u64 {
            return Err(ConfigError::BadValue {
                key: "cluster.multicast.port".into(),
                message: "must be at most 65535".into(),
            });
        }
        match self.cluster.multicast.group.parse::<std::net::Ipv4Addr>() {
            Ok(ip) if ip.is_multicast() => {}
            _ => {
                return Err(ConfigError::BadValue {
                    key: "cluster.multicast.group".into(),
                    message: format!(
                        "`{}` is not an IPv4 multicast address (224.0.0.0/4)",
                        self.cluster.multicast.group
                    ),
                })
            }
        }
        if !self.cluster.multicast.interface.is_empty()
            && self
                .cluster
                .multicast
                .interface
                .parse::<std::net::Ipv4Addr>()
                .is_err()
        {
            return Err(ConfigError::BadValue {
                key: "cluster.multicast.interface".into(),
                message: "must be an IPv4 address".into(),
            });
        }
        if !self.cluster.secret.is_empty() && self.cluster.secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::BadValue {
                key: "cluster.secret".into(),
                message: format!(
                    "is {} bytes; give at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 16`), or leave \
                     it empty for a random one",
                    self.cluster.secret.len()
                ),
            });
        }
        let t = &self.cluster.tls;
        let given = [&t.cert, &t.key, &t.ca]
            .iter()
            .filter(|v| !v.is_empty())
            .count();
        if given != 0 && given != 3 {
            return Err(ConfigError::BadValue {
                key: "cluster.tls.ca".into(),
                message: "cluster.tls.cert, cluster.tls.key and cluster.tls.ca go together".into(),
            });
        }
        if self.cluster.name.is_empty() {
            return Err(ConfigError::BadValue {
                key: "cluster.name".into(),
                message: "must not be empty".into(),
            });
        }
        if !(1..=255).contains(&self.cluster.multicast.ttl) {
            return Err(ConfigError::BadValue {
                key: "cluster.multicast.ttl".into(),
                message: "must be between 1 and 255".into(),
            });
        }
        if let Ok(addr) = self.cluster.listen.parse::<SocketAddr>() {
            if addr.ip().is_unspecified() {
                return Err(ConfigError::BadValue {
                    key: "cluster.listen".into(),
                    message: format!(
                        "`{}` is not an address other nodes can reach: the node announces \
                         this address to its peers; give the IP of an interface",
                        self.cluster.listen
                    ),
                });
            }
        }
        for seed in self.seeds() {
            let valid = seed.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
            });
            if !valid {
                return Err(ConfigError::BadValue {
                    key: "cluster.seeds".into(),
                    message: format!("`{seed}` is not a HOST:PORT address"),
                });
            }
        }
        Ok(())
    }

    /// `cluster.seeds` as a list.
    pub fn seeds(&self) -> Vec<String> {
        self.cluster
            .seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn addresses(&self) -> Result<Addresses, ConfigError> {
        let parse = |key: &str, value: &str| -> Result<SocketAddr, ConfigError> {
            value.parse().map_err(|_| ConfigError::BadValue {
                key: key.into(),
                message: format!("`{value}` is not an IP:PORT address"),
            })
        };
        Ok(Addresses {
            c2s: parse("c2s.listen", &self.c2s.listen)?,
            c2s_tls: parse("c2s.tls_listen", &self.c2s.tls_listen)?,
            http: parse("http.listen", &self.http.listen)?,
            cluster: parse("cluster.listen", &self.cluster.listen)?,
        })
    }
}

/// `CHORUS_C2S_ALLOW_PLAINTEXT_AUTH` for `c2s.allow_plaintext_auth`.
pub fn env_name(key: &str) -> String {
    format!("CHORUS_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The environment layer: every known key's `CHORUS_*` variable that is set.
pub fn env_overrides(vars: impl Iterator<Item = (String, String)>) -> Overrides {
    let vars: BTreeMap<String, String> = vars.collect();
    Settings::keys()
        .into_iter()
        .filter_map(|key| {
            let name = env_name(&key);
            vars.get(&name)
                .map(|v| (key, v.clone(), format!("environment {name}")))
        })
        .collect()
}

fn default_table() -> toml::Table {
    match toml::Value::try_from(Settings::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => unreachable!("Settings serializes to a table"),
    }
}

fn collect_keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => collect_keys(t, &key, out),
            _ => out.push(key),
        }
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "a non-negative integer",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

fn merge_file(
    defaults: &toml::Table,
    merged: &mut toml::Table,
    file: &toml::Table,
    prefix: &str,
    source: &str,
) -> Result<(), ConfigError> {
    for (k, v) in file {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(default) = defaults.get(k) else {
            return Err(ConfigError::UnknownKey {
                key,
                origin: source.into(),
            });
        };
        match (default, v) {
            (toml::Value::Table(d), toml::Value::Table(f)) => {
                let Some(toml::Value::Table(m)) = merged.get_mut(k) else {
                    unreachable!()
                };
                merge_file(d, m, f, &key, source)?;
            }
            (toml::Value::Integer(_), toml::Value::Integer(i)) if *i < 0 => {
                return Err(ConfigError::BadType {
                    key,
                    origin: source.into(),
                    expected: type_name(default),
                    got: i.to_string(),
                })
            }
            (d, f) if std::mem::discriminant(d) == std::mem::discriminant(f) => {
                merged.insert(k.clone(), f.clone());
            }
            (d, f) => {
                return Err(ConfigError::BadType {
                    key,
                    origin: source.into(),
                    expected: type_name(d),
                    got: f.to_string(),
                })
            }
        }
    }
    Ok(())
}

fn set_dotted(
    defaults: &toml::Table,
    merged: &mut toml::Table,
    key: &str,
    raw: &str,
    source: &str,
) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        key: key.into(),
        origin: source.into(),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or_else(unknown)?;
    let (mut d, mut m) = (defaults, merged);
    for part in parts {
        match (d.get(part), m.get_mut(part)) {
            (Some(toml::Value::Table(dt)), Some(toml::Value::Table(mt))) => {
                d = dt;
                m = mt;
            }
            _ => return Err(unknown()),
        }
    }
    let default = d.get(last).ok_or_else(unknown)?;
    let bad = || ConfigError::BadType {
        key: key.into(),
        origin: source.into(),
        expected: type_name(default),
        got: format!("`{raw}`"),
    };
    let value = match default {
        toml::Value::String(_) => toml::Value::String(raw.into()),
        toml::Value::Integer(_) => match raw.trim().parse::<i64>() {
            Ok(i) if i >= 0 => toml::Value::Integer(i),
            _ => return Err(bad()),
        },
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => return Err(bad()),
        },
        _ => return Err(unknown()),
    };
    m.insert(last.into(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(key: &str, value: &str) -> (String, String, String) {
        (key.into(), value.into(), format!("flag --{key}"))
    }

    #[test]
    fn defaults_are_the_zero_config_node() {
        let s = Settings::load(None, &vec![], &vec![]).unwrap();
        assert_eq!(s, Settings::default());
        let a = s.addresses().unwrap();
        assert_eq!(a.c2s.to_string(), "127.0.0.1:5222");
        assert_eq!(a.http.to_string(), "127.0.0.1:5280");
        assert_eq!(a.cluster.to_string(), "127.0.0.1:7070");
    }

    #[test]
    fn flags_override_env_which_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.toml");
        std::fs::write(
            &path,
            "domain = \"file.example\"\n[c2s]\nmax_depth = 10\nmax_attrs = 5\n",
        )
        .unwrap();
        let env = env_overrides(
            [
                ("CHORUS_C2S_MAX_DEPTH".to_string(), "20".to_string()),
                ("HOME".into(), "/x".into()),
            ]
            .into_iter(),
        );
        let flags = vec![flag("domain", "flag.example")];
        let s = Settings::load(Some(path.to_str().unwrap()), &env, &flags).unwrap();
        assert_eq!(s.domain, "flag.example");
        assert_eq!(s.c2s.max_depth, 20);
        assert_eq!(s.c2s.max_attrs, 5);
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.toml");
        std::fs::write(&path, "[c2s]\nmax_deepness = 10\n").unwrap();
        let err = Settings::load(Some(path.to_str().unwrap()), &vec![], &vec![]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { key, .. } if key == "c2s.max_deepness"),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn bad_values_are_named() {
        let err = Settings::load(None, &vec![], &vec![flag("c2s.max_depth", "deep")]).unwrap_err();
        assert!(err.to_string().contains("c2s.max_depth"), "{err}");
        let err = Settings::load(None, &vec![], &vec![flag("c2s.listen", "nowhere")]).unwrap_err();
        assert!(err.to_string().contains("c2s.listen"), "{err}");
        let err =
            Settings::load(None, &vec![], &vec![flag("auth.scram_iterations", "100")]).unwrap_err();
        assert!(err.to_string().contains("auth.scram_iterations"), "{err}");
        let err = Settings::load(None, &vec![], &vec![flag("domain", "a@b")]).unwrap_err();
        assert!(err.to_string().contains("domain"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chorus.toml");
        std::fs::write(&path, "[c2s]\nallow_plaintext_auth = \"yes\"\n").unwrap();
        let err = Settings::load(Some(path.to_str().unwrap()), &vec![], &vec![]).unwrap_err();
        assert!(
            err.to_string().contains("c2s.allow_plaintext_auth"),
            "{err}"
        );
    }

    #[test]
    fn every_key_has_an_env_name() {
        assert!(Settings::keys().contains(&"c2s.allow_plaintext_auth".to_string()));
        assert_eq!(
            env_name("c2s.allow_plaintext_auth"),
            "CHORUS_C2S_ALLOW_PLAINTEXT_AUTH"
        );
    }

    #[test]
    fn cluster_settings_are_checked() {
        let bad = |key: &str, value: &str| {
            let err = Settings::load(None, &vec![], &vec![flag(key, value)]).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        };
        bad("cluster.seeds", "10.0.0.1");
        bad("cluster.seeds", ":7070");
        bad("cluster.seeds", "10.0.0.1:0");
        bad("cluster.listen", "0.0.0.0:7070");
        bad("cluster.multicast.group", "10.0.0.1");
        bad("cluster.multicast.ttl", "0");
        bad("cluster.failure.timeout", "1");
        bad("cluster.name", "");
        bad("cluster.secret", "short");
        let ok = Settings::load(
            None,
            &vec![],
            &vec![flag("cluster.seeds", "10.0.0.1:7070, node2:7070")],
        )
        .unwrap();
        assert_eq!(ok.seeds(), vec!["10.0.0.1:7070", "node2:7070"]);
    }
}
