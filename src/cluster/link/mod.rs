//! Peer links: one connection per pair of nodes, carrying stanzas and resource state
//! both ways, never through the Raft log.
//!
//! The node with the smaller id dials (over the authenticated cluster channel), the other
//! waits for it, so a pair never holds two connections. Each peer has a bounded queue; a
//! message for a peer whose link is down, or whose budget is spent, is refused at once so
//! that the caller can fall back (a message goes to offline storage instead). Order is
//! kept per pair: one queue, one connection, one reader.
//!
//! A stanza, once a link took it, is not lost with a connection or with its peer
//! (docs/clustering.md, "Peer links keep what they took"): the sender numbers it and keeps it until the
//! receiver acknowledges that number. A new connection starts with a hello each way that
//! says which process run the sender is and the last number it took from the other, so
//! the other sends again only what was not taken. What a peer never acknowledged goes back
//! to the router to be routed anew (offline storage, or another resource) when the
//! replicated state says the peer is down and its connection has gone quiet, or when it
//! comes back as a new process that cannot have it. A receiver that is
//! cut off from the majority, or whose connection went silent for half the failure timeout
//! (it was paused, or partitioned), drops the connection instead of delivering what it
//! reads: by then the sender may have given those stanzas back.

mod state;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chorus_raft::network::frame::{append_frame, read_frame, write_frame, write_frames};
use chorus_raft::network::ClusterStream;
use chorus_raft::network::{Channel, LinkStream};
use chorus_raft::{NodeId, RaftNode, StateEvent};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Notify};

use super::protocol::{decode, encode, LinkFrame, PeerMessage};
use super::resources::Resources;
pub use state::Outgoing;
use state::{Hello, LinkState};

/// Largest peer-link frame: a stanza is capped far below this by c2s limits.
const MAX_LINK_FRAME: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bytes queued or unacknowledged for one peer at most: with stanzas of up to
/// `c2s.max_stanza_bytes`, a count alone would let a stalled peer pin gigabytes.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// Frames already queued are written together up to this many bytes.
const BATCH_BYTES: usize = 64 * 1024;
/// How often the set of links is checked against the membership.
const MEMBERSHIP_CHECK: Duration = Duration::from_millis(500);

/// Where the links report to (the router).
pub type Inbound = actix::Recipient<LinkEvent>;
/// Whether this node may take stanzas now: in contact with the majority.
pub type Gate = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub enum LinkEvent {
    /// A message from a peer.
    Received { from: NodeId, msg: PeerMessage },
    /// Messages a peer never acknowledged and now never will (it was declared down, or
    /// came back as a new process), or that never left: route them anew.
    Returned { to: NodeId, msgs: Vec<PeerMessage> },
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// No connection to that node now.
    Down,
    /// Its queue is full: the peer is too slow or stalled.
    Full,
}

struct Peer {
    queue: mpsc::Sender<Outgoing>,
    budget: Arc<AtomicUsize>,
    /// Streams the peer dialled to us, for the side that waits.
    incoming: mpsc::Sender<ClusterStream>,
    up: Arc<AtomicBool>,
    /// The peer was declared down: return what it did not acknowledge.
    give_back: Arc<Notify>,
}

#[derive(Default)]
pub struct LinkStats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub refused_down: AtomicU64,
    pub refused_full: AtomicU64,
    pub connects: AtomicU64,
    /// Writes of frames on established connections (several frames may share one).
    pub writes: AtomicU64,
    pub resent: AtomicU64,
    pub returned: AtomicU64,
    pub dropped_stale: AtomicU64,
    /// Messages that waited for this replica to apply what their sender had applied.
    pub waited_for_state: AtomicU64,
    /// Of those, the ones still ahead of this replica when the wait ended (taken anyway).
    pub state_wait_timeouts: AtomicU64,
}

pub struct Links {
    me: NodeId,
    raft: Arc<RaftNode>,
    queue_capacity: usize,
    failure_timeout: Duration,
    /// This process run's number: a peer that sees a new one knows we lost what we held.
    incarnation: u64,
    peers: Mutex<HashMap<NodeId, Peer>>,
    inbound: Arc<OnceLock<Inbound>>,
    gate: Arc<OnceLock<Gate>>,
    resources: Arc<Resources>,
    pub stats: Arc<LinkStats>,
}

