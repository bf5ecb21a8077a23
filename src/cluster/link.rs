//! Peer links: one connection per pair of nodes, carrying stanzas and resource state
//! both ways, never through the Raft log.
//!
//! The node with the smaller id dials (over the authenticated cluster channel), the other
//! waits for it, so a pair never holds two connections. Each peer has a bounded queue; a
//! message for a peer whose link is down, or whose queue is full, is refused at once so
//! that the caller can fall back (a message goes to offline storage instead). Order is
//! kept per pair: one queue, one connection, one reader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chorus_raft::network::frame::{read_frame, write_frame};
use chorus_raft::network::{Channel, LinkStream};
use chorus_raft::{NodeId, RaftNode};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::protocol::{decode, encode, PeerMessage};
use super::resources::Resources;

/// Largest peer-link frame: a stanza is capped far below this by c2s limits.
const MAX_LINK_FRAME: usize = 4 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bytes queued for one peer at most: with stanzas of up to `c2s.max_stanza_bytes`, a
/// count alone would let a stalled peer pin gigabytes.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// How often the set of links is checked against the membership.
const MEMBERSHIP_CHECK: Duration = Duration::from_millis(500);

/// Where messages from peers go (the router).
pub type Inbound = actix::Recipient<FromPeer>;

#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct FromPeer {
    pub from: NodeId,
    pub msg: PeerMessage,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// No connection to that node now.
    Down,
    /// Its queue is full: the peer is too slow or stalled.
    Full,
}

struct Peer {
    queue: mpsc::Sender<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    /// Streams the peer dialled to us, for the side that waits.
    incoming: mpsc::Sender<TcpStream>,
    up: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct LinkStats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub refused_down: AtomicU64,
    pub refused_full: AtomicU64,
    pub connects: AtomicU64,
}

pub struct Links {
    me: NodeId,
    raft: Arc<RaftNode>,
    queue_capacity: usize,
    peers: Mutex<HashMap<NodeId, Peer>>,
    inbound: Arc<OnceLock<Inbound>>,
    resources: Arc<Resources>,
    pub stats: Arc<LinkStats>,
}

impl Links {
    pub fn new(
        raft: Arc<RaftNode>,
        resources: Arc<Resources>,
        queue_capacity: usize,
    ) -> Arc<Links> {
        let links = Arc::new(Links {
            me: raft.node_id(),
            raft: raft.clone(),
            queue_capacity,
            peers: Mutex::new(HashMap::new()),
            inbound: Arc::default(),
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
                if let Some(incoming) = incoming {
                    let _ = incoming.send(stream).await;
                }
            }
        });
        links
    }

    pub fn set_inbound(&self, inbound: Inbound) {
        let _ = self.inbound.set(inbound);
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        self.peer(node)
            .is_some_and(|p| p.up.load(Ordering::Acquire))
    }

    /// Queues `msg` for `node`; refused at once when the link is down or full.
    pub fn send(&self, node: NodeId, msg: &PeerMessage) -> Result<(), SendError> {
        let Some(peer) = self.peer(node) else {
            self.stats.refused_down.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Down);
        };
        if !peer.up.load(Ordering::Acquire) {
            self.stats.refused_down.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Down);
        }
        let frame = encode(msg);
        let len = frame.len();
        if peer.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED_BYTES {
            peer.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = node,
                "peer link byte budget exhausted; message refused"
            );
            return Err(SendError::Full);
        }
        let result = peer.queue.try_send(frame);
        if result.is_err() {
            peer.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        }
        match result {
            Ok(()) => {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = node, "peer link queue full; message refused");
                Err(SendError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Down),
        }
    }

    /// Sends to every member (best effort).
    pub fn broadcast(&self, msg: &PeerMessage) {
        for m in self.raft.members() {
            if m.id != self.me {
                let _ = self.send(m.id, msg);
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
            let up = Arc::new(AtomicBool::new(false));
            let queued_bytes = Arc::new(AtomicUsize::new(0));
            let task = LinkTask {
                queued_bytes: queued_bytes.clone(),
                me: self.me,
                peer: node,
                raft: self.raft.clone(),
                inbound: self.inbound.clone(),
                resources: self.resources.clone(),
                up: up.clone(),
                stats: self.stats.clone(),
            };
            tokio::spawn(task.run(rx, incoming_rx));
            Peer {
                queue,
                queued_bytes,
                incoming,
                up,
            }
        });
        Some(PeerRef {
            queue: p.queue.clone(),
            queued_bytes: p.queued_bytes.clone(),
            incoming: p.incoming.clone(),
            up: p.up.clone(),
        })
    }
}

