//! Clustering: how nodes find each other (`discovery`, seeds), form or join one cluster
//! (`formation`), keep its membership (`membership`), notice failures (`failure`), and
//! carry stanzas between them (`link`, `resources`). docs/clustering.md tells the story.
//!
//! Raft membership is the only truth about who is a member; beacons and seeds are only
//! hints a fresh node uses to find someone to ask.

pub mod discovery;
pub mod failure;
pub mod formation;
pub mod link;
pub mod membership;
pub mod protocol;
pub mod resources;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_raft::network::ANY_NODE;
use chorus_raft::{NodeId, RaftNode, PROTOCOL_VERSION};
use tokio::sync::watch;

use crate::config::Settings;
use protocol::{ClusterRequest, ClusterResponse, NodeInfo};

/// The setting that holds the cluster's id, written once by the node that forms it.
pub const CLUSTER_ID_KEY: &str = "cluster.id";
/// The cluster-wide switch (`chorus cluster enable|disable`): "false" = disabled.
pub const CLUSTER_ENABLED_KEY: &str = "cluster.enabled";

/// Why `serve` should stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    Running,
    /// This node left (`cluster leave`) or was removed: its Raft data is wiped on exit, so a
    /// restart makes it a fresh node.
    Left,
    /// `cluster join`: restart into another cluster through `seed`.
    Rejoin {
        seed: String,
    },
}

pub struct Cluster {
    pub raft: Arc<RaftNode>,
    pub settings: Arc<Settings>,
    pub links: Arc<link::Links>,
    pub resources: Arc<resources::Resources>,
    started: Instant,
    /// Milliseconds after `started` of the last ping from a leader.
    last_leader_contact: AtomicU64,
    /// Milliseconds after `started` when, as leader, a majority of voters last answered.
    last_quorum: AtomicU64,
    /// Serving clients: in contact with the majority, and this node's stale routes from
    /// before a restart are gone.
    serving: watch::Sender<bool>,
    ready: AtomicBool,
    stop: watch::Sender<Stop>,
    /// Set for good once the node leaves, is removed or restarts into another cluster.
    stopping: AtomicBool,
    /// What clients are told when this node stops serving them.
    kick_reason: Mutex<String>,
    pub sessions: AtomicU64,
    /// Times this replica caught up with the leader before a read (`catch_up`).
    pub catch_ups: AtomicU64,
    pub c2s_addr: Mutex<String>,
    pub http_addr: Mutex<String>,
    discovery: Mutex<Option<Arc<discovery::Discovery>>>,
}

impl Cluster {
    pub fn new(raft: Arc<RaftNode>, settings: Arc<Settings>) -> Arc<Cluster> {
        let resources = Arc::new(resources::Resources::default());
        let links = link::Links::new(
            raft.clone(),
            resources.clone(),
            settings.cluster.link_queue as usize,
            Duration::from_secs(settings.cluster.failure.timeout),
        );
        let cluster = Arc::new(Cluster {
            raft,
            settings,
            links,
            resources,
            started: Instant::now(),
            last_leader_contact: AtomicU64::new(0),
            last_quorum: AtomicU64::new(0),
            serving: watch::channel(false).0,
            ready: AtomicBool::new(false),
            stop: watch::channel(Stop::Running).0,
            stopping: AtomicBool::new(false),
            kick_reason: Mutex::new(String::new()),
            sessions: AtomicU64::new(0),
            catch_ups: AtomicU64::new(0),
            c2s_addr: Mutex::default(),
            http_addr: Mutex::default(),
            discovery: Mutex::default(),
        });
        // A node cut off from the majority takes no stanzas from peers: by the time it
        // would deliver them, their sender may have routed them elsewhere.
        let weak = Arc::downgrade(&cluster);
        cluster.links.set_gate(Arc::new(move || {
            weak.upgrade().is_some_and(|c| c.in_contact())
        }));
        let weak = Arc::downgrade(&cluster);
        cluster.raft.set_app_handler(Arc::new(move |from, bytes| {
            let weak = weak.clone();
            Box::pin(async move {
                let Some(cluster) = weak.upgrade() else {
                    return Err("node is shutting down".into());
                };
                let request: ClusterRequest = protocol::decode(&bytes)?;
                Ok(protocol::encode(&cluster.handle(from, request).await))
            })
        }));
        cluster
    }

    pub fn set_discovery(&self, d: Arc<discovery::Discovery>) {
        *self.discovery.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
    }