impl Links {
    pub fn new(
        raft: Arc<RaftNode>,
        resources: Arc<Resources>,
        queue_capacity: usize,
        failure_timeout: Duration,
    ) -> Arc<Links> {
        let links = Arc::new(Links {
            me: raft.node_id(),
            raft: raft.clone(),
            queue_capacity,
            failure_timeout,
            incarnation: rand::random::<u64>() | 1,
            peers: Mutex::new(HashMap::new()),
            inbound: Arc::default(),
            gate: Arc::default(),
            resources,
            stats: Arc::default(),
        });
        let (accepted, mut streams) = mpsc::channel::<LinkStream>(64);
        raft.set_link_acceptor(accepted);
        // Links come up as soon as a member is known, not at the first stanza, so that
        // resource state is exchanged before anyone needs it.
        let weak = Arc::downgrade(&links);
        tokio::spawn(async move {
            loop {
                match weak.upgrade() {
                    Some(links) => links.connect_members(),
                    None => return,
                }
                tokio::time::sleep(MEMBERSHIP_CHECK).await;
            }
        });
        let weak = Arc::downgrade(&links);
        tokio::spawn(async move {
            while let Some(LinkStream { peer, stream }) = streams.recv().await {
                let Some(links) = weak.upgrade() else { break };
                let incoming = links.peer(peer).map(|p| p.incoming.clone());
                // Never waits: one busy link task must not hold up the others' connections
                // (the peer dials again).
                if let Some(incoming) = incoming {
                    let _ = incoming.try_send(stream);
                }
            }
        });
        // A peer declared down will not acknowledge what it holds: its link task looks at
        // the verdict (in the replicated state, after the peer's routes are gone) and
        // routes those stanzas anew. On a lagged event stream every link looks.
        let weak = Arc::downgrade(&links);
        let mut events = raft.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let node = match events.recv().await {
                    Ok(StateEvent::NodeDown { node }) => Some(node),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => return,
                };
                let Some(links) = weak.upgrade() else { return };
                let peers = links.peers.lock().unwrap_or_else(|p| p.into_inner());
                for (id, p) in peers.iter() {
                    if node.is_none_or(|n| n == *id) {
                        p.give_back.notify_one();
                    }
                }
            }
        });
        links
    }

    pub fn set_inbound(&self, inbound: Inbound) {
        let _ = self.inbound.set(inbound);
    }

    /// Stanzas read from peers are taken only while `gate` says yes.
    pub fn set_gate(&self, gate: Gate) {
        let _ = self.gate.set(gate);
    }

    /// Queues `msg` for `node`; refused at once when the link is down or full.
    pub fn send(&self, node: NodeId, msg: PeerMessage) -> Result<(), SendError> {
        self.send_outgoing(node, Outgoing::new(msg))
    }

    /// `send`, with what the link must know of the message (that it is a stream's
    /// available presence).
    pub fn send_outgoing(&self, node: NodeId, mut msg: Outgoing) -> Result<(), SendError> {
        // Whatever made the caller send this, it had seen at most this much of the state.
        msg.after = self.raft.state().applied_index();
        let Some(peer) = self.peer(node) else {
            self.stats.refused_down.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Down);
        };
        if !peer.up.load(Ordering::Acquire) {
            self.stats.refused_down.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Down);
        }
        let weight = msg.weight();
        if peer.budget.fetch_add(weight, Ordering::AcqRel) + weight > MAX_QUEUED_BYTES {
            peer.budget.fetch_sub(weight, Ordering::AcqRel);
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = node,
                "peer link byte budget exhausted; message refused"
            );
            return Err(SendError::Full);
        }
        match peer.queue.try_send(msg) {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                peer.budget.fetch_sub(weight, Ordering::AcqRel);
                if let mpsc::error::TrySendError::Full(_) = e {
                    self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = node, "peer link queue full; message refused");
                    Err(SendError::Full)
                } else {
                    Err(SendError::Down)
                }
            }
        }
    }

    /// Sends to every member (best effort).
    pub fn broadcast(&self, msg: &PeerMessage) {
        for m in self.raft.members() {
            if m.id != self.me {
                let _ = self.send(m.id, msg.clone());
            }
        }
    }

    /// Makes sure a link task exists for every member, so that links come up before the
    /// first stanza needs them.
    pub fn connect_members(&self) {
        for m in self.raft.members() {
            if m.id != self.me {
                let _ = self.peer(m.id);
            }
        }
    }

    /// The peer's handle, starting its link task the first time; `None` for ourselves.
    fn peer(&self, node: NodeId) -> Option<PeerRef> {
        if node == self.me {
            return None;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let p = peers.entry(node).or_insert_with(|| {
            let (queue, rx) = mpsc::channel(self.queue_capacity);
            let (incoming, incoming_rx) = mpsc::channel(4);
            let peer = Peer {
                queue,
                budget: Arc::default(),
                incoming,
                up: Arc::default(),
                give_back: Arc::default(),
            };
            let task = LinkTask {
                me: self.me,
                peer: node,
                raft: self.raft.clone(),
                inbound: self.inbound.clone(),
                gate: self.gate.clone(),
                resources: self.resources.clone(),
                up: peer.up.clone(),
                stats: self.stats.clone(),
                give_back: peer.give_back.clone(),
                silence: self.failure_timeout / 2,
                state: Arc::new(Mutex::new(LinkState::new(
                    self.incarnation,
                    peer.budget.clone(),
                ))),
            };
            tokio::spawn(task.run(rx, incoming_rx));
            peer
        });
        Some(PeerRef {
            queue: p.queue.clone(),
            budget: p.budget.clone(),
            incoming: p.incoming.clone(),
            up: p.up.clone(),
        })
    }
}

