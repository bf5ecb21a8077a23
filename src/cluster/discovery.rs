//! Multicast discovery beacons (in the manner of Openfire/Hazelcast multicast join).
//!
//! Bootstrap only: a beacon tells a fresh node where peers listen; it never changes
//! membership. Beacons can be replayed by anyone on the segment, so the caller must
//! treat a peer as a hint and confirm it over the authenticated cluster connection.
//!
//! Wire format: `b"CHB1"` ++ HMAC-SHA256(secret, magic ++ json) ++ json(Announcement).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 2, 2, 3);
pub const DEFAULT_PORT: u16 = 54327;
pub const DEFAULT_TTL: u32 = 1;
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const MAGIC: &[u8; 4] = b"CHB1";
const TAG_LEN: usize = 32;
/// Larger datagrams are rejected unread; a real beacon is a few hundred bytes.
pub const MAX_DATAGRAM: usize = 2048;
/// Bound on remembered peers, so a flood of signed beacons cannot grow memory.
pub const MAX_PEERS: usize = 1000;
/// A beacon stamped further than this from the receiver's clock, either way, is ignored:
/// a recorded beacon cannot be played back later (clocks of one LAN agree far better).
pub const MAX_BEACON_SKEW_MS: u64 = 60_000;
/// A bad signature is logged at most this often per sender address.
pub const BAD_SIGNATURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// Bound on the senders remembered for that rate limit.
const MAX_LOGGED_SENDERS: usize = 1000;

type HmacSha256 = Hmac<Sha256>;

pub struct DiscoveryConfig {
    pub group: Ipv4Addr,
    pub port: u16,
    /// Address of the interface to send and join on. Set it explicitly: without a
    /// multicast route, 0.0.0.0 makes sends fail (ENETUNREACH) and joins fail (ENODEV).
    pub interface: Ipv4Addr,
    pub ttl: u32,
    pub interval: Duration,
    pub cluster_name: String,
    pub secret: Vec<u8>,
    pub node_id: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            group: DEFAULT_GROUP,
            port: DEFAULT_PORT,
            interface: Ipv4Addr::UNSPECIFIED,
            ttl: DEFAULT_TTL,
            interval: DEFAULT_INTERVAL,
            cluster_name: String::new(),
            secret: Vec::new(),
            node_id: 0,
        }
    }
}

/// What a node says about itself; the module signs and sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub cluster_name: String,
    pub node_id: u64,
    pub cluster_addr: String,
    pub protocol: u16,
    pub cluster_id: Option<u64>,
    pub sent_at_ms: u64,
    pub nonce: u64,
}

impl Announcement {
    /// What the caller cares about: everything but the per-beacon fields.
    fn content(&self) -> Announcement {
        Announcement {
            sent_at_ms: 0,
            nonce: 0,
            ..self.clone()
        }
    }
}

#[derive(Clone, Debug)]
pub struct Peer {
    pub announcement: Announcement,
    pub from: SocketAddr,
    pub last_seen: Instant,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    pub sent: u64,
    pub accepted: u64,
    pub unsigned: u64,
    pub bad_signature: u64,
    pub other_cluster: u64,
    pub malformed: u64,
    /// Signed beacons ignored: stamped too far from this node's clock, or not newer
    /// than one already heard from that node (a replay).
    pub stale: u64,
    pub replayed: u64,
}

/// What to do with one datagram, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept(Announcement),
    /// Our own beacon, looped back: ignored without counting.
    Own,
    Unsigned,
    BadSignature,
    OtherCluster,
    Malformed(&'static str),
}

fn mac(secret: &[u8], json: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(MAGIC);
    mac.update(json);
    mac
}

/// Signs and frames an announcement as one datagram.
pub fn encode(ann: &Announcement, secret: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(ann).expect("an Announcement always serialises");
    let tag = mac(secret, &json).finalize().into_bytes();
    [MAGIC.as_slice(), tag.as_slice(), &json].concat()
}

