//! One actor per online bare JID on this node: its connected resources and
//! their presence. Stanzas for the bare JID come here, and the RFC 6121 rules
//! in `im::delivery` pick the resources that get them.
//!
//! The roster, subscriptions and offline queue join this actor in the next
//! issue; their state is written through Raft and read from the local replica.

use std::collections::BTreeMap;

use actix::prelude::*;

use crate::im::delivery::{self, ResourceView, Verdict};
use crate::router::messages::{PresenceChanged, RouteStanza, SessionHandle};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaErrorKind};
use crate::xmpp::stanza::StanzaKind;

struct Resource {
    handle: SessionHandle,
    available: bool,
    priority: i8,
}

pub struct UserActor {
    bare: String,
    resources: BTreeMap<String, Resource>,
    /// Where bounces and server answers go.
    router: Recipient<RouteStanza>,
}

impl UserActor {
    pub fn new(bare: String, router: Recipient<RouteStanza>) -> Self {
        UserActor {
            bare,
            resources: BTreeMap::new(),
            router,
        }
    }

    fn views(&self) -> Vec<ResourceView> {
        self.resources
            .iter()
            .map(|(jid, r)| ResourceView {
                full_jid: jid.clone(),
                available: r.available,
                priority: r.priority,
            })
            .collect()
    }

    fn act(&self, stanza: Element, (verdict, reason): delivery::Decision) {
        tracing::debug!(user = %self.bare, ?verdict, reason, "delivery decision");
        match verdict {
            Verdict::Deliver(targets) => {
                for target in targets {
                    if let Some(r) = self.resources.get(&target) {
                        // The copy keeps the bare `to` the sender used (RFC 6121 8.5.2.1.1).
                        crate::router::deliver_or_kick(&r.handle, stanza.clone());
                    }
                }
            }
            // Offline storage arrives with the next issue; until then the
            // sender learns the message was not delivered (RFC 6121 8.5.2.2.1).
            Verdict::Offline => self.bounce(&stanza, StanzaErrorKind::ServiceUnavailable),
            Verdict::Bounce(kind) => self.bounce(&stanza, kind),
            Verdict::HandleForUser => self.bounce(&stanza, StanzaErrorKind::ServiceUnavailable),
            Verdict::Ignore => {}
        }
    }

    fn bounce(&self, stanza: &Element, kind: StanzaErrorKind) {
        if stanza.attr("type") != Some("error") {
            self.router
                .do_send(RouteStanza(error_reply(stanza, kind, None)));
        }
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct AddResource(pub SessionHandle);

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveResource {
    pub full_jid: String,
    pub session_id: String,
}

/// A stanza for this user that the router could not hand to one session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForUser {
    pub stanza: Element,
    pub kind: StanzaKind,
    /// `true`: addressed to a full JID whose resource is not (or no longer) here.
    pub missing_resource: bool,
}

impl Handler<AddResource> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: AddResource, _: &mut Context<Self>) {
        let jid = msg.0.full_jid.clone();
        self.resources.insert(
            jid,
            Resource {
                handle: msg.0,
                available: false,
                priority: 0,
            },
        );
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
            self.resources.remove(&msg.full_jid);
        }
    }
}

impl Handler<PresenceChanged> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: PresenceChanged, _: &mut Context<Self>) {
        if let Some(r) = self.resources.get_mut(&msg.full_jid) {
            if r.handle.session_id == msg.session_id {
                r.available = msg.available;
                r.priority = msg.priority;
            }
        }
    }
}

impl Handler<ForUser> for UserActor {
    type Result = ();
    fn handle(&mut self, msg: ForUser, _: &mut Context<Self>) {
        let stanza_type = msg
            .stanza
            .attr("type")
            .unwrap_or(default_type(msg.kind))
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

/// Stop once the router has no more resources for this user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

impl Handler<Stop> for UserActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

pub fn default_type(kind: StanzaKind) -> &'static str {
    match kind {
        StanzaKind::Message => "normal",
        StanzaKind::Presence => "available",
        StanzaKind::Iq => "",
    }
}
