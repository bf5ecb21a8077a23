//! One actor per online bare JID on this node: its connected resources and
//! their presence. It applies RFC 6121's presence rules (broadcast to
//! subscribers, probes, directed presence, unavailable on close or drop),
//! delivers stanzas for the bare JID by the rules in `im::delivery`, and
//! starts offline delivery at initial presence.
//!
//! Roster and offline state are read from the local Raft replica; every
//! stanza for another account goes out through the router.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use actix::prelude::*;
use chorus_raft::RaftNode;

use crate::bus::hooks::Hooks;
use crate::bus::{
    AddResource, BlocklistInterest, Carbon, CarbonsEnabled, Directed, ForUser, LocalPresence,
    OfflineQueued, OwnPresence, PresenceLocal, PresenceTo, RemoveResource, RosterInterest,
    RouteStanza, SessionHandle, Stop, ToResources, UserEvent, UserSpawner, Which,
};
use crate::cluster::link::Outgoing;
use crate::cluster::protocol::{PeerMessage, ResourceState};
use crate::cluster::Cluster;
use crate::im::delivery::{self, ResourceView, Verdict};
use crate::im::{offline, presence, roster};
use crate::xep::carbons;
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaErrorKind};
use crate::xmpp::ns;
use crate::xmpp::stanza::{self, StanzaKind};

struct Resource {
    handle: SessionHandle,
    available: bool,
    priority: i8,
    /// The last available presence, `from` the full JID, without `to`.
    last: Option<Element>,
    roster_interest: bool,
    /// XEP-0191: this stream asked for the block list, so it gets its pushes.
    blocklist_interest: bool,
    /// XEP-0280 carbons enabled on this stream.
    carbons: bool,
    /// Entities this resource sent available presence to directly (RFC 6121 4.6).
    directed: BTreeSet<String>,
}

pub struct UserActor {
    bare: String,
    /// Boxed: a map's first node has room for eleven entries, and most accounts have one
    /// resource (2.7 KiB per online account unboxed, docs/benchmarks.md).
    resources: BTreeMap<String, Box<Resource>>,
    raft: Arc<RaftNode>,
    /// Other nodes' resources of this account, and the links to reach them.
    cluster: Arc<Cluster>,
    /// Where stanzas for other accounts go.
    router: Recipient<RouteStanza>,
    /// Presence for other accounts' streams on this node only.
    local: Recipient<PresenceLocal>,
    /// The delivery hooks: who hears this user's presence, where kept messages go.
    hooks: Hooks,
    delivering_offline: bool,
    offline_again: bool,
}

impl UserActor {
    pub fn new(
        bare: String,
        cluster: Arc<Cluster>,
        router: Recipient<RouteStanza>,
        local: Recipient<PresenceLocal>,
        hooks: Hooks,
    ) -> Self {
        UserActor {
            bare,
            resources: BTreeMap::new(),
            raft: cluster.raft.clone(),
            cluster,
            router,
            local,
            hooks,
            delivering_offline: false,
            offline_again: false,
        }
    }

    /// Every resource of the account, wherever it is connected.
    fn views(&self) -> Vec<ResourceView> {
        let mut views: Vec<ResourceView> = self
            .resources
            .iter()
            .map(|(jid, r)| ResourceView {
                full_jid: jid.clone(),
                available: r.available,
                priority: r.priority,
            })
            .collect();
        views.extend(self.remote().into_iter().map(|r| ResourceView {
            full_jid: r.full_jid,
            available: r.available,
            priority: r.priority,
        }));
        views
    }

    /// This account's resources on other nodes.
    fn remote(&self) -> Vec<ResourceState> {
        self.cluster
            .resources
            .remote_of(&self.raft.state(), &self.bare)
            .into_iter()
            .filter(|r| !self.resources.contains_key(&r.full_jid))
            .collect()
    }

    /// Writes a stanza to one of this account's resources on another node; false when the
    /// link cannot take it now.
    fn deliver_remote(&self, r: &ResourceState, stanza: &Element, alone: bool) -> bool {
        let msg = PeerMessage::Deliver {
            full_jid: r.full_jid.clone(),
            xml: stanza.to_xml(),
            alone,
        };
        let msg = Outgoing::carrying(msg, stanza::available_presence_from(stanza));
        let sent = self.cluster.links.send_outgoing(r.node, msg).is_ok();
        if !sent {
            tracing::debug!(to = %r.full_jid, "peer link down; stanza for a remote resource not sent");
        }
        sent
    }

