//! The router: delivers stanzas by their `to` address.
//!
//! Full JIDs bound on this node go straight to their session; everything else
//! for a local account goes to that account's user actor, which applies the
//! RFC 6121 delivery rules; an account with no resource anywhere gets the RFC 6121
//! 8.5 decision (`im::delivery`). The routing table itself lives in the replicated
//! state machine; the router keeps only the handles of this node's sessions and user
//! actors, and reacts to routing changes the state machine reports (a bind elsewhere
//! that replaced one of ours ends ours with `<conflict/>`).
//!
//! It knows no feature: block lists, carbons, offline storage and presence fan-out
//! take part through the delivery hooks they register (`bus::hooks`), and user actors
//! are started by the spawner the node hands it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use chorus_raft::{RaftNode, ReadError, StateEvent, StateReader};

use crate::bus::hooks::{Hooks, Screen};
use crate::bus::*;
use crate::cluster::link::{LinkEvent, Outgoing};
use crate::cluster::protocol::{PeerMessage, UserMessage};
use crate::cluster::Cluster;
use crate::im::delivery;
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaErrorKind, StreamErrorKind};
use crate::xmpp::stanza;
use remote_nodes::RemoteNodes;

mod remote_nodes;

/// What a stream hears when a bind elsewhere replaced it.
const REPLACED: &str = "replaced by a new connection";
/// What a stream hears when this node's routes were dropped under it.
const LOST_SESSION: &str = "this node lost its session in the cluster; reconnect";

pub struct Router {
    node_id: u64,
    domain: String,
    raft: Arc<RaftNode>,
    cluster: Arc<Cluster>,
    state: StateReader,
    hooks: Hooks,
    spawn_user: UserSpawner,
    sessions: HashMap<String, SessionHandle>,
    /// Routes on this node with no live stream at the last sweep: unbound if still so at
    /// the next one (the grace covers a bind whose session has not registered yet).
    ghost_suspects: std::collections::HashSet<(String, String)>,
    users: HashMap<String, (UserHandle, usize)>,
    /// Asked from `&self` paths; the actor runs on one thread.
    remote_nodes: RefCell<RemoteNodes>,
    stats: RouterStats,
}

impl Router {
    pub fn new(
        cluster: Arc<Cluster>,
        domain: String,
        hooks: Hooks,
        spawn_user: UserSpawner,
    ) -> Self {
        let raft = cluster.raft.clone();
        Router {
            node_id: raft.node_id(),
            domain,
            state: raft.state(),
            raft,
            cluster,
            hooks,
            spawn_user,
            sessions: HashMap::new(),
            ghost_suspects: Default::default(),
            users: HashMap::new(),
            remote_nodes: RefCell::default(),
            stats: RouterStats::default(),
        }
    }

    /// What features use to reach the router.
    pub fn port(addr: &Addr<Router>) -> RouterPort {
        RouterPort::new(
            addr.clone().recipient(),
            addr.clone().recipient(),
            addr.clone().recipient(),
        )
    }