/// Classifies one received datagram. Pure, so tests and logs can show the reason.
pub fn judge(dgram: &[u8], secret: &[u8], cluster_name: &str, own_id: u64) -> Verdict {
    if dgram.len() > MAX_DATAGRAM {
        return Verdict::Malformed("larger than MAX_DATAGRAM");
    }
    let Some(rest) = dgram.strip_prefix(MAGIC) else {
        // Bare JSON shaped like a beacon is a node sending without signing (old build or
        // a hand-made test), which an operator should tell apart from line noise.
        return match serde_json::from_slice::<Announcement>(dgram) {
            Ok(_) => Verdict::Unsigned,
            Err(_) => Verdict::Malformed("no magic"),
        };
    };
    if rest.len() < TAG_LEN {
        return Verdict::Malformed("shorter than magic and tag");
    }
    let (tag, json) = rest.split_at(TAG_LEN);
    let Ok(ann) = serde_json::from_slice::<Announcement>(json) else {
        return Verdict::Malformed("not an announcement");
    };
    // The name is read before the tag is checked so that a neighbouring cluster with
    // its own secret shows up as other_cluster, not as an attack (bad_signature).
    if ann.cluster_name != cluster_name {
        return Verdict::OtherCluster;
    }
    // verify_slice compares in constant time.
    if mac(secret, json).verify_slice(tag).is_err() {
        return Verdict::BadSignature;
    }
    if ann.protocol == 0 {
        return Verdict::Malformed("protocol 0");
    }
    if ann.node_id == own_id {
        return Verdict::Own;
    }
    Verdict::Accept(ann)
}

/// Whether a signed beacon is new: stamped within `MAX_BEACON_SKEW_MS` of `now_ms` and
/// later than the last one accepted from that node. `Err` says why not.
pub fn is_fresh(sent_at_ms: u64, now_ms: u64, last_ms: Option<u64>) -> Result<(), Stale> {
    if sent_at_ms.abs_diff(now_ms) > MAX_BEACON_SKEW_MS {
        return Err(Stale::Clock);
    }
    if last_ms.is_some_and(|last| sent_at_ms <= last) {
        return Err(Stale::Replayed);
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    Clock,
    Replayed,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Default)]
struct State {
    peers: HashMap<u64, Peer>,
    stats: DiscoveryStats,
    bad_signature_logged: HashMap<IpAddr, Instant>,
}

struct Shared {
    node_id: u64,
    cluster_name: String,
    secret: Vec<u8>,
    announce: Mutex<Option<Announcement>>,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
}

/// A poisoned lock only means a panic elsewhere; the data is still counters and a map.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn apply(&self, verdict: Verdict, from: SocketAddr) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        let ann = match verdict {
            Verdict::Accept(ann) => ann,
            Verdict::Own => return,
            Verdict::Unsigned => return st.stats.unsigned += 1,
            Verdict::OtherCluster => return st.stats.other_cluster += 1,
            Verdict::Malformed(reason) => {
                st.stats.malformed += 1;
                tracing::trace!(node_id = self.node_id, %from, reason, "malformed beacon");
                return;
            }
            Verdict::BadSignature => {
                st.stats.bad_signature += 1;
                if st.may_log_bad_signature(from.ip(), now) {
                    tracing::debug!(node_id = self.node_id, %from,
                        "beacon with a bad signature ignored: does the sender use another cluster secret?");
                }
                return;
            }
        };
        let last = st
            .peers
            .get(&ann.node_id)
            .map(|p| p.announcement.sent_at_ms);
        match is_fresh(ann.sent_at_ms, now_ms(), last) {
            Ok(()) => {}
            Err(Stale::Clock) => return st.stats.stale += 1,
            Err(Stale::Replayed) => return st.stats.replayed += 1,
        }
        st.stats.accepted += 1;
        let changed = match st.peers.get(&ann.node_id) {
            Some(p) => p.announcement.content() != ann.content(),
            None => {
                if st.peers.len() >= MAX_PEERS {
                    let oldest = st.peers.values().min_by_key(|p| p.last_seen);
                    if let Some(id) = oldest.map(|p| p.announcement.node_id) {
                        st.peers.remove(&id);
                    }
                }
                true
            }
        };
        let (id, last_seen) = (ann.node_id, now);
        st.peers.insert(
            id,
            Peer {
                announcement: ann,
                from,
                last_seen,
            },
        );
        drop(st);
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }
}