    /// Tells the other nodes what they need to know of one local resource.
    fn publish(&self, full_jid: &str) {
        let Some(r) = self.resources.get(full_jid) else {
            return;
        };
        let state = ResourceState {
            full_jid: full_jid.to_string(),
            session: r.handle.session_id.clone(),
            node: self.cluster.node_id(),
            available: r.available,
            priority: r.priority,
            carbons: r.carbons,
        };
        self.cluster.resources.set_local(state.clone());
        self.cluster.links.broadcast(&PeerMessage::Resource(state));
    }

    fn route(&self, stanza: Element) {
        self.router.do_send(RouteStanza(stanza));
    }

    fn deliver_to(&self, full_jid: &str, mut stanza: Element) {
        if let Some(r) = self.resources.get(full_jid) {
            stanza.set_attr("to", full_jid);
            crate::bus::deliver_or_kick(&r.handle, stanza);
        }
    }

    fn act(&self, stanza: Element, (verdict, reason): delivery::Decision) {
        tracing::debug!(user = %self.bare, ?verdict, reason, "delivery decision");
        match verdict {
            Verdict::Deliver(targets) => {
                let remote = self.remote();
                let mut handed = false;
                for target in &targets {
                    if let Some(r) = self.resources.get(target) {
                        // The copy keeps the `to` the sender used (RFC 6121 8.5.2.1.1).
                        crate::bus::deliver_or_kick(&r.handle, stanza.clone());
                        handed = true;
                    } else if let Some(r) = remote.iter().find(|r| &r.full_jid == target) {
                        // Whether any copy goes elsewhere than r's node: if r's node dies
                        // before taking it, the account has it only if so.
                        let alone = targets.iter().all(|t| {
                            !self.resources.contains_key(t)
                                && remote.iter().any(|o| &o.full_jid == t && o.node == r.node)
                        });
                        handed |= self.deliver_remote(r, &stanza, alone);
                    }
                }
                if !handed && stanza.name() == "message" {
                    // Every chosen resource sits behind a link that is down: kept, not lost.
                    return self.keep_offline(stanza);
                }
                if stanza.name() == "message" {
                    self.carbons(carbons::Direction::Received, &targets, &stanza);
                }
            }
            Verdict::Offline => self.keep_offline(stanza),
            Verdict::Bounce(kind) => self.bounce(&stanza, kind),
            Verdict::HandleForUser => self.bounce(&stanza, StanzaErrorKind::ServiceUnavailable),
            Verdict::Ignore => {}
        }
    }

    /// XEP-0280: a copy for each carbons-enabled stream that did not send or
    /// receive the original itself.
    fn carbons(&self, direction: carbons::Direction, except: &[String], stanza: &Element) {
        let (copy, reason) = carbons::should_copy(stanza);
        if !copy {
            tracing::trace!(user = %self.bare, reason, "no carbons");
            return;
        }
        for (full, r) in &self.resources {
            if r.carbons && !except.contains(full) {
                let carbon = carbons::wrap(direction, &self.bare, full, stanza);
                crate::bus::deliver_or_kick(&r.handle, carbon);
            }
        }
        for r in self.remote() {
            if r.carbons && !except.contains(&r.full_jid) {
                let carbon = carbons::wrap(direction, &self.bare, &r.full_jid, stanza);
                self.deliver_remote(&r, &carbon, true);
            }
        }
    }

    fn keep_offline(&self, stanza: Element) {
        if let Some(stanza) = self.hooks.keep_for_later(&self.bare, stanza) {
            self.bounce(&stanza, StanzaErrorKind::ServiceUnavailable);
        }
    }

    fn bounce(&self, stanza: &Element, kind: StanzaErrorKind) {
        if stanza.attr("type") != Some("error") {
            self.route(error_reply(stanza, kind, None));
        }
    }