    /// Start the router in `ctx` (made first, so that the hooks and user actors it is
    /// built from could be given its address) and feed it the state machine's routing
    /// events.
    pub fn start_in(ctx: Context<Router>, router: Router) -> Addr<Router> {
        let (cluster, raft) = (router.cluster.clone(), router.raft.clone());
        let addr = ctx.run(router);
        cluster.links.set_inbound(addr.clone().recipient());
        let mut serving = cluster.watch_serving();
        let (router, c) = (addr.clone(), cluster.clone());
        tokio::spawn(async move {
            while serving.changed().await.is_ok() {
                if !*serving.borrow_and_update() {
                    router.do_send(DisconnectAll {
                        text: c.kick_reason(),
                    });
                }
            }
        });
        let mut events = raft.subscribe();
        let router = addr.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(event) => router.do_send(Applied(event)),
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "routing events lagged; reconciling sessions with the routing table"
                        );
                        router.do_send(Reconcile);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        addr
    }

    /// Delivers by `to`: to a local session or user actor, over a peer link to the node
    /// that holds the recipient, or by the rules for an absent recipient. A stanza that
    /// came over a peer link (`from_peer`) is never sent on again.
    fn route(&mut self, ctx: &mut Context<Self>, stanza: Element, from_peer: bool) {
        let Some(kind) = stanza::kind(&stanza) else {
            return;
        };
        let stanza_type = stanza
            .attr("type")
            .unwrap_or(stanza::default_type(kind))
            .to_string();
        let Some(to) = stanza.attr("to").and_then(|t| jid::Jid::new(t).ok()) else {
            tracing::debug!("router got a stanza without a valid to; dropped");
            return;
        };
        if to.domain().as_str() != self.domain {
            // No server-to-server federation yet.
            return self.bounce(ctx, &stanza, StanzaErrorKind::RemoteServerNotFound);
        }
        if to.node().is_none() {
            tracing::debug!(to = %to, "stanza for the domain reached the router; dropped");
            return;
        }
        let bare = to.to_bare().to_string();
        // Before every local path (session, user actor, offline store).
        match self.hooks.screen(&bare, &stanza, kind) {
            Ok(Screen::Pass) => {}
            Ok(Screen::Drop(reason)) => {
                tracing::debug!(to = %to, reason, "stanza dropped by a delivery hook");
                return;
            }
            Ok(Screen::Bounce(reason)) => {
                tracing::debug!(to = %to, reason, "stanza refused by a delivery hook");
                return self.bounce(ctx, &stanza, StanzaErrorKind::ServiceUnavailable);
            }
            Err(e) => return self.read_failed(ctx, &stanza, &e),
        }
        self.stats.routed += 1;
        if to.is_full() {
            if let Some(handle) = self.sessions.get(to.as_str()) {
                if let Some((user, _)) = self.users.get(&bare) {
                    for event in self.hooks.delivered(&bare, to.as_str(), &stanza) {
                        user.do_send(event);
                    }
                }
                deliver_or_kick(handle, stanza);
                return;
            }
            if !from_peer {
                match self.state.route(to.as_str()) {
                    Ok(Some(route)) => {
                        if route.node != self.node_id && self.forward(route.node, &stanza) {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return self.read_failed(ctx, &stanza, &e),
                }
            }
        }
        let probe = kind == stanza::StanzaKind::Presence && stanza.attr("type") == Some("probe");
        let local_user = self.users.contains_key(&bare);
        // The routing-table scan is only needed when another node may have to act: for a
        // probe (each node answers for its own resources) or when no stream of the account
        // is here. A stanza from a peer is never sent on.
        let remote_nodes = if from_peer || (local_user && !probe) {
            Vec::new()
        } else {
            match self.remote_nodes_of(&bare) {
                Ok(nodes) => nodes,
                Err(e) => return self.read_failed(ctx, &stanza, &e),
            }
        };
        if probe {
            for node in &remote_nodes {
                self.forward(*node, &stanza);
            }
        }
        if let Some((user, _)) = self.users.get(&bare) {
            user.do_send(
                ForUser {
                    stanza,
                    kind,
                    missing_resource: to.is_full(),
                }
                .into(),
            );
            return;
        }
        if probe && !remote_nodes.is_empty() {
            return;
        }
        // One node holding the account's resources decides for all of them.
        for node in &remote_nodes {
            if self.forward(*node, &stanza) {
                return;
            }
        }
        let exists = match self.state.user(&bare) {
            Ok(record) => record.is_some(),
            Err(e) => return self.read_failed(ctx, &stanza, &e),
        };
        let decision = if !exists {
            delivery::to_no_such_user(kind, &stanza_type)
        } else if to.is_full() {
            delivery::to_missing_resource(kind, &stanza_type, &[])
        } else {
            delivery::to_bare(kind, &stanza_type, &[])
        };
        tracing::debug!(to = %to, ?decision, "delivery decision");
        match decision.0 {
            delivery::Verdict::Bounce(kind) => self.bounce(ctx, &stanza, kind),
            delivery::Verdict::Offline => {
                if let Some(stanza) = self.hooks.keep_for_later(&bare, stanza) {
                    self.bounce(ctx, &stanza, StanzaErrorKind::ServiceUnavailable);
                }
            }
            delivery::Verdict::HandleForUser => {
                self.bounce(ctx, &stanza, StanzaErrorKind::ServiceUnavailable)
            }
            _ => {}
        }
    }

    /// Routes this node holds in the table without a live stream (an unbind that failed
    /// to commit, say during a partition) are unbound, so that the routing table comes
    /// to equal the set of live client streams.
    fn sweep_ghosts(&mut self) {
        if !self.cluster.serving() {
            return;
        }
        let mut missing = std::collections::HashSet::new();
        let routes = match self.state.routes_on_node(self.node_id) {
            Ok(routes) => routes,
            // Nothing is unbound on a read that failed; the next sweep looks again.
            Err(_) => return,
        };
        for (full_jid, route) in routes {
            let live = self
                .sessions
                .get(&full_jid)
                .is_some_and(|h| h.session_id == route.session);
            if live {
                continue;
            }
            let key = (full_jid, route.session);
            if self.ghost_suspects.contains(&key) {
                tracing::info!(jid = %key.0, "unbinding a route with no live stream");
                let raft = self.raft.clone();
                let (full_jid, session) = key.clone();
                tokio::spawn(async move {
                    let _ = raft
                        .propose(chorus_raft::Command::UnbindResource { full_jid, session })
                        .await;
                });
            }
            missing.insert(key);
        }
        self.ghost_suspects = missing;
    }

    /// The routing table routes this session's full JID to this very session.
    fn holds_route(&self, handle: &SessionHandle) -> Result<bool, ReadError> {
        Ok(self
            .state
            .route(&handle.full_jid)?
            .is_some_and(|r| r.node == self.node_id && r.session == handle.session_id))
    }

    /// Sends a stanza to another node's router; false when the link cannot take it now.
    fn forward(&self, node: u64, stanza: &Element) -> bool {
        let msg = Outgoing::carrying(
            PeerMessage::Route {
                xml: stanza.to_xml(),
            },
            stanza::available_presence_from(stanza),
        );
        let sent = self.cluster.links.send_outgoing(node, msg);
        tracing::trace!(node, ?sent, "stanza forwarded");
        sent.is_ok()
    }

    /// Other nodes that hold routes of this account, smallest id first.
    fn remote_nodes_of(&self, bare: &str) -> Result<Vec<u64>, ReadError> {
        self.remote_nodes
            .borrow_mut()
            .of(&self.state, self.node_id, bare)
    }

    /// Sends a user-actor message to the other nodes holding that account's resources.
    fn to_remote_users(&self, user: &str, msg: UserMessage) {
        let peer = PeerMessage::ToUser {
            user: user.to_string(),
            msg,
        };
        let nodes = self.remote_nodes_of(user).unwrap_or_else(|e| {
            tracing::error!(%user, error = %e, "routes unreadable; the account's other nodes not told");
            Vec::new()
        });
        for node in nodes {
            let sent = self.cluster.links.send(node, peer.clone());
            tracing::trace!(node, %user, ?sent, "user message forwarded");
        }
    }

    /// A node's routes were dropped at once (it crashed, was cut off or removed): each
    /// node tells its own local contacts of those resources, so each hears exactly once.
    fn routes_lost(&mut self, node: u64, routes: Vec<(String, chorus_raft::Route)>) {
        self.cluster.resources.forget_node(node);
        for (full_jid, route) in routes {
            if route.node == self.node_id {
                self.kick_session(
                    &full_jid,
                    &route.session,
                    StreamErrorKind::SystemShutdown,
                    LOST_SESSION,
                );
                continue;
            }
            self.tell_local_contacts_gone(&full_jid);
        }
    }

    /// A stream on another node has ended (its route is gone): unavailable presence from
    /// it to this node's streams of its subscribers and of its own account. The node that
    /// held the stream told its own local streams; every other node does this for its own.
    fn tell_local_contacts_gone(&self, full_jid: &str) {
        let user = bare_of(full_jid);
        let mut audience = self.hooks.presence_audience(&user).unwrap_or_else(|e| {
            // Its contacts here miss this unavailable; they see it at their next login.
            tracing::error!(jid = %full_jid, error = %e, "state read failed; contacts not told a stream ended");
            Vec::new()
        });
        audience.push(user.clone());
        let unavailable = Element::new("presence", crate::xmpp::ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", full_jid);
        for contact in audience {
            if let Some((actor, _)) = self.users.get(&contact) {
                let mut copy = unavailable.clone();
                copy.set_attr("to", contact.as_str());
                actor.do_send(LocalPresence(copy).into());
            }
        }
    }

    /// A state read failed while deciding on this stanza: it is refused, never read as
    /// "not blocked" or "no such user".
    fn read_failed(&mut self, ctx: &mut Context<Self>, stanza: &Element, error: &ReadError) {
        tracing::error!(error = %error, "state read failed; stanza refused");
        self.stats.read_refusals += 1;
        self.bounce(ctx, stanza, StanzaErrorKind::InternalServerError);
    }

    fn bounce(&mut self, ctx: &mut Context<Self>, stanza: &Element, kind: StanzaErrorKind) {
        if stanza.attr("type") == Some("error") || stanza.attr("from").is_none() {
            return;
        }
        self.stats.bounced += 1;
        let reply = error_reply(stanza, kind, None);
        ctx.notify(RouteStanza(reply));
    }

    fn kick_session(
        &self,
        full_jid: &str,
        session_id: &str,
        condition: StreamErrorKind,
        text: &str,
    ) {
        if let Some(handle) = self.sessions.get(full_jid) {
            if handle.session_id == session_id {
                handle.kick.do_send(Kick {
                    condition,
                    text: Some(text.to_string()),
                });
            }
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.cluster.failure_timeout(), |act, _| act.sweep_ghosts());
    }
}

impl Handler<Register> for Router {
    type Result = ();
    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        let handle = msg.0;
        let Ok(full) = jid::FullJid::new(&handle.full_jid) else {
            return;
        };
        // The bind was applied here before the session started, but a bind elsewhere (or
        // this node's routes being dropped) may have followed before it registered: the
        // event that ended the stream then found no session here to end, and it would
        // live on with no route (found by the chaos suite: two live streams of one full
        // JID).
        if !self.holds_route(&handle).unwrap_or(false) {
            // A route that cannot be read is not taken as held: the client binds again.
            let (condition, text) = match self.state.route(&handle.full_jid) {
                Ok(Some(_)) => (StreamErrorKind::Conflict, REPLACED),
                Ok(None) | Err(_) => (StreamErrorKind::SystemShutdown, LOST_SESSION),
            };
            handle.kick.do_send(Kick {
                condition,
                text: Some(text.into()),
            });
            return;
        }
        self.cluster.sessions.store(
            self.sessions.len() as u64 + 1,
            std::sync::atomic::Ordering::Relaxed,
        );
        let bare = full.to_bare().to_string();
        if let Some(old) = self
            .sessions
            .insert(handle.full_jid.clone(), handle.clone())
        {
            if old.session_id != handle.session_id {
                // The Raft event normally does this; this covers a lagged event stream.
                old.kick.do_send(Kick {
                    condition: StreamErrorKind::Conflict,
                    text: Some(REPLACED.into()),
                });
                self.users
                    .entry(bare.clone())
                    .and_modify(|(_, n)| *n = n.saturating_sub(1));
            }
        }
        let spawn = self.spawn_user.clone();
        let entry = self
            .users
            .entry(bare.clone())
            .or_insert_with(|| (spawn(&bare), 0));
        entry.1 += 1;
        entry.0.do_send(AddResource(handle).into());
    }
}

impl Handler<Unregister> for Router {
    type Result = ();
    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if self
            .sessions
            .get(&msg.full_jid)
            .is_none_or(|h| h.session_id != msg.session_id)
        {
            return;
        }
        self.sessions.remove(&msg.full_jid);
        self.cluster.sessions.store(
            self.sessions.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let Ok(full) = jid::FullJid::new(&msg.full_jid) else {
            return;
        };
        let bare = full.to_bare().to_string();
        if let Some((user, count)) = self.users.get_mut(&bare) {
            user.do_send(
                RemoveResource {
                    full_jid: msg.full_jid,
                    session_id: msg.session_id,
                }
                .into(),
            );
            *count = count.saturating_sub(1);
            if *count == 0 {
                user.do_send(Stop.into());
                self.users.remove(&bare);
            }
        }
    }
}

/// Messages that only the user actor of an online user acts on.
macro_rules! to_user_actor {
    ($msg:ty, $user:expr) => {
        impl Handler<$msg> for Router {
            type Result = ();
            fn handle(&mut self, msg: $msg, _: &mut Context<Self>) {
                #[allow(clippy::redundant_closure_call)]
                let user: String = ($user)(&msg);
                if let Some((actor, _)) = self.users.get(&user) {
                    actor.do_send(msg.into());
                }
            }
        }
    };
}

fn bare_of(full: &str) -> String {
    jid::Jid::new(full)
        .map(|j| j.to_bare().to_string())
        .unwrap_or_default()
}

impl Handler<ToResources> for Router {
    type Result = ();
    fn handle(&mut self, msg: ToResources, _: &mut Context<Self>) {
        let which = match msg.which {
            Which::RosterInterested => 0,
            Which::Available => 1,
            Which::BlocklistInterested => 2,
        };
        self.to_remote_users(
            &msg.user,
            UserMessage::ToResources {
                which,
                xml: msg.stanza.to_xml(),
            },
        );
        if let Some((actor, _)) = self.users.get(&msg.user) {
            actor.do_send(msg.into());
        }
    }
}

impl Handler<PresenceTo> for Router {
    type Result = ();
    fn handle(&mut self, msg: PresenceTo, _: &mut Context<Self>) {
        self.to_remote_users(
            &msg.user,
            UserMessage::PresenceTo {
                to: msg.to.clone(),
                available: msg.available,
            },
        );
        if let Some((actor, _)) = self.users.get(&msg.user) {
            actor.do_send(msg.into());
        }
    }
}

impl Handler<LinkEvent> for Router {
    type Result = ();
    fn handle(&mut self, event: LinkEvent, ctx: &mut Context<Self>) {
        match event {
            LinkEvent::Received { from, msg } => self.received(ctx, from, msg),
            LinkEvent::Returned { to, msgs } => self.returned(ctx, to, msgs),
        }
    }
}

impl Router {
    /// Messages that a peer never acknowledged (it went down or restarted) or that never
    /// left: chat is routed anew (by now the peer's routes are gone, so to another
    /// resource or to offline storage); a request gets `service-unavailable`, as for any
    /// absent resource; presence and carbon copies are dropped, since their moment has
    /// passed and a copy kept offline would be wrong.
    fn returned(&mut self, ctx: &mut Context<Self>, to: u64, msgs: Vec<PeerMessage>) {
        let mut again = 0;
        // Copies of one stanza to several resources on the dead node: routed anew once.
        let mut seen = std::collections::HashSet::new();
        for msg in msgs {
            let xml = match msg {
                PeerMessage::Route { xml } => xml,
                // A copy of a stanza that also went to a resource on another node: the
                // account has it.
                PeerMessage::Deliver { alone: false, .. } => continue,
                PeerMessage::Deliver { xml, .. } if seen.insert(xml.clone()) => xml,
                _ => continue,
            };
            let Ok(stanza) = Element::from_xml(&xml) else {
                continue;
            };
            match stanza.name() {
                "message" if self.hooks.reroutable(&stanza) => {
                    again += 1;
                    self.route(ctx, stanza, false);
                }
                "iq" if matches!(stanza.attr("type"), Some("get" | "set")) => {
                    self.bounce(ctx, &stanza, StanzaErrorKind::ServiceUnavailable)
                }
                _ => {}
            }
        }
        tracing::info!(
            peer = to,
            messages = again,
            "messages a peer did not take routed anew"
        );
    }

    fn received(&mut self, ctx: &mut Context<Self>, from: u64, msg: PeerMessage) {
        tracing::trace!(from, ?msg, "from peer");
        let parse = |xml: &str| match Element::from_xml(xml) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(peer = from, error = %e, "unparsable stanza from a peer; dropped");
                None
            }
        };
        match &msg {
            PeerMessage::Route { xml } => {
                if let Some(stanza) = parse(xml) {
                    self.route(ctx, stanza, true);
                }
            }
            PeerMessage::Deliver { full_jid, xml, .. } => {
                let Some(stanza) = parse(xml) else { return };
                match self.sessions.get(full_jid) {
                    Some(handle) => deliver_or_kick(handle, stanza),
                    // The stream went away while the message crossed the link: a message
                    // is delivered by the rules for an absent resource (offline storage)
                    // rather than dropped; presence and iq for it have no one to go to.
                    None if stanza.name() == "message" => self.route(ctx, stanza, true),
                    None => {}
                }
            }
            PeerMessage::ToUser { user, msg: m } => {
                let Some((actor, _)) = self.users.get(user) else {
                    return;
                };
                match m {
                    UserMessage::ToResources { which, xml } => {
                        let which = match which {
                            0 => Which::RosterInterested,
                            1 => Which::Available,
                            _ => Which::BlocklistInterested,
                        };
                        if let Some(stanza) = parse(xml) {
                            actor.do_send(
                                ToResources {
                                    user: user.clone(),
                                    which,
                                    stanza,
                                }
                                .into(),
                            );
                        }
                    }
                    UserMessage::PresenceTo { to, available } => actor.do_send(
                        PresenceTo {
                            user: user.clone(),
                            to: to.clone(),
                            available: *available,
                        }
                        .into(),
                    ),
                }
            }
            // Resource state is kept by the link itself.
            PeerMessage::Resource(_) | PeerMessage::ResourceGone { .. } => {}
        }
    }
}