impl State {
    fn may_log_bad_signature(&mut self, ip: IpAddr, now: Instant) -> bool {
        let recent = |t: &Instant| now.duration_since(*t) < BAD_SIGNATURE_LOG_EVERY;
        if self.bad_signature_logged.get(&ip).is_some_and(recent) {
            return false;
        }
        if self.bad_signature_logged.len() >= MAX_LOGGED_SENDERS {
            self.bad_signature_logged.retain(|_, t| recent(t));
            if self.bad_signature_logged.len() >= MAX_LOGGED_SENDERS {
                return false; // a flood from many addresses stays silent until it ages out
            }
        }
        self.bad_signature_logged.insert(ip, now);
        true
    }
}

pub struct Discovery {
    shared: Arc<Shared>,
    tasks: [JoinHandle<()>; 2],
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

fn context(e: std::io::Error, what: String) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn open_socket(cfg: &DiscoveryConfig) -> std::io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Several nodes on one host (tests, chaos runs) share the port; for multicast the
    // kernel hands every datagram to each of them, not to one as it does for unicast.
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    let iface = cfg.interface;
    sock.set_multicast_if_v4(&iface)
        .map_err(|e| context(e, format!("IP_MULTICAST_IF {iface}")))?;
    sock.set_multicast_ttl_v4(cfg.ttl)?;
    // Loop stays on: other nodes on this host must hear us; our own copy is dropped by id.
    sock.set_multicast_loop_v4(true)?;
    sock.join_multicast_v4(&cfg.group, &iface).map_err(|e| {
        let what = format!("joining {} on interface {iface}; set the discovery interface to this node's cluster-network address", cfg.group);
        context(e, what)
    })?;
    // Bound to the group, not 0.0.0.0, so unicast to the port and other groups joined
    // on this host (Linux's IP_MULTICAST_ALL) never reach the receive loop.
    let bind = SocketAddrV4::new(cfg.group, cfg.port);
    sock.bind(&bind.into())
        .map_err(|e| context(e, format!("binding {bind}")))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

impl Discovery {
    /// Binds, joins the group and spawns the receive and send tasks; `announce` None
    /// listens only (a disabled cluster sends no beacons). Needs a tokio runtime.
    pub async fn start(
        cfg: DiscoveryConfig,
        announce: Option<Announcement>,
    ) -> std::io::Result<Discovery> {
        if !cfg.group.is_multicast() {
            return Err(invalid(format!(
                "discovery group {} is not a multicast address (224.0.0.0/4)",
                cfg.group
            )));
        }
        if cfg.secret.is_empty() {
            return Err(invalid("set a cluster secret: beacons are signed".into()));
        }
        if cfg.interval.is_zero() {
            return Err(invalid("discovery interval must be above zero".into()));
        }
        let sock = Arc::new(UdpSocket::from_std(open_socket(&cfg)?.into())?);
        let shared = Arc::new(Shared {
            node_id: cfg.node_id,
            cluster_name: cfg.cluster_name,
            secret: cfg.secret,
            announce: Mutex::new(announce),
            state: Mutex::default(),
            changes: watch::Sender::new(0),
        });
        let to = SocketAddr::from((cfg.group, cfg.port));
        let tasks = [
            tokio::spawn(receive_loop(sock.clone(), shared.clone())),
            tokio::spawn(send_loop(sock, shared.clone(), to, cfg.interval)),
        ];
        Ok(Discovery { shared, tasks })
    }