    /// RFC 6121 4.2.2, 4.4.2: a resource's presence goes to every contact with a
    /// `from` or `both` subscription and to all the user's available resources.
    ///
    /// `local_only`: the stream has ended. Its route's removal, committed through Raft, makes
    /// every other node tell its own streams (`Router::tell_local_contacts_gone`), which also
    /// reaches them after a partition that would have lost a routed stanza; so here only
    /// this node's streams are told.
    fn broadcast(
        &self,
        from_full: &str,
        stanza: &Element,
        extra: &BTreeSet<String>,
        local_only: bool,
    ) {
        // The subscribers, less those the user blocked (XEP-0191 3.3: a blocked contact
        // keeps the unavailable presence it got on block). Unreadable: no contact hears
        // it (it could be one the user blocked); the user's own streams still do.
        let contacts = self.hooks.presence_audience(&self.bare).unwrap_or_else(|e| {
            tracing::error!(user = %self.bare, error = %e, "state read failed; presence not broadcast to contacts");
            Vec::new()
        });
        for contact in contacts {
            let mut copy = stanza.clone();
            copy.set_attr("from", from_full);
            copy.set_attr("to", contact.as_str());
            if local_only {
                self.local.do_send(PresenceLocal {
                    user: contact,
                    stanza: copy,
                });
            } else {
                self.route(copy);
            }
        }
        for to in extra {
            let mut copy = stanza.clone();
            copy.set_attr("from", from_full);
            copy.set_attr("to", to.as_str());
            self.route(copy);
        }
        let own: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, r)| r.available)
            .map(|(j, _)| j.clone())
            .collect();
        for full in own {
            let mut copy = stanza.clone();
            copy.set_attr("from", from_full);
            self.deliver_to(&full, copy);
        }
        for r in self
            .remote()
            .into_iter()
            .filter(|r| r.available && !local_only)
        {
            let mut copy = stanza.clone();
            copy.set_attr("from", from_full);
            copy.set_attr("to", r.full_jid.as_str());
            self.deliver_remote(&r, &copy, true);
        }
    }

    /// What happens once a resource becomes available for the first time.
    fn initial_presence(&mut self, ctx: &mut Context<Self>, full_jid: &str) {
        let roster = roster::load(&self.raft.state(), &self.bare).unwrap_or_else(|e| {
            // No probes and no waiting requests this time: the contacts' presence still
            // arrives as they change it, and the requests at the next login.
            tracing::error!(user = %self.bare, error = %e, "roster unreadable at initial presence");
            roster::Roster::default()
        });
        // RFC 6121 4.3: the server probes the contacts the user is subscribed to.
        for contact in presence::probe_targets(&roster) {
            self.router
                .do_send(RouteStanza(probe_stanza(&contact, full_jid)));
        }
        // RFC 6121 3.1.3: requests that arrived while offline are delivered now.
        // They keep the bare `to` they were sent with, as live requests do.
        if let Some(r) = self.resources.get(full_jid) {
            for xml in roster.pending_in.values() {
                if let Ok(request) = Element::from_xml(xml) {
                    crate::bus::deliver_or_kick(&r.handle, request);
                }
            }
        }
        let Some(r) = self.resources.get(full_jid) else {
            return;
        };
        if r.priority < 0 {
            return;
        }
        self.deliver_offline(ctx, full_jid.to_string());
    }

    /// Hand the offline queue to one resource. One delivery at a time: a
    /// message stored meanwhile (its commit raced the resource's initial
    /// presence) is picked up by a second round when the first ends.
    fn deliver_offline(&mut self, ctx: &mut Context<Self>, to: String) {
        if self.delivering_offline {
            self.offline_again = true;
            return;
        }
        let Some(r) = self.resources.get(&to) else {
            return;
        };
        self.delivering_offline = true;
        let (raft, user, session) = (self.raft.clone(), self.bare.clone(), r.handle.batch.clone());
        ctx.spawn(
            async move {
                let n = offline::deliver(&raft, &user, &to, &session).await;
                if n > 0 {
                    tracing::debug!(%user, %to, delivered = n, "offline messages delivered");
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.delivering_offline = false;
                if std::mem::take(&mut act.offline_again) {
                    act.offline_arrived(ctx);
                }
            }),
        );
    }

    /// A message was stored for later: deliver it now if a resource can take it.
    /// Every node holding a resource of the account hears of the message; only the node
    /// of the best resource (highest priority, then smallest full JID) delivers it.
    fn offline_arrived(&mut self, ctx: &mut Context<Self>) {
        let best = self
            .views()
            .into_iter()
            .filter(|r| r.available && r.priority >= 0)
            .min_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then(a.full_jid.cmp(&b.full_jid))
            })
            .map(|r| r.full_jid);
        if let Some(to) = best.filter(|to| self.resources.contains_key(to)) {
            self.deliver_offline(ctx, to);
        }
    }

    /// The resource went unavailable, by presence or by closing: tell everyone
    /// who had its presence (RFC 6121 4.5.2).
    fn went_unavailable(&mut self, full_jid: &str, stanza: Option<Element>) {
        let Some(r) = self.resources.get_mut(full_jid) else {
            return;
        };
        if !r.available {
            return;
        }
        r.available = false;
        r.last = None;
        let directed = std::mem::take(&mut r.directed);
        self.publish(full_jid);
        let closed = stanza.is_none();
        let stanza = stanza.unwrap_or_else(|| {
            Element::new("presence", ns::CLIENT).with_attr("type", "unavailable")
        });
        self.broadcast(full_jid, &stanza, &directed, closed);
        if !self.resources.values().any(|r| r.available) {
            let status = stanza.get_child("status", ns::CLIENT).map(|s| s.text());
            crate::xep::last_activity::record_logout(&self.raft, &self.bare, status);
        }
        // The resource itself gets its own unavailable presence (4.5.2), if still connected.
        let mut own = stanza;
        own.set_attr("from", full_jid);
        self.deliver_to(full_jid, own);
    }
}