impl Handler<PresenceLocal> for Router {
    type Result = ();
    fn handle(&mut self, msg: PresenceLocal, _: &mut Context<Self>) {
        if let Some((actor, _)) = self.users.get(&msg.user) {
            actor.do_send(LocalPresence(msg.stanza).into());
        }
    }
}

impl Handler<DisconnectAll> for Router {
    type Result = ();
    fn handle(&mut self, msg: DisconnectAll, _: &mut Context<Self>) {
        for handle in self.sessions.values() {
            handle.kick.do_send(Kick {
                condition: StreamErrorKind::SystemShutdown,
                text: Some(msg.text.clone()),
            });
        }
    }
}
to_user_actor!(OwnPresence, |m: &OwnPresence| bare_of(&m.full_jid));
to_user_actor!(Directed, |m: &Directed| bare_of(&m.full_jid));
to_user_actor!(RosterInterest, |m: &RosterInterest| bare_of(&m.full_jid));
to_user_actor!(BlocklistInterest, |m: &BlocklistInterest| bare_of(
    &m.full_jid
));
to_user_actor!(CarbonsEnabled, |m: &CarbonsEnabled| bare_of(&m.full_jid));
to_user_actor!(Carbon, |m: &Carbon| m.account.clone());

impl Handler<RouteStanza> for Router {
    type Result = ();
    fn handle(&mut self, msg: RouteStanza, ctx: &mut Context<Self>) {
        self.route(ctx, msg.0, false);
    }
}