    /// Takes effect at the next beacon; `nonce` and `sent_at_ms` are filled per beacon.
    pub fn set_announcement(&self, announce: Option<Announcement>) {
        *lock(&self.shared.announce) = announce;
    }

    /// Peers heard within `max_age`, one per node id, ordered by node id.
    pub fn peers(&self, max_age: Duration) -> Vec<Peer> {
        let st = lock(&self.shared.state);
        let fresh = st
            .peers
            .values()
            .filter(|p| p.last_seen.elapsed() <= max_age);
        let mut out: Vec<Peer> = fresh.cloned().collect();
        out.sort_by_key(|p| p.announcement.node_id);
        out
    }

    pub fn stats(&self) -> DiscoveryStats {
        lock(&self.shared.state).stats.clone()
    }

    /// A counter bumped when a node id is first heard or its announcement changes
    /// (ignoring `nonce` and `sent_at_ms`, so repeated beacons do not wake anyone).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

async fn receive_loop(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    // One byte spare: a datagram that fills it was larger than MAX_DATAGRAM (truncated).
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let (secret, name) = (&shared.secret, &shared.cluster_name);
                shared.apply(judge(&buf[..n], secret, name, shared.node_id), from)
            }
            Err(e) => {
                tracing::debug!(node_id = shared.node_id, error = %e, "discovery receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await; // no busy loop on a persistent error
            }
        }
    }
}