/// The probe the server sends for a user's resource (RFC 6121 4.3.1).
fn probe_stanza(contact: &str, requester: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", "probe")
        .with_attr("from", requester)
        .with_attr("to", contact)
}

impl Actor for UserActor {
    type Context = Context<Self>;
}

/// How the router starts the actor of a user who just came online on this node.
pub fn spawner(
    cluster: Arc<Cluster>,
    router: Recipient<RouteStanza>,
    local: Recipient<PresenceLocal>,
    hooks: Hooks,
) -> UserSpawner {
    Arc::new(move |bare: &str| {
        UserActor::new(
            bare.to_string(),
            cluster.clone(),
            router.clone(),
            local.clone(),
            hooks.clone(),
        )
        .start()
        .recipient()
    })
}

/// A server-made probe (RFC 6121 4.3): `requester` wants this user's presence.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
struct Probe {
    requester: String,
}

impl Handler<UserEvent> for UserActor {
    type Result = ();
    fn handle(&mut self, event: UserEvent, ctx: &mut Context<Self>) {
        match event {
            UserEvent::AddResource(m) => Handler::handle(self, m, ctx),
            UserEvent::RemoveResource(m) => Handler::handle(self, m, ctx),
            UserEvent::ForUser(m) => Handler::handle(self, m, ctx),
            UserEvent::OwnPresence(m) => Handler::handle(self, m, ctx),
            UserEvent::Directed(m) => Handler::handle(self, m, ctx),
            UserEvent::PresenceTo(m) => Handler::handle(self, m, ctx),
            UserEvent::ToResources(m) => Handler::handle(self, m, ctx),
            UserEvent::RosterInterest(m) => Handler::handle(self, m, ctx),
            UserEvent::BlocklistInterest(m) => Handler::handle(self, m, ctx),
            UserEvent::CarbonsEnabled(m) => Handler::handle(self, m, ctx),
            UserEvent::Carbon(m) => Handler::handle(self, m, ctx),
            UserEvent::LocalPresence(m) => Handler::handle(self, m, ctx),
            UserEvent::OfflineQueued(m) => Handler::handle(self, m, ctx),
            UserEvent::Stop(m) => Handler::handle(self, m, ctx),
        }
    }
}

impl Handler<AddResource> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: AddResource, _: &mut Context<Self>) {
        let jid = msg.0.full_jid.clone();
        let resource = Resource {
            handle: msg.0,
            available: false,
            priority: 0,
            last: None,
            roster_interest: false,
            blocklist_interest: false,
            carbons: false,
            directed: BTreeSet::new(),
        };
        self.resources.insert(jid, Box::new(resource));
    }
}

impl Handler<RemoveResource> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: RemoveResource, _: &mut Context<Self>) {
        if self
            .resources
            .get(&msg.full_jid)
            .is_some_and(|r| r.handle.session_id == msg.session_id)
        {
            // A dropped connection counts as unavailable presence (RFC 6121 4.5.3.2).
            self.went_unavailable(&msg.full_jid, None);
            self.resources.remove(&msg.full_jid);
            if self
                .cluster
                .resources
                .remove_local(&msg.full_jid, &msg.session_id)
            {
                self.cluster.links.broadcast(&PeerMessage::ResourceGone {
                    full_jid: msg.full_jid,
                    session: msg.session_id,
                });
            }
        }
    }
}

impl Handler<OwnPresence> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: OwnPresence, ctx: &mut Context<Self>) {
        let Some(state) = presence::own_state(&msg.stanza) else {
            return;
        };
        let Some(r) = self.resources.get_mut(&msg.full_jid) else {
            return;
        };
        if r.handle.session_id != msg.session_id {
            return;
        }
        if !state.available {
            let mut stanza = msg.stanza;
            stanza.remove_attr("to");
            return self.went_unavailable(&msg.full_jid, Some(stanza));
        }
        let initial = !r.available;
        let now_eligible = state.priority >= 0 && r.priority < 0;
        r.available = true;
        r.priority = state.priority;
        let mut stanza = msg.stanza;
        stanza.remove_attr("to");
        stanza.set_attr("from", msg.full_jid.as_str());
        r.last = Some(stanza.clone());
        self.publish(&msg.full_jid);
        self.broadcast(&msg.full_jid, &stanza, &BTreeSet::new(), false);
        if initial {
            self.initial_presence(ctx, &msg.full_jid);
        } else if now_eligible {
            // A resource that raises its priority from negative can now take
            // what was kept while it could not (XEP-0160 section 4).
            self.deliver_offline(ctx, msg.full_jid);
        }
    }
}