struct PeerRef {
    queue: mpsc::Sender<Outgoing>,
    budget: Arc<AtomicUsize>,
    incoming: mpsc::Sender<ClusterStream>,
    up: Arc<AtomicBool>,
}

/// How a connection ended.
enum Served {
    /// Failed or closed; `greeted` if the hellos were exchanged first.
    Ended { greeted: bool },
    /// The peer dialled again while we still held this connection.
    Replaced(ClusterStream),
    /// The peer was declared down and this connection had gone quiet: dropped.
    GaveBack,
}

struct LinkTask {
    me: NodeId,
    peer: NodeId,
    raft: Arc<RaftNode>,
    inbound: Arc<OnceLock<Inbound>>,
    gate: Arc<OnceLock<Gate>>,
    resources: Arc<Resources>,
    up: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    give_back: Arc<Notify>,
    /// A connection silent for this long is stale: the sender sends something at least
    /// four times as often.
    silence: Duration,
    state: Arc<Mutex<LinkState>>,
}

impl LinkTask {
    async fn run(
        self,
        mut queue: mpsc::Receiver<Outgoing>,
        mut incoming: mpsc::Receiver<ClusterStream>,
    ) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let stream = tokio::select! {
                s = self.next_stream(&mut incoming, &mut backoff) => match s {
                    Some(s) => s,
                    None => return,
                },
                _ = self.give_back.notified() => {
                    self.give_back_if_down(&mut queue);
                    continue;
                }
            };
            if !open(&self.gate) {
                // Cut off: take nothing a sender may give back meanwhile.
                drop(stream);
                sleep_backoff(&mut backoff).await;
                continue;
            }
            let mut next = Some(stream);
            while let Some(stream) = next.take() {
                match self.serve(stream, &mut queue, &mut incoming).await {
                    Served::Replaced(s) => next = Some(s),
                    Served::Ended { greeted: true } => backoff = BACKOFF_MIN,
                    Served::Ended { greeted: false } => sleep_backoff(&mut backoff).await,
                    Served::GaveBack => {}
                }
                self.up.store(false, Ordering::Release);
                tracing::info!(node = self.me, peer = self.peer, "peer link down");
                self.keep_queued(&mut queue);
                self.give_back_if_down(&mut queue);
            }
        }
    }

    /// The next connection: dialled by the smaller id, awaited by the other.
    async fn next_stream(
        &self,
        incoming: &mut mpsc::Receiver<ClusterStream>,
        backoff: &mut Duration,
    ) -> Option<ClusterStream> {
        if self.me > self.peer {
            return incoming.recv().await;
        }
        loop {
            let Some(addr) = self.raft.member_addr(self.peer) else {
                // Not (or no longer) a member: nothing to dial; check again later.
                tokio::time::sleep(BACKOFF_MAX).await;
                continue;
            };
            match self.raft.connect(&addr, self.peer, Channel::Link).await {
                Ok(c) => return Some(c.into_stream()),
                Err(e) => {
                    tracing::debug!(peer = self.peer, error = %e, "peer link connect failed");
                    sleep_backoff(backoff).await;
                }
            }
        }
    }

    /// Whether the replicated state says the peer is down (unreadable: not known to be,
    /// so what it holds is kept for a later look rather than given back).
    fn declared_down(&self) -> bool {
        self.raft
            .state()
            .setting(&chorus_raft::node_down_key(self.peer))
            .is_ok_and(|s| s.is_some())
    }

    /// Runs one connection until it fails, is replaced, or its peer is declared down while
    /// the connection is quiet.
    async fn serve(
        &self,
        stream: ClusterStream,
        queue: &mut mpsc::Receiver<Outgoing>,
        incoming: &mut mpsc::Receiver<ClusterStream>,
    ) -> Served {
        // TCP_NODELAY was set when the connection was made (chorus_raft::network).
        let (mut read, mut write) = tokio::io::split(stream);
        let Some((theirs, greeted_at)) = self.greet(&mut read, &mut write).await else {
            return Served::Ended { greeted: false };
        };
        let greeting = {
            let local = self.resources.all_local();
            let live: HashSet<String> = local.iter().map(|r| r.full_jid.clone()).collect();
            self.lock_state().greeted(theirs, local, &live)
        };
        self.give_back_msgs(greeting.given_back);
        let (first, resent) = (greeting.first, greeting.resent);
        // The reader runs before anything else is written: both ends may have more to send
        // at first than the socket buffers hold.
        let ack_due = Arc::new(Notify::new());
        let heard = Arc::new(Mutex::new(greeted_at));
        let mut reader = tokio::spawn(self.reader(read, ack_due.clone(), heard.clone()));
        let mut reader_done = false;
        let started = {
            let write_first = async {
                for frame in &first {
                    write_frame(&mut write, &encode(frame)).await?;
                }
                Ok::<(), std::io::Error>(())
            };
            // A write to a stalled peer may block until the kernel gives up: a verdict that
            // the peer is down must not wait for that.
            tokio::pin!(write_first);
            loop {
                tokio::select! {
                    written = &mut write_first => break written.is_ok(),
                    _ = &mut reader => { reader_done = true; break false }
                    _ = self.give_back.notified() => {
                        if self.gave_back(&heard, queue) {
                            reader.abort();
                            let _ = reader.await;
                            return Served::GaveBack;
                        }
                    }
                }
            }
        };
        if !started {
            if !reader_done {
                reader.abort();
                let _ = reader.await;
            }
            return Served::Ended { greeted: true };
        }
        self.stats
            .resent
            .fetch_add(resent as u64, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = self.me, peer = self.peer, "peer link up");
        self.up.store(true, Ordering::Release);
        let mut keepalive = tokio::time::interval(self.silence / 4);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            let frame = tokio::select! {
                _ = &mut reader => { reader_done = true; break Served::Ended { greeted: true } }
                next = incoming.recv() => match next {
                    Some(s) => break Served::Replaced(s),
                    None => break Served::Ended { greeted: true },
                },
                // A peer that is declared down but still talks to us handles what we
                // send it itself (to offline storage, once its streams are gone).
                _ = self.give_back.notified() => {
                    if self.gave_back(&heard, queue) {
                        break Served::GaveBack;
                    }
                    continue;
                }
                // An ack doubles as the keepalive that tells the peer we are not stale.
                _ = ack_due.notified() => match self.lock_state().ack_if_new() {
                    Some(ack) => ack,
                    // It went out with frames written since.
                    None => continue,
                },
                _ = keepalive.tick() => self.ack_frame(),
                msg = queue.recv() => match msg {
                    Some(msg) => self.frame_for(msg),
                    None => break Served::Ended { greeted: true },
                },
            };
            let batch = self.batch_with_queued(frame, queue);
            let written = write_frames(&mut write, &batch);
            tokio::pin!(written);
            // A half-written frame is only ever abandoned with its connection.
            let ended = loop {
                tokio::select! {
                    result = &mut written => match result {
                        Ok(()) => break None,
                        Err(e) => {
                            tracing::debug!(peer = self.peer, error = %e, "peer link write failed");
                            break Some(Served::Ended { greeted: true });
                        }
                    },
                    _ = &mut reader => {
                        reader_done = true;
                        break Some(Served::Ended { greeted: true });
                    }
                    _ = self.give_back.notified() => {
                        if self.gave_back(&heard, queue) {
                            break Some(Served::GaveBack);
                        }
                    }
                }
            };
            if let Some(ended) = ended {
                break ended;
            }
        };
        if !reader_done {
            // Awaited, not only aborted: a reader still running could take a frame of
            // this connection after the next one reset what we took.
            reader.abort();
            let _ = reader.await;
        }
        ended
    }

    /// Gives everything back if the peer is declared down and its connection, last heard
    /// at `heard`, has been quiet for half the silence limit; whether it did.
    fn gave_back(&self, heard: &Mutex<Instant>, queue: &mut mpsc::Receiver<Outgoing>) -> bool {
        let quiet = heard.lock().unwrap_or_else(|p| p.into_inner()).elapsed() > self.silence / 2;
        let give = quiet && self.declared_down();
        if give {
            self.give_back_all(queue);
        }
        give
    }

    /// Hellos both ways; the peer's and when it came, or `None` if the connection failed
    /// first.
    async fn greet(
        &self,
        read: &mut ReadHalf<ClusterStream>,
        write: &mut WriteHalf<ClusterStream>,
    ) -> Option<(Hello, Instant)> {
        let hello = self.lock_state().hello();
        write_frame(write, &encode(&hello)).await.ok()?;
        let frame = tokio::time::timeout(self.silence, read_frame(read, MAX_LINK_FRAME))
            .await
            .ok()?
            .ok()?;
        match decode::<LinkFrame>(&frame) {
            Ok(LinkFrame::Hello {
                incarnation,
                from,
                took,
            }) => Some((
                Hello {
                    incarnation,
                    from,
                    took,
                },
                Instant::now(),
            )),
            other => {
                tracing::warn!(peer = self.peer, frame = ?other, "peer link opened without a hello; closing");
                None
            }
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ack_frame(&self) -> LinkFrame {
        self.lock_state().ack()
    }

    /// `first`, then whatever is already queued behind it and an ack if one is due,
    /// framed for one write: under load one TLS record and one system call carry many
    /// frames, and nothing waits for a batch to fill. About `BATCH_BYTES` at most (past it
    /// the rest goes in the next write).
    fn batch_with_queued(&self, first: LinkFrame, queue: &mut mpsc::Receiver<Outgoing>) -> Vec<u8> {
        let mut batch = Vec::new();
        let mut frame = first;
        loop {
            // A frame longer than u32 cannot be made: the queue's byte budget is far below.
            let _ = append_frame(&mut batch, &encode(&frame));
            if batch.len() >= BATCH_BYTES {
                break;
            }
            match queue.try_recv() {
                Ok(msg) => frame = self.frame_for(msg),
                Err(_) => break,
            }
        }
        // What this side took goes back with them, not in a write of its own.
        if let Some(ack) = self.lock_state().ack_if_new() {
            let _ = append_frame(&mut batch, &encode(&ack));
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        batch
    }

    /// Numbers a stanza and keeps it until acknowledged; resource state goes as it is.
    fn frame_for(&self, msg: Outgoing) -> LinkFrame {
        self.lock_state().send(msg)
    }

    /// Reads until the connection fails, goes stale, or this node is cut off.
    fn reader(
        &self,
        mut read: ReadHalf<ClusterStream>,
        ack_due: Arc<Notify>,
        heard: Arc<Mutex<Instant>>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ctx = ReaderContext {
            peer: self.peer,
            inbound: self.inbound.clone(),
            gate: self.gate.clone(),
            resources: self.resources.clone(),
            stats: self.stats.clone(),
            state: self.state.clone(),
            silence: self.silence,
            raft: self.raft.clone(),
            stalled_at: AtomicU64::new(u64::MAX),
        };
        async move {
            loop {
                let frame =
                    match tokio::time::timeout(ctx.silence, read_frame(&mut read, MAX_LINK_FRAME))
                        .await
                    {
                        Ok(Ok(f)) => f,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = ctx.peer, error = %e, "peer link read ended");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(peer = ctx.peer, "peer link silent; dropping it");
                            return;
                        }
                    };
                // Checked on the clock, not by the timeout alone: after this process was
                // paused, frames that waited in the socket are ready at once.
                {
                    let mut heard = heard.lock().unwrap_or_else(|p| p.into_inner());
                    if heard.elapsed() > ctx.silence {
                        ctx.stats.dropped_stale.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            peer = ctx.peer,
                            "peer link was silent too long; dropping it"
                        );
                        return;
                    }
                    *heard = Instant::now();
                }
                match decode::<LinkFrame>(&frame) {
                    Ok(LinkFrame::Numbered { seq, after, msg }) => {
                        if !open(&ctx.gate) {
                            tracing::info!(peer = ctx.peer, "cut off; dropping the peer link");
                            return;
                        }
                        // Nothing more is read meanwhile: later messages wait behind this
                        // one (order per pair), and the sender keeps them, unacknowledged.
                        ctx.caught_up(after).await;
                        let fresh = ctx
                            .state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take(seq);
                        if fresh {
                            ctx.stats.received.fetch_add(1, Ordering::Relaxed);
                            ctx.take(msg);
                        }
                        ack_due.notify_one();
                    }
                    Ok(LinkFrame::Unnumbered(msg)) => {
                        ctx.stats.received.fetch_add(1, Ordering::Relaxed);
                        ctx.take(msg)
                    }
                    Ok(LinkFrame::Ack { seq }) => ctx
                        .state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .acked(seq),
                    Ok(LinkFrame::Hello { .. }) => {
                        tracing::warn!(peer = ctx.peer, "second hello on a peer link; closing");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(peer = ctx.peer, error = %e, "undecodable peer link frame; closing the link");
                        return;
                    }
                }
            }
        }
    }

    /// When the peer is declared down, everything it did not acknowledge and everything
    /// not yet sent is routed anew (its routes are gone by then).
    fn give_back_if_down(&self, queue: &mut mpsc::Receiver<Outgoing>) {
        if self.declared_down() {
            self.give_back_all(queue);
        }
    }

    fn give_back_all(&self, queue: &mut mpsc::Receiver<Outgoing>) {
        self.keep_queued(queue);
        let all = self.lock_state().give_back_all();
        self.give_back_msgs(all);
    }

    /// Stanzas queued for a connection that is gone wait for the next one; resource
    /// updates are dropped, since the next connection sends the current state anyway.
    fn keep_queued(&self, queue: &mut mpsc::Receiver<Outgoing>) {
        let mut queued = Vec::new();
        while let Ok(msg) = queue.try_recv() {
            queued.push(msg);
        }
        self.lock_state().disconnected(queued);
    }

    fn give_back_msgs(&self, msgs: Vec<PeerMessage>) {
        if msgs.is_empty() {
            return;
        }
        self.stats
            .returned
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        tracing::info!(
            peer = self.peer,
            count = msgs.len(),
            "routing unacknowledged peer link messages anew"
        );
        if let Some(inbound) = self.inbound.get() {
            inbound.do_send(LinkEvent::Returned {
                to: self.peer,
                msgs,
            });
        }
    }
}