async fn send_loop(sock: Arc<UdpSocket>, shared: Arc<Shared>, to: SocketAddr, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Warn once when sending starts failing and once when it recovers, not every second.
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(mut ann) = lock(&shared.announce).clone() else {
            continue;
        };
        ann.nonce = rand::random();
        ann.sent_at_ms = now_ms();
        let dgram = encode(&ann, &shared.secret);
        let result = if dgram.len() > MAX_DATAGRAM {
            Err(invalid(format!(
                "beacon is {} bytes, over {MAX_DATAGRAM}; shorten the cluster name or address",
                dgram.len()
            )))
        } else {
            sock.send_to(&dgram, to).await.map(|_| ())
        };
        match result {
            Ok(()) => {
                lock(&shared.state).stats.sent += 1;
                if std::mem::take(&mut failing) {
                    tracing::info!(node_id = shared.node_id, %to, "discovery beacons are being sent again");
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(node_id = shared.node_id, %to, error = %e, "discovery beacon not sent; check the discovery interface and a multicast route");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(50);
    const AGE: Duration = Duration::from_secs(2);

    /// An ephemeral port plus a unique name keeps parallel tests from hearing each other.
    fn fresh(test: &str) -> (u16, String) {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let name = format!("{test}-{}-{:x}", std::process::id(), rand::random::<u32>());
        (probe.local_addr().unwrap().port(), name)
    }

    fn ann(cluster_name: &str, node_id: u64, cluster_id: Option<u64>) -> Announcement {
        let (cluster_name, cluster_addr) =
            (cluster_name.into(), format!("127.0.0.1:{}", 7000 + node_id));
        Announcement {
            cluster_name,
            node_id,
            cluster_addr,
            protocol: 1,
            cluster_id,
            sent_at_ms: now_ms(),
            nonce: 0,
        }
    }

    /// A node on loopback; `announce` false listens only.
    async fn node(port: u16, name: &str, secret: &[u8], node_id: u64, announce: bool) -> Discovery {
        let (interface, interval, cluster_name, secret) =
            (Ipv4Addr::LOCALHOST, TICK, name.into(), secret.into());
        let cfg = DiscoveryConfig {
            port,
            interface,
            interval,
            cluster_name,
            secret,
            node_id,
            ..Default::default()
        };
        Discovery::start(cfg, announce.then(|| ann(name, node_id, None)))
            .await
            .unwrap()
    }

    fn ids(d: &Discovery, max_age: Duration) -> Vec<u64> {
        d.peers(max_age)
            .iter()
            .map(|p| p.announcement.node_id)
            .collect()
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn a_beacon_out_of_its_time_or_played_again_is_not_fresh() {
        let now = 1_000_000_000;
        assert_eq!(is_fresh(now, now, None), Ok(()));
        assert_eq!(is_fresh(now - 1000, now, Some(now - 2000)), Ok(()));
        assert_eq!(
            is_fresh(now - MAX_BEACON_SKEW_MS - 1, now, None),
            Err(Stale::Clock)
        );
        assert_eq!(
            is_fresh(now + MAX_BEACON_SKEW_MS + 1, now, None),
            Err(Stale::Clock)
        );
        assert_eq!(
            is_fresh(now - 1000, now, Some(now - 1000)),
            Err(Stale::Replayed)
        );
        assert_eq!(
            is_fresh(now - 2000, now, Some(now - 1000)),
            Err(Stale::Replayed)
        );
    }

    #[test]
    fn judge_gives_the_reason() {
        let a = ann("c", 1, Some(9));
        let d = encode(&a, b"k");
        assert_eq!(judge(&d, b"k", "c", 2), Verdict::Accept(a.clone()));
        assert_eq!(judge(&d, b"k", "c", 1), Verdict::Own);
        assert_eq!(judge(&d, b"other", "c", 2), Verdict::BadSignature);
        assert_eq!(judge(&d, b"other", "x", 2), Verdict::OtherCluster);
        let tampered = [d.as_slice(), b" "].concat(); // still valid JSON, but not what was signed
        assert_eq!(judge(&tampered, b"k", "c", 2), Verdict::BadSignature);
        let bare = serde_json::to_vec(&a).unwrap();
        assert_eq!(judge(&bare, b"k", "c", 2), Verdict::Unsigned);
        let zero = encode(&Announcement { protocol: 0, ..a }, b"k");
        assert_eq!(judge(&zero, b"k", "c", 2), Verdict::Malformed("protocol 0"));
    }

    #[test]
    fn bad_signature_log_is_rate_limited_per_sender() {
        let mut st = State::default();
        let (x, y, now) = (
            IpAddr::from([198, 18, 0, 1]),
            IpAddr::from([198, 18, 0, 2]),
            Instant::now(),
        );
        assert!(st.may_log_bad_signature(x, now));
        assert!(!st.may_log_bad_signature(x, now + Duration::from_secs(59)));
        assert!(st.may_log_bad_signature(y, now));
        assert!(st.may_log_bad_signature(x, now + BAD_SIGNATURE_LOG_EVERY));
    }

    #[test]
    fn peer_table_is_bounded_and_drops_the_oldest() {
        let (cluster_name, secret, announce) = ("c".into(), b"k".to_vec(), Mutex::new(None));
        let (state, changes) = (Mutex::default(), watch::Sender::new(0));
        let shared = Shared {
            node_id: 0,
            cluster_name,
            secret,
            announce,
            state,
            changes,
        };
        let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let last = MAX_PEERS as u64 + 1;
        for id in 1..=last {
            shared.apply(Verdict::Accept(ann("c", id, None)), from);
            if id == 1 {
                std::thread::sleep(Duration::from_millis(2)); // node 1 is strictly the oldest
            }
        }
        let st = lock(&shared.state);
        assert_eq!(st.peers.len(), MAX_PEERS);
        assert!(!st.peers.contains_key(&1) && st.peers.contains_key(&last));
        assert_eq!(*shared.changes.borrow(), last);
    }

    #[tokio::test]
    async fn two_nodes_see_each_other_but_not_themselves() {
        let (port, name) = fresh("two");
        let a = node(port, &name, b"s3cret", 1, true).await;
        let b = node(port, &name, b"s3cret", 2, true).await;
        eventually("a and b hear each other", || {
            ids(&a, AGE) == [2] && ids(&b, AGE) == [1]
        })
        .await;
        let heard = &b.peers(AGE)[0];
        assert_eq!(heard.announcement.cluster_addr, "127.0.0.1:7001");
        assert_eq!(heard.from.ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
        assert!(a.stats().sent > 0 && a.stats().accepted > 0);
    }

    #[tokio::test]
    async fn wrong_secret_and_other_cluster_are_counted_not_listed() {
        let (port, name) = fresh("auth");
        let a = node(port, &name, b"right", 1, true).await;
        let b = node(port, &name, b"right", 2, true).await;
        let intruder = node(port, &name, b"wrong", 3, true).await;
        let neighbour = node(port, &fresh("neighbour").1, b"theirs", 4, true).await;
        eventually("bad signatures and another cluster counted", || {
            let s = a.stats();
            s.bad_signature >= 2 && s.other_cluster >= 2 && ids(&a, AGE) == [2]
        })
        .await;
        assert_eq!((ids(&a, AGE), ids(&b, AGE)), (vec![2], vec![1]));
        assert!(ids(&intruder, AGE).is_empty() && ids(&neighbour, AGE).is_empty());
        assert!(intruder.stats().bad_signature > 0);
        // A neighbouring cluster with its own secret is not reported as an attack.
        assert_eq!(neighbour.stats().bad_signature, 0);
    }

    #[tokio::test]
    async fn junk_datagrams_are_counted_and_receiving_goes_on() {
        let (port, name) = fresh("junk");
        let listener = node(port, &name, b"k", 1, false).await;
        let raw = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        raw.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
        let to = SocketAddr::from((DEFAULT_GROUP, port)).into();
        let short = [MAGIC.as_slice(), &[0; 10]].concat();
        let not_json = [MAGIC.as_slice(), &[7; 40]].concat();
        let unsigned = serde_json::to_vec(&ann(&name, 5, None)).unwrap();
        for junk in [
            b"garbage".to_vec(),
            vec![b'x'; 3000],
            short,
            not_json,
            unsigned,
        ] {
            raw.send_to(&junk, &to).unwrap();
        }
        let want = DiscoveryStats {
            malformed: 4,
            unsigned: 1,
            ..Default::default()
        };
        eventually("junk counted", || listener.stats() == want).await;
        let _peer = node(port, &name, b"k", 2, true).await;
        eventually("a real beacon still accepted", || {
            ids(&listener, AGE) == [2]
        })
        .await;
        assert_eq!((listener.stats().malformed, listener.stats().sent), (4, 0));
    }

    #[tokio::test]
    async fn announcing_stops_and_resumes() {
        let (port, name) = fresh("pause");
        let a = node(port, &name, b"k", 1, true).await;
        let b = node(port, &name, b"k", 2, false).await;
        let short = TICK * 6;
        eventually("b hears a", || ids(&b, short) == [1]).await;
        a.set_announcement(None);
        eventually("a ages out", || ids(&b, short).is_empty()).await;
        let sent = a.stats().sent;
        tokio::time::sleep(TICK * 4).await;
        assert_eq!(
            a.stats().sent,
            sent,
            "no beacons while the announcement is None"
        );
        a.set_announcement(Some(ann(&name, 1, None)));
        eventually("a heard again", || ids(&b, short) == [1]).await;
    }

    #[tokio::test]
    async fn cluster_id_change_reaches_listeners() {
        let (port, name) = fresh("cid");
        let a = node(port, &name, b"k", 1, true).await;
        let b = node(port, &name, b"k", 2, false).await;
        let mut changes = b.changes();
        let cluster_id = |b: &Discovery| b.peers(AGE).first().map(|p| p.announcement.cluster_id);
        eventually("b hears fresh a", || cluster_id(&b) == Some(None)).await;
        changes.borrow_and_update();
        tokio::time::sleep(TICK * 4).await;
        assert!(
            !changes.has_changed().unwrap(),
            "repeated beacons are not changes"
        );
        a.set_announcement(Some(ann(&name, 1, Some(42))));
        let changed = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
        assert!(matches!(changed, Ok(Ok(()))), "no change notified");
        assert_eq!(cluster_id(&b), Some(Some(42)));
    }
}