    pub fn discovery(&self) -> Option<Arc<discovery::Discovery>> {
        self.discovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Members the leader has marked down.
    pub fn down_nodes(&self) -> usize {
        let state = self.raft.state();
        self.raft
            .members()
            .iter()
            .filter(|m| {
                state
                    .setting(&chorus_raft::node_down_key(m.id))
                    .is_ok_and(|s| s.is_some())
            })
            .count()
    }

    pub fn node_id(&self) -> NodeId {
        self.raft.node_id()
    }

    pub fn task_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.cluster.task.timeout)
    }

    pub fn failure_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.cluster.failure.timeout)
    }

    /// The cluster's id; `None` before it is formed (or if it cannot be read).
    pub fn cluster_id(&self) -> Option<String> {
        self.raft.state().setting(CLUSTER_ID_KEY).ok().flatten()
    }

    /// Whether clustering is switched on; a switch that cannot be read counts as off, so
    /// that nothing is admitted or announced on a guess.
    pub fn enabled(&self) -> bool {
        matches!(self.raft.state().setting(CLUSTER_ENABLED_KEY), Ok(v) if v.as_deref() != Some("false"))
    }

    pub fn serving(&self) -> bool {
        *self.serving.borrow()
    }

    pub fn watch_serving(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    pub fn watch_stop(&self) -> watch::Receiver<Stop> {
        self.stop.subscribe()
    }

    pub fn request_stop(&self, why: Stop) {
        let _ = self.stop.send(why);
    }

    /// This node's stale routes are gone: it may serve clients once in contact.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
        self.refresh_serving();
    }

    /// In contact with the majority: as leader, a quorum acknowledged us within the
    /// failure timeout; otherwise a leader pinged us within it.
    pub fn in_contact(&self) -> bool {
        let me = self.node_id();
        let status = self.raft.status();
        let member = status.membership.contains(&me) || status.learners.contains(&me);
        if !member {
            return false;
        }
        if status.current_leader == Some(me) {
            status.membership.len() == 1 || self.age(&self.last_quorum) < self.failure_timeout()
        } else {
            // Heartbeats from the leader are the finest sign; the leader's pings and a
            // fresh election count too.
            let heartbeat = self.raft.since_leader_append();
            let age = heartbeat.map_or(self.leader_contact_age(), |h| {
                h.min(self.leader_contact_age())
            });
            age < self.failure_timeout()
        }
    }

    pub fn refresh_serving(&self) {
        self.update_serving(self.in_contact());
    }

    /// Waits (at most `within`) until this node serves clients.
    pub async fn wait_serving(&self, within: Duration) -> bool {
        let mut rx = self.watch_serving();
        tokio::time::timeout(within, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops serving clients for good (leave, removal, rejoin): they are told `reason`.
    pub fn stop_serving(&self, reason: &str) {
        self.stopping.store(true, Ordering::Release);
        *self.kick_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
        self.serving.send_replace(false);
    }

    /// Undoes `stop_serving` when what it prepared for did not happen (a refused leave).
    pub fn resume_serving(&self) {
        self.stopping.store(false, Ordering::Release);
        self.refresh_serving();
    }

    /// Whether this node serves clients, from its contact with the majority.
    fn update_serving(&self, in_contact: bool) {
        let serve = in_contact
            && self.ready.load(Ordering::Acquire)
            && !self.stopping.load(Ordering::Acquire);
        if serve != self.serving() {
            if !serve && !self.stopping.load(Ordering::Acquire) {
                *self.kick_reason.lock().unwrap_or_else(|p| p.into_inner()) =
                    "this node is cut off from the cluster majority; reconnect to another node"
                        .into();
                tracing::warn!(
                    node = self.node_id(),
                    "cut off from the majority: not serving clients"
                );
            } else if serve {
                tracing::info!(
                    node = self.node_id(),
                    "in contact with the majority: serving clients"
                );
            }
            self.serving.send_replace(serve);
        }
    }

    /// What clients are told when the node stops serving them.
    pub fn kick_reason(&self) -> String {
        self.kick_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn leader_contact_age(&self) -> Duration {
        self.age(&self.last_leader_contact)
    }

    fn age(&self, at: &AtomicU64) -> Duration {
        let at = at.load(Ordering::Acquire);
        self.started
            .elapsed()
            .saturating_sub(Duration::from_millis(at))
    }

    /// As leader, a majority of voters answered just now.
    pub(crate) fn note_quorum(&self) {
        self.last_quorum
            .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// A leader that steps down (a higher term came, say from a follower that was
    /// paused) was in contact with the majority until its quorum last answered: it
    /// counts from there, not from when it last followed someone, so that it does not
    /// judge itself cut off in the middle of a healthy election.
    pub(crate) fn stepped_down(&self) {
        self.last_leader_contact
            .fetch_max(self.last_quorum.load(Ordering::Acquire), Ordering::AcqRel);
    }

    pub(crate) fn note_leader_contact(&self) {
        self.last_leader_contact
            .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
    }

    pub fn info(&self) -> NodeInfo {
        let status = self.raft.status();
        let role = if status.current_leader == Some(status.node_id) {
            "leader"
        } else if status.learners.contains(&status.node_id) {
            "learner"
        } else if status.membership.contains(&status.node_id) {
            match status.state.as_str() {
                "Candidate" => "candidate",
                _ => "follower",
            }
        } else {
            "unknown"
        };
        NodeInfo {
            node_id: status.node_id,
            cluster_addr: self.raft.listen_addr().to_string(),
            cluster_id: self.cluster_id(),
            initialized: !status.membership.is_empty(),
            leader: status.current_leader,
            role: role.into(),
            term: status.current_term,
            applied_index: status.last_applied,
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.uptime().as_secs(),
            sessions: self.sessions.load(Ordering::Relaxed),
            c2s: self
                .c2s_addr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            http: self
                .http_addr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            cut_off: !self.serving(),
        }
    }

    async fn handle(&self, from: NodeId, request: ClusterRequest) -> ClusterResponse {
        match request {
            ClusterRequest::Info => ClusterResponse::Info(Box::new(self.info())),
            ClusterRequest::YouWereRemoved => {
                let members = self.raft.members();
                let leader_is = |m: &chorus_raft::Member| m.id == from && m.voter;
                // Only a voter of our membership may say so, and only of us.
                if members.iter().any(leader_is) {
                    tracing::warn!(
                        node = self.node_id(),
                        by = from,
                        "removed from the cluster; stopping"
                    );
                    self.stop_serving(
                        "this node was removed from the cluster; reconnect to another node",
                    );
                    self.request_stop(Stop::Left);
                }
                ClusterResponse::Removed
            }
            ClusterRequest::Ping { leader, .. } => {
                if self.raft.status().current_leader == Some(leader) && leader == from {
                    self.note_leader_contact();
                }
                ClusterResponse::Pong
            }
            ClusterRequest::Join {
                node,
                addr,
                protocol,
            } => match self.on_leader(ClusterRequest::Join {
                node,
                addr: addr.clone(),
                protocol,
            }) {
                Some(forward) => forward.await,
                None => match membership::admit(self, node, &addr, protocol).await {
                    Ok(()) => ClusterResponse::Joined {
                        cluster_id: self.cluster_id(),
                    },
                    Err(e) => ClusterResponse::Refused(e),
                },
            },
            ClusterRequest::ReadSetting { key } => {
                match self.on_leader(ClusterRequest::ReadSetting { key: key.clone() }) {
                    Some(forward) => forward.await,
                    None => match self.raft.ensure_linearizable().await {
                        Ok(()) => match self.raft.state().setting(&key) {
                            Ok(value) => ClusterResponse::Setting(value),
                            Err(e) => ClusterResponse::Refused(e.to_string()),
                        },
                        Err(e) => ClusterResponse::Refused(e.to_string()),
                    },
                }
            }
            ClusterRequest::ReadIndex => match self.on_leader(ClusterRequest::ReadIndex) {
                Some(forward) => forward.await,
                None => match self.raft.ensure_linearizable().await {
                    Ok(()) => ClusterResponse::Index(self.raft.state().applied_index()),
                    Err(e) => ClusterResponse::Refused(e.to_string()),
                },
            },
            ClusterRequest::Remove { node } => self.remove_member(node).await,
        }
    }

    /// Brings this replica up to every write committed before the call (a read index from
    /// the leader, then a bounded wait): for a read whose "absent" would refuse a client,
    /// such as an account made a moment ago through another node. False when that could
    /// not be done (no leader, cut off, the wait ran out); the caller reads as it is.
    pub async fn catch_up(&self) -> bool {
        self.catch_ups.fetch_add(1, Ordering::Relaxed);
        let within = self.failure_timeout();
        let work = async {
            match self.ask_leader(ClusterRequest::ReadIndex).await {
                ClusterResponse::Index(index) => self.raft.wait_applied(index, within).await,
                other => {
                    tracing::debug!(?other, "could not catch up with the leader");
                    false
                }
            }
        };
        tokio::time::timeout(within, work).await.unwrap_or(false)
    }

    /// Removes `node`, on the leader (asked on from here if this node is not it).
    pub async fn remove_member(&self, node: NodeId) -> ClusterResponse {
        let (answer, asked) = match self.on_leader_naming(ClusterRequest::Remove { node }) {
            Some(forward) => forward.await,
            None => match membership::remove(self, node).await {
                Ok(()) => (ClusterResponse::Removed, Some(self.node_id())),
                Err(e) => (ClusterResponse::Refused(e), Some(self.node_id())),
            },
        };
        // A leader asked to remove itself stops as soon as the change commits, and may
        // go before its answer does: the membership then says whether the removal
        // happened (found by tests/cluster.rs under load). Which node was asked is known
        // only once it answered: right after another member left, the leader found while
        // waiting may be the node being removed (found by the same test).
        let removing_leader = asked == Some(node);
        match answer {
            ClusterResponse::Refused(e) if removing_leader => {
                if self.left_membership(node).await {
                    ClusterResponse::Removed
                } else {
                    ClusterResponse::Refused(e)
                }
            }
            other => other,
        }
    }

    /// Whether `node` is (or within the task timeout becomes) no member of this node's
    /// view of the membership.
    async fn left_membership(&self, node: NodeId) -> bool {
        let deadline = tokio::time::Instant::now() + self.task_timeout();
        loop {
            if !self.raft.members().iter().any(|m| m.id == node) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `None` when this node is the leader (the caller runs the request); otherwise the
    /// request sent on to the leader.
    fn on_leader(
        &self,
        request: ClusterRequest,
    ) -> Option<impl std::future::Future<Output = ClusterResponse> + '_> {
        self.on_leader_naming(request)
            .map(|forward| async move { forward.await.0 })
    }

    /// `on_leader`, also naming the node that answered (`None`: no leader was found).
    fn on_leader_naming(
        &self,
        request: ClusterRequest,
    ) -> Option<impl std::future::Future<Output = (ClusterResponse, Option<NodeId>)> + '_> {
        let leader = self.raft.status().current_leader;
        if leader == Some(self.node_id()) {
            return None;
        }
        Some(async move {
            // Right after a leader left or died there is none for an election's length.
            let deadline = tokio::time::Instant::now() + self.task_timeout();
            loop {
                let leader = self.raft.status().current_leader;
                if leader == Some(self.node_id()) {
                    let answer = Box::pin(self.handle(self.node_id(), request)).await;
                    return (answer, leader);
                }
                if let Some((leader, addr)) =
                    leader.and_then(|l| self.raft.member_addr(l).map(|a| (l, a)))
                {
                    let answer = self
                        .call(&addr, leader, &request)
                        .await
                        .unwrap_or_else(ClusterResponse::Refused);
                    return (answer, Some(leader));
                }
                if tokio::time::Instant::now() >= deadline {
                    let refused = "no leader is known right now; retry in a few seconds";
                    return (ClusterResponse::Refused(refused.into()), None);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// One request to the node at `addr` (`to`: its id, or `ANY_NODE`).
    pub async fn call(
        &self,
        addr: &str,
        to: NodeId,
        request: &ClusterRequest,
    ) -> Result<ClusterResponse, String> {
        self.call_within(addr, to, request, self.task_timeout())
            .await
    }

    pub async fn call_within(
        &self,
        addr: &str,
        to: NodeId,
        request: &ClusterRequest,
        timeout: Duration,
    ) -> Result<ClusterResponse, String> {
        let answer = self
            .raft
            .call_app(addr, to, protocol::encode(request), timeout)
            .await?;
        protocol::decode(&answer)
    }

    /// Asks the leader (wherever it is) to run `request`.
    pub async fn ask_leader(&self, request: ClusterRequest) -> ClusterResponse {
        match self.on_leader(request.clone()) {
            Some(forward) => forward.await,
            None => self.handle(self.node_id(), request).await,
        }
    }

    /// What a node at a seed address says about itself.
    pub async fn probe(&self, addr: &str) -> Result<NodeInfo, String> {
        match self.call(addr, ANY_NODE, &ClusterRequest::Info).await? {
            ClusterResponse::Info(info) => Ok(*info),
            other => Err(format!("{addr} answered {other:?}")),
        }
    }
}