/// What the reader task of one connection needs.
struct ReaderContext {
    peer: NodeId,
    inbound: Arc<OnceLock<Inbound>>,
    gate: Arc<OnceLock<Gate>>,
    resources: Arc<Resources>,
    stats: Arc<LinkStats>,
    state: Arc<Mutex<LinkState>>,
    silence: Duration,
    raft: Arc<RaftNode>,
    /// The applied index when a wait last ran out (`u64::MAX`: none did).
    stalled_at: AtomicU64,
}

impl ReaderContext {
    /// Waits until this replica has applied what the sender had when it sent a message,
    /// so that the message is acted on with the state its sender acted on: the sending
    /// stream's route, a roster change. Bounded well below the silence that drops the
    /// link: a replica that cannot catch up (cut off from the leader) takes it as it is.
    async fn caught_up(&self, after: u64) {
        let applied = self.raft.state().applied_index();
        if applied >= after {
            return;
        }
        // After a wait that ran out, a replica that has applied nothing since is not
        // waited for again: each message would wait the whole bound, and the link would
        // carry one message per wait while this node is cut off from the leader.
        if self.stalled_at.load(Ordering::Relaxed) == applied {
            return;
        }
        self.stats.waited_for_state.fetch_add(1, Ordering::Relaxed);
        if !self.raft.wait_applied(after, self.silence / 3).await {
            self.stats
                .state_wait_timeouts
                .fetch_add(1, Ordering::Relaxed);
            let applied = self.raft.state().applied_index();
            self.stalled_at.store(applied, Ordering::Relaxed);
            tracing::debug!(
                peer = self.peer,
                after,
                applied,
                "a peer's message is ahead of this replica; taken as it is"
            );
        }
    }

    fn take(&self, msg: PeerMessage) {
        match msg {
            PeerMessage::Resource(r) if r.node == self.peer => self.resources.learn(r),
            PeerMessage::Resource(_) => {}
            PeerMessage::ResourceGone { full_jid, session } => {
                self.resources.forget(&full_jid, Some(&session))
            }
            msg => {
                if let Some(inbound) = self.inbound.get() {
                    inbound.do_send(LinkEvent::Received {
                        from: self.peer,
                        msg,
                    });
                }
            }
        }
    }
}

fn open(gate: &OnceLock<Gate>) -> bool {
    gate.get().is_none_or(|g| g())
}

async fn sleep_backoff(backoff: &mut Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}