struct PeerRef {
    queue: mpsc::Sender<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    incoming: mpsc::Sender<TcpStream>,
    up: Arc<AtomicBool>,
}

struct LinkTask {
    me: NodeId,
    peer: NodeId,
    raft: Arc<RaftNode>,
    inbound: Arc<OnceLock<Inbound>>,
    resources: Arc<Resources>,
    up: Arc<AtomicBool>,
    stats: Arc<LinkStats>,
    queued_bytes: Arc<AtomicUsize>,
}

impl LinkTask {
    async fn run(
        self,
        mut queue: mpsc::Receiver<Vec<u8>>,
        mut incoming: mpsc::Receiver<TcpStream>,
    ) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let stream = if self.me < self.peer {
                let Some(addr) = self.raft.member_addr(self.peer) else {
                    // Not (or no longer) a member: nothing to dial; check again later.
                    tokio::time::sleep(BACKOFF_MAX).await;
                    continue;
                };
                match self.raft.connect(&addr, self.peer, Channel::Link).await {
                    Ok(c) => c.into_stream(),
                    Err(e) => {
                        tracing::debug!(peer = self.peer, error = %e, "peer link connect failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            } else {
                match incoming.recv().await {
                    Some(s) => s,
                    None => return,
                }
            };
            backoff = BACKOFF_MIN;
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = self.me, peer = self.peer, "peer link up");
            let replaced = self.serve(stream, &mut queue, &mut incoming).await;
            self.up.store(false, Ordering::Release);
            tracing::info!(node = self.me, peer = self.peer, "peer link down");
            // Whatever was queued for the old connection would arrive out of context.
            while let Ok(f) = queue.try_recv() {
                self.queued_bytes.fetch_sub(f.len(), Ordering::AcqRel);
            }
            if let Some(next) = replaced {
                // The peer dialled again while we still held its old connection.
                let _ = self.serve_again(next, &mut queue, &mut incoming).await;
            }
        }
    }

    async fn serve_again(
        &self,
        stream: TcpStream,
        queue: &mut mpsc::Receiver<Vec<u8>>,
        incoming: &mut mpsc::Receiver<TcpStream>,
    ) -> Option<TcpStream> {
        let mut next = Some(stream);
        while let Some(s) = next.take() {
            next = self.serve(s, queue, incoming).await;
            self.up.store(false, Ordering::Release);
        }
        None
    }

    /// Runs one connection until it fails; returns a newer connection from the peer if one
    /// replaced it.
    async fn serve(
        &self,
        stream: TcpStream,
        queue: &mut mpsc::Receiver<Vec<u8>>,
        incoming: &mut mpsc::Receiver<TcpStream>,
    ) -> Option<TcpStream> {
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        // Our resources first, so the peer's view is whole before any stanza arrives.
        for r in self.resources.all_local() {
            let frame = encode(&PeerMessage::Resource(r));
            if write_frame(&mut write, &frame).await.is_err() {
                return None;
            }
        }
        self.up.store(true, Ordering::Release);
        let (peer, inbound, resources) = (self.peer, self.inbound.clone(), self.resources.clone());
        let stats = self.stats.clone();
        let mut reader = tokio::spawn(async move {
            loop {
                let frame = match read_frame(&mut read, MAX_LINK_FRAME).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!(peer, error = %e, "peer link read ended");
                        return;
                    }
                };
                stats.received.fetch_add(1, Ordering::Relaxed);
                match decode::<PeerMessage>(&frame) {
                    Ok(PeerMessage::Resource(r)) if r.node == peer => resources.learn(r),
                    Ok(PeerMessage::Resource(_)) => {}
                    Ok(PeerMessage::ResourceGone { full_jid, session }) => {
                        resources.forget(&full_jid, Some(&session))
                    }
                    Ok(msg) => {
                        if let Some(inbound) = inbound.get() {
                            inbound.do_send(FromPeer { from: peer, msg });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(peer, error = %e, "undecodable peer link message; closing the link");
                        return;
                    }
                }
            }
        });
        let replaced = loop {
            tokio::select! {
                _ = &mut reader => break None,
                next = incoming.recv() => match next {
                    Some(s) => break Some(s),
                    None => break None,
                },
                frame = queue.recv() => match frame {
                    Some(f) => if let Err(e) = {
                        self.queued_bytes.fetch_sub(f.len(), Ordering::AcqRel);
                        write_frame(&mut write, &f).await
                    } {
                        tracing::debug!(peer = self.peer, error = %e, "peer link write failed");
                        break None;
                    },
                    None => break None,
                },
            }
        };
        reader.abort();
        replaced
    }
}