impl Handler<Directed> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: Directed, _: &mut Context<Self>) {
        let Some(r) = self.resources.get_mut(&msg.full_jid) else {
            return;
        };
        if msg.available && r.available {
            r.directed.insert(msg.to);
        } else {
            r.directed.remove(&msg.to);
        }
    }
}

impl Handler<Probe> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: Probe, _: &mut Context<Self>) {
        // Only a subscriber gets an answer (RFC 6121 4.3.2): unreadable, no one does.
        let Ok(roster) = roster::load(&self.raft.state(), &self.bare) else {
            return;
        };
        let requester_bare = jid::Jid::new(&msg.requester)
            .map(|j| j.to_bare().to_string())
            .unwrap_or_default();
        if !roster
            .items
            .get(&requester_bare)
            .is_some_and(|i| i.subscription.has_from())
        {
            return;
        }
        for r in self.resources.values() {
            if let Some(last) = &r.last {
                let mut copy = last.clone();
                copy.set_attr("to", msg.requester.as_str());
                self.route(copy);
            }
        }
    }
}

impl Handler<PresenceTo> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: PresenceTo, _: &mut Context<Self>) {
        for (full, r) in &self.resources {
            let stanza = match (&r.last, msg.available) {
                (Some(last), true) => last.clone(),
                (Some(_), false) => Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", full.as_str()),
                (None, _) => continue,
            };
            let mut stanza = stanza;
            stanza.set_attr("to", msg.to.as_str());
            self.route(stanza);
        }
    }
}

impl Handler<ToResources> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: ToResources, _: &mut Context<Self>) {
        let targets: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, r)| match msg.which {
                Which::RosterInterested => r.roster_interest,
                Which::Available => r.available,
                Which::BlocklistInterested => r.blocklist_interest,
            })
            .map(|(j, _)| j.clone())
            .collect();
        for full in targets {
            self.deliver_to(&full, msg.stanza.clone());
        }
    }
}

impl Handler<BlocklistInterest> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: BlocklistInterest, _: &mut Context<Self>) {
        if let Some(r) = self.resources.get_mut(&msg.full_jid) {
            r.blocklist_interest = true;
        }
    }
}

impl Handler<RosterInterest> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: RosterInterest, _: &mut Context<Self>) {
        if let Some(r) = self.resources.get_mut(&msg.full_jid) {
            r.roster_interest = true;
        }
    }
}

impl Handler<ForUser> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: ForUser, ctx: &mut Context<Self>) {
        if msg.kind == StanzaKind::Presence && msg.stanza.attr("type") == Some("probe") {
            let requester = msg.stanza.attr("from").unwrap_or_default().to_string();
            let probe = Probe { requester };
            return <Self as Handler<Probe>>::handle(self, probe, ctx);
        }
        let stanza_type = msg
            .stanza
            .attr("type")
            .unwrap_or(stanza::default_type(msg.kind))
            .to_string();
        let views = self.views();
        let decision = if msg.missing_resource {
            delivery::to_missing_resource(msg.kind, &stanza_type, &views)
        } else {
            delivery::to_bare(msg.kind, &stanza_type, &views)
        };
        self.act(msg.stanza, decision);
    }
}

impl Handler<CarbonsEnabled> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: CarbonsEnabled, _: &mut Context<Self>) {
        if let Some(r) = self.resources.get_mut(&msg.full_jid) {
            r.carbons = msg.on;
            self.publish(&msg.full_jid);
        }
    }
}

impl Handler<Carbon> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: Carbon, _: &mut Context<Self>) {
        self.carbons(msg.direction, &[msg.full_jid], &msg.stanza);
    }
}

impl Handler<LocalPresence> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: LocalPresence, _: &mut Context<Self>) {
        let targets: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, r)| r.available)
            .map(|(j, _)| j.clone())
            .collect();
        for full in targets {
            self.deliver_to(&full, msg.0.clone());
        }
    }
}

impl Handler<OfflineQueued> for UserActor {
    type Result = ();
    fn handle(&mut self, _: OfflineQueued, ctx: &mut Context<Self>) {
        self.offline_arrived(ctx);
    }
}

impl Handler<Stop> for UserActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