impl Handler<ShutdownSessions> for Router {
    type Result = ();
    fn handle(&mut self, _: ShutdownSessions, _: &mut Context<Self>) {
        for handle in self.sessions.values() {
            handle.kick.do_send(Kick {
                condition: StreamErrorKind::SystemShutdown,
                text: None,
            });
        }
    }
}

impl Handler<GetStats> for Router {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats.clone();
        stats.sessions = self.sessions.len();
        stats.online_users = self.users.len();
        let remote = self.remote_nodes.borrow();
        (stats.remote_nodes_remembered, stats.remote_nodes_read) = (remote.hits, remote.reads);
        MessageResult(stats)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Applied(StateEvent);

impl Handler<Applied> for Router {
    type Result = ();
    fn handle(&mut self, msg: Applied, _: &mut Context<Self>) {
        self.stats.state_events += 1;
        match msg.0 {
            StateEvent::RouteReplaced { full_jid, old, new } => {
                self.cluster
                    .resources
                    .forget(&full_jid, Some(old.session.as_str()));
                if old.node == self.node_id && old.session != new.session {
                    self.kick_session(&full_jid, &old.session, StreamErrorKind::Conflict, REPLACED);
                }
            }
            StateEvent::RouteRemoved { full_jid, route } => {
                self.cluster
                    .resources
                    .forget(&full_jid, Some(route.session.as_str()));
                if route.node != self.node_id {
                    self.tell_local_contacts_gone(&full_jid);
                }
            }
            StateEvent::RoutesLost { node, routes } => self.routes_lost(node, routes),
            StateEvent::NodeDown { .. } | StateEvent::NodeUp { .. } => {}
            StateEvent::Queued { user, queue, .. } => {
                if let Some((actor, _)) = self.users.get(&user) {
                    for event in self.hooks.queued(&user, &queue) {
                        actor.do_send(event);
                    }
                }
            }
            StateEvent::DataChanged { .. } => {}
            StateEvent::UserDeleted { user } => {
                self.end_sessions_of(&user, None, "account deleted");
            }
            StateEvent::PasswordChanged { user, keep_session } => {
                if self.cluster.settings.auth.password_change_ends_sessions {
                    self.end_sessions_of(
                        &user,
                        keep_session.as_deref(),
                        "the account's password was changed; log in again",
                    );
                }
            }
        }
    }
}

impl Router {
    /// End this node's streams of `user` (but `keep`'s) with `<not-authorized/>`.
    fn end_sessions_of(&self, user: &str, keep: Option<&str>, text: &str) {
        let prefix = format!("{user}/");
        for handle in self
            .sessions
            .values()
            .filter(|h| h.full_jid.starts_with(&prefix) && Some(h.session_id.as_str()) != keep)
        {
            handle.kick.do_send(Kick {
                condition: StreamErrorKind::NotAuthorized,
                text: Some(text.into()),
            });
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Reconcile;

impl Handler<Reconcile> for Router {
    type Result = ();
    fn handle(&mut self, _: Reconcile, _: &mut Context<Self>) {
        for handle in self.sessions.values() {
            // Only a route known to be gone ends a stream here.
            if self.holds_route(handle) == Ok(false) {
                handle.kick.do_send(Kick {
                    condition: StreamErrorKind::Conflict,
                    text: Some(REPLACED.into()),
                });
            }
        }
    }
}
