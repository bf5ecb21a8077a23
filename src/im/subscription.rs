//! RFC 6121 section 3: presence subscriptions, both sides of them.
//!
//! The decisions are pure functions of (the roster entry, the event) that
//! return the new entry, what to do with the stanza, and the rule that chose
//! it. `outbound` runs them for a subscription stanza a user sends: first on
//! the sender's roster, then, when the contact is an account of this domain, on
//! the contact's roster (the contact's server's part of RFC 6121 3.1.3 ff.).
//! Each roster change is a compare-and-set through Raft (`roster::update`).

use std::sync::Arc;

use chorus_raft::RaftNode;

use super::roster::{self, Entry, RosterError, RosterItem};
use crate::bus::hooks::{Hooks, Screen};
use crate::bus::iq::Caller;
use crate::bus::RouterPort;
use crate::bus::{PresenceTo, RouteStanza, ToResources, Which};
use crate::config::UserLimits;
use crate::xmpp::element::Element;
use crate::xmpp::error::{
    error_reply, error_reply_with_type, unreadable_state, ErrorType, StanzaErrorKind,
};
use crate::xmpp::ns;
use crate::xmpp::stanza::StanzaKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl Kind {
    pub fn from_type(t: &str) -> Option<Kind> {
        match t {
            "subscribe" => Some(Kind::Subscribe),
            "subscribed" => Some(Kind::Subscribed),
            "unsubscribe" => Some(Kind::Unsubscribe),
            "unsubscribed" => Some(Kind::Unsubscribed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Subscribe => "subscribe",
            Kind::Subscribed => "subscribed",
            Kind::Unsubscribe => "unsubscribe",
            Kind::Unsubscribed => "unsubscribed",
        }
    }
}

/// What happens when the user sends `kind` to the contact.
#[derive(Clone, Debug, PartialEq)]
pub struct Outbound {
    /// The user's new entry for the contact, if it changes.
    pub entry: Option<Entry>,
    /// Send the stanza on to the contact.
    pub route: bool,
    /// Afterwards, send the user's presence (`Some(true)`) or unavailable
    /// (`Some(false)`) to the contact.
    pub presence_to_contact: Option<bool>,
    pub reason: &'static str,
}

pub fn outbound_rule(kind: Kind, entry: &Entry, contact: &str) -> Outbound {
    let mut item = entry
        .item
        .clone()
        .unwrap_or_else(|| RosterItem::new(contact));
    let sub = item.subscription;
    let changed = |item: RosterItem, pending_in: Option<String>| {
        Some(Entry {
            item: Some(item),
            pending_in,
        })
    };
    match kind {
        Kind::Subscribe => {
            if !sub.has_to() {
                item.ask = true;
            }
            Outbound {
                entry: changed(item, entry.pending_in.clone()),
                route: true,
                presence_to_contact: None,
                reason: "3.1.2: the request is recorded as pending out and routed",
            }
        }
        Kind::Subscribed if entry.pending_in.is_some() => {
            item.subscription = roster::Subscription::with(sub.has_to(), true);
            item.approved = false;
            Outbound {
                entry: changed(item, None),
                route: true,
                presence_to_contact: Some(true),
                reason: "3.1.5: approving a pending request; the contact gets the user's presence",
            }
        }
        Kind::Subscribed if sub.has_from() => Outbound {
            entry: None,
            route: false,
            presence_to_contact: None,
            reason: "3.1.5: the contact is already subscribed",
        },
        Kind::Subscribed => {
            item.approved = true;
            Outbound {
                entry: changed(item, None),
                route: false,
                presence_to_contact: None,
                reason: "3.4: no request pending, so this pre-approves one",
            }
        }
        Kind::Unsubscribe => {
            let had = sub.has_to() || item.ask;
            item.subscription = roster::Subscription::with(false, sub.has_from());
            item.ask = false;
            Outbound {
                entry: if had {
                    changed(item, entry.pending_in.clone())
                } else {
                    None
                },
                route: true,
                presence_to_contact: None,
                reason: "3.3.2: the user's subscription to the contact is cancelled",
            }
        }
        Kind::Unsubscribed => {
            let had_from = sub.has_from();
            let had = had_from || item.approved || entry.pending_in.is_some();
            item.subscription = roster::Subscription::with(sub.has_to(), false);
            item.approved = false;
            let keep_item = entry.item.is_some();
            Outbound {
                entry: if had {
                    Some(Entry {
                        item: keep_item.then_some(item),
                        pending_in: None,
                    })
                } else {
                    None
                },
                route: true,
                presence_to_contact: had_from.then_some(false),
                reason: "3.2.2: the contact's subscription is cancelled or its request denied",
            }
        }
    }
}

/// What happens when the user receives `kind` from the contact.
#[derive(Clone, Debug, PartialEq)]
pub struct Inbound {
    pub entry: Option<Entry>,
    /// Deliver the stanza to the user's available resources.
    pub deliver: bool,
    /// Answer on the user's behalf with `subscribed` (already or pre-approved).
    pub auto_subscribed: bool,
    /// Afterwards, send the user's presence (`Some(true)`) or unavailable
    /// (`Some(false)`) to the contact.
    pub presence_to_contact: Option<bool>,
    pub reason: &'static str,
}

pub fn inbound_rule(kind: Kind, entry: &Entry, stanza_xml: &str) -> Inbound {
    let item = entry.item.clone();
    let sub = item.as_ref().map(|i| i.subscription).unwrap_or_default();
    let none = |deliver, reason| Inbound {
        entry: None,
        deliver,
        auto_subscribed: false,
        presence_to_contact: None,
        reason,
    };
    match kind {
        Kind::Subscribe if sub.has_from() => Inbound {
            auto_subscribed: true,
            ..none(
                false,
                "3.1.3: already subscribed, so the server answers for the user",
            )
        },
        Kind::Subscribe if item.as_ref().is_some_and(|i| i.approved) => {
            let mut item = item.unwrap_or_default();
            item.subscription = roster::Subscription::with(sub.has_to(), true);
            item.approved = false;
            Inbound {
                entry: Some(Entry {
                    item: Some(item),
                    pending_in: None,
                }),
                deliver: false,
                auto_subscribed: true,
                presence_to_contact: Some(true),
                reason: "3.4: pre-approved, so the server approves for the user",
            }
        }
        Kind::Subscribe => Inbound {
            entry: Some(Entry {
                item,
                pending_in: Some(stanza_xml.to_string()),
            }),
            ..none(true, "3.1.3: kept as pending in and delivered to the user")
        },
        Kind::Subscribed => match item {
            Some(mut item) if item.ask => {
                item.ask = false;
                item.subscription = roster::Subscription::with(true, sub.has_from());
                Inbound {
                    entry: Some(Entry {
                        item: Some(item),
                        pending_in: entry.pending_in.clone(),
                    }),
                    ..none(true, "3.1.6: the contact approved the user's request")
                }
            }
            _ => none(false, "3.1.6: no request was pending; ignored"),
        },
        Kind::Unsubscribe => {
            if !sub.has_from() && entry.pending_in.is_none() {
                return none(false, "3.3.3: the contact was not subscribed; ignored");
            }
            let item = item.map(|mut i| {
                i.subscription = roster::Subscription::with(sub.has_to(), false);
                i.approved = false;
                i
            });
            Inbound {
                entry: Some(Entry {
                    item,
                    pending_in: None,
                }),
                deliver: sub.has_from(),
                auto_subscribed: false,
                presence_to_contact: sub.has_from().then_some(false),
                reason: "3.3.3: the contact cancelled its subscription to the user",
            }
        }
        Kind::Unsubscribed => match item {
            Some(mut item) if sub.has_to() || item.ask => {
                item.ask = false;
                item.subscription = roster::Subscription::with(false, sub.has_from());
                Inbound {
                    entry: Some(Entry {
                        item: Some(item),
                        pending_in: entry.pending_in.clone(),
                    }),
                    ..none(
                        true,
                        "3.2.3: the contact cancelled or denied the user's subscription",
                    )
                }
            }
            _ => none(false, "3.2.3: the user had no subscription; ignored"),
        },
    }
}

/// The subscription stanza as it travels: addressed bare JID to bare JID
/// (RFC 6121 3.1.2: the server stamps the user's bare JID).
fn stamped(kind: Kind, from: &str, to: &str, original: Option<&Element>) -> Element {
    let mut el = Element::new("presence", ns::CLIENT).with_attr("type", kind.name());
    if let Some(original) = original {
        for child in original.children() {
            el.append_child(child.clone());
        }
    }
    el.set_attr("from", from);
    el.set_attr("to", to);
    el
}

/// A user's session sent a subscription stanza to `to`.
pub async fn outbound(caller: Arc<Caller>, kind: Kind, to: jid::BareJid, stanza: Element) {
    let (user, contact) = (caller.bare_jid.clone(), to.to_string());
    if user == contact {
        return;
    }
    let limits = &caller.settings.limits;
    let mut route = false;
    let mut presence = None;
    let mut roster_full = false;
    let mut unreadable = false;
    let result = roster::update(&caller.raft, &user, &contact, |entry| {
        let rule = outbound_rule(kind, entry, &contact);
        tracing::debug!(%user, %contact, kind = kind.name(), reason = rule.reason, "outbound subscription");
        // A subscription that adds a contact counts against the roster's size, as a
        // roster set does (RFC 6121 3.1.2 makes the item). Read under the account's
        // lock and written as a compare-and-set, so the count is exact.
        let adds_item =
            entry.item.is_none() && rule.entry.as_ref().is_some_and(|e| e.item.is_some());
        roster_full = adds_item
            && match roster::load(&caller.raft.state(), &user) {
                Ok(roster) => roster.items.len() >= limits.roster_items as usize,
                Err(_) => {
                    unreadable = true;
                    true
                }
            };
        if roster_full {
            (route, presence) = (false, None);
            return None;
        }
        route = rule.route;
        presence = rule.presence_to_contact;
        rule.entry
    })
    .await;
    if unreadable || matches!(result, Err(roster::RosterError::Read(_))) {
        return caller
            .router
            .do_send(RouteStanza(unreadable_state(&stanza)));
    }
    if roster_full {
        let text = format!("the roster is full ({} contacts)", limits.roster_items);
        let bounce = error_reply(&stanza, StanzaErrorKind::NotAllowed, Some(&text));
        return caller.router.do_send(RouteStanza(bounce));
    }
    match result {
        Ok(Some(updated)) => roster::push(
            &caller.router,
            &user,
            &contact,
            updated.after.item.as_ref(),
            updated.version,
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%user, %contact, error = %e, "subscription change failed");
            return;
        }
    }
    // The answer travels before the presence it unlocks (RFC 6121 3.1.5).
    if route {
        let stamped = stamped(kind, &user, &contact, Some(&stanza));
        let delivered = deliver_to_contact(
            &caller.raft,
            &caller.router,
            &caller.hooks,
            &caller.domain,
            limits,
            kind,
            &user,
            &contact,
            stamped,
        )
        .await;
        if let Err(refused) = delivered {
            let bounce = error_reply_with_type(
                &stanza,
                refused.condition,
                refused.error_type,
                Some(refused.text),
            );
            caller.router.do_send(RouteStanza(bounce));
        }
    }
    if let Some(available) = presence {
        caller.router.do_send(PresenceTo {
            user: user.clone(),
            to: contact.clone(),
            available,
        });
    }
}

/// What of a subscription request is kept until the user answers it: the addresses,
/// the type, and the status and nickname (XEP-0172) a client shows with it, each if
/// small. Anything else a client hung on the request is not stored.
pub fn pending_copy(stanza: &Element) -> String {
    const MAX_PART: usize = 1024;
    let mut copy = Element::new("presence", stanza.ns());
    for attr in ["from", "to", "type"] {
        if let Some(v) = stanza.attr(attr) {
            copy.set_attr(attr, v);
        }
    }
    for child in stanza.children() {
        let kept = matches!(
            (child.name(), child.ns()),
            ("status", _) | ("nick", "http://jabber.org/protocol/nick")
        );
        if kept && child.to_xml().len() <= MAX_PART {
            copy = copy.with_child(child.clone());
        }
    }
    copy.to_xml()
}

/// Why a subscription stanza did not reach its contact, for the error to its sender.
struct Refused {
    condition: StanzaErrorKind,
    error_type: ErrorType,
    text: &'static str,
}

impl Refused {
    /// A state read failed: refused, never taken as "no such contact" or "not blocked".
    const UNREADABLE: Refused = Refused {
        condition: StanzaErrorKind::InternalServerError,
        error_type: ErrorType::Wait,
        text: "the server could not read the contact's state; try again",
    };
}

/// Hand a subscription stanza from `user` to `contact`: the contact's server's
/// part when the contact is ours, the router (which bounces) otherwise. As the contact's
/// server it first screens the stanza as the router would (XEP-0191: a contact that
/// blocked the user does not hear of it).
#[allow(clippy::too_many_arguments)]
async fn deliver_to_contact(
    raft: &RaftNode,
    router: &RouterPort,
    hooks: &Hooks,
    domain: &str,
    limits: &UserLimits,
    kind: Kind,
    user: &str,
    contact: &str,
    stanza: Element,
) -> Result<(), Refused> {
    let ours = jid::BareJid::new(contact).is_ok_and(|j| j.domain().as_str() == domain);
    let exists = match raft.state().user(contact) {
        Ok(user) => user.is_some(),
        Err(_) => return Err(Refused::UNREADABLE),
    };
    if !ours || !exists {
        // RFC 6121 3.1.3: no such contact; subscription stanzas to it are dropped
        // (the router answers for other domains).
        if !ours {
            router.do_send(RouteStanza(stanza));
        }
        return Ok(());
    }
    match hooks.screen(contact, &stanza, StanzaKind::Presence) {
        Ok(Screen::Pass) => {}
        Ok(Screen::Drop(reason) | Screen::Bounce(reason)) => {
            tracing::debug!(%contact, from = %user, kind = kind.name(), reason, "subscription stanza screened out");
            return Ok(());
        }
        Err(e) => {
            tracing::error!(%contact, error = %e, "state read failed; subscription stanza refused");
            return Err(Refused::UNREADABLE);
        }
    }
    let xml = pending_copy(&stanza);
    let mut rule = None;
    let mut too_many = false;
    let mut unreadable = false;
    let result = roster::update(raft, contact, user, |entry| {
        let r = inbound_rule(kind, entry, &xml);
        // A new waiting request counts against the contact's bound, read under its lock.
        let new_request = entry.pending_in.is_none()
            && r.entry.as_ref().is_some_and(|e| e.pending_in.is_some());
        too_many = new_request
            && match roster::load(&raft.state(), contact) {
                Ok(roster) => roster.pending_in.len() as u64 >= limits.pending_subscriptions,
                Err(_) => {
                    unreadable = true;
                    true
                }
            };
        if too_many {
            rule = None;
            return None;
        }
        tracing::debug!(%contact, from = %user, kind = kind.name(), reason = r.reason, "inbound subscription");
        let change = r.entry.clone();
        rule = Some(r);
        change
    })
    .await;
    match result {
        Ok(Some(updated)) => roster::push(
            router,
            contact,
            user,
            updated.after.item.as_ref(),
            updated.version,
        ),
        Ok(None) => {}
        Err(roster::RosterError::Read(_)) => return Err(Refused::UNREADABLE),
        Err(e) => {
            tracing::warn!(%contact, from = %user, error = %e, "subscription change failed");
            return Ok(());
        }
    }
    if unreadable {
        return Err(Refused::UNREADABLE);
    }
    if too_many {
        tracing::info!(%contact, from = %user, "subscription request refused: too many waiting");
        return Err(Refused {
            condition: StanzaErrorKind::ResourceConstraint,
            error_type: ErrorType::Wait,
            text: "the contact has too many subscription requests waiting",
        });
    }
    let Some(rule) = rule else { return Ok(()) };
    if rule.deliver {
        router.do_send(ToResources {
            user: contact.to_string(),
            which: Which::Available,
            stanza,
        });
    }
    if let Some(available) = rule.presence_to_contact {
        router.do_send(PresenceTo {
            user: contact.to_string(),
            to: user.to_string(),
            available,
        });
    }
    if rule.auto_subscribed {
        // The contact's server answers for the contact: `subscribed` back to the user.
        let reply = stamped(Kind::Subscribed, contact, user, None);
        let xml = reply.to_xml();
        let mut rule = None;
        let result = roster::update(raft, user, contact, |entry| {
            let r = inbound_rule(Kind::Subscribed, entry, &xml);
            let change = r.entry.clone();
            rule = Some(r);
            change
        })
        .await;
        if let Ok(Some(updated)) = result {
            roster::push(
                router,
                user,
                contact,
                updated.after.item.as_ref(),
                updated.version,
            );
        }
        if rule.is_some_and(|r| r.deliver) {
            router.do_send(ToResources {
                user: user.to_string(),
                which: Which::Available,
                stanza: reply,
            });
            router.do_send(PresenceTo {
                user: contact.to_string(),
                to: user.to_string(),
                available: true,
            });
        }
    }
    Ok(())
}

/// RFC 6121 2.5.2: remove a contact, cancelling subscriptions both ways.
/// `Ok(false)` if there was no such item.
pub async fn remove_contact(caller: &Arc<Caller>, contact: &str) -> Result<bool, RosterError> {
    let user = caller.bare_jid.clone();
    let result = roster::update(&caller.raft, &user, contact, |entry| {
        entry.item.as_ref()?;
        Some(Entry {
            item: None,
            pending_in: None,
        })
    })
    .await?;
    let Some(updated) = result else {
        return Ok(false);
    };
    roster::push(&caller.router, &user, contact, None, updated.version);
    let before = updated.before.item.unwrap_or_default();
    if before.subscription.has_from() {
        caller.router.do_send(PresenceTo {
            user: user.clone(),
            to: contact.to_string(),
            available: false,
        });
        let stanza = stamped(Kind::Unsubscribed, &user, contact, None);
        let _ = deliver_to_contact(
            &caller.raft,
            &caller.router,
            &caller.hooks,
            &caller.domain,
            &caller.settings.limits,
            Kind::Unsubscribed,
            &user,
            contact,
            stanza,
        )
        .await;
    }
    if before.subscription.has_to() || before.ask {
        let stanza = stamped(Kind::Unsubscribe, &user, contact, None);
        let _ = deliver_to_contact(
            &caller.raft,
            &caller.router,
            &caller.hooks,
            &caller.domain,
            &caller.settings.limits,
            Kind::Unsubscribe,
            &user,
            contact,
            stanza,
        )
        .await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::im::roster::Subscription;

    fn entry(sub: Subscription, ask: bool, approved: bool, pending: bool) -> Entry {
        Entry {
            item: Some(RosterItem {
                jid: "c@x".into(),
                subscription: sub,
                ask,
                approved,
                ..Default::default()
            }),
            pending_in: pending.then(|| "<presence type='subscribe'/>".to_string()),
        }
    }

    fn sub_of(e: &Option<Entry>) -> (Subscription, bool, bool, bool) {
        let e = e.clone().unwrap();
        let i = e.item.unwrap();
        (i.subscription, i.ask, i.approved, e.pending_in.is_some())
    }

    #[test]
    fn outbound_subscribe_is_pending_out_and_routed() {
        let r = outbound_rule(Kind::Subscribe, &Entry::default(), "c@x");
        assert!(r.route);
        assert_eq!(sub_of(&r.entry), (Subscription::None, true, false, false));
        let r = outbound_rule(
            Kind::Subscribe,
            &entry(Subscription::Both, false, false, false),
            "c@x",
        );
        assert!(!sub_of(&r.entry).1, "already subscribed: no pending out");
    }

    #[test]
    fn approving_a_pending_request_adds_from() {
        let r = outbound_rule(
            Kind::Subscribed,
            &entry(Subscription::To, false, false, true),
            "c@x",
        );
        assert_eq!(sub_of(&r.entry), (Subscription::Both, false, false, false));
        assert!(r.route);
        assert_eq!(r.presence_to_contact, Some(true));
    }

    #[test]
    fn subscribed_without_request_pre_approves() {
        let r = outbound_rule(Kind::Subscribed, &Entry::default(), "c@x");
        assert!(!r.route);
        assert_eq!(sub_of(&r.entry), (Subscription::None, false, true, false));
        let i = inbound_rule(Kind::Subscribe, &r.entry.unwrap(), "<presence/>");
        assert!(i.auto_subscribed && !i.deliver);
        assert_eq!(sub_of(&i.entry), (Subscription::From, false, false, false));
    }

    #[test]
    fn inbound_subscribe_is_kept_pending_unless_already_subscribed() {
        let i = inbound_rule(
            Kind::Subscribe,
            &Entry::default(),
            "<presence type='subscribe'/>",
        );
        assert!(i.deliver && !i.auto_subscribed);
        let e = i.entry.unwrap();
        assert!(e.item.is_none(), "a request alone adds no roster item");
        assert!(e.pending_in.is_some());
        let i = inbound_rule(
            Kind::Subscribe,
            &entry(Subscription::From, false, false, false),
            "",
        );
        assert!(i.auto_subscribed && !i.deliver && i.entry.is_none());
    }

    #[test]
    fn inbound_subscribed_needs_a_pending_request() {
        let i = inbound_rule(
            Kind::Subscribed,
            &entry(Subscription::None, true, false, false),
            "",
        );
        assert!(i.deliver);
        assert_eq!(sub_of(&i.entry), (Subscription::To, false, false, false));
        let i = inbound_rule(
            Kind::Subscribed,
            &entry(Subscription::None, false, false, false),
            "",
        );
        assert!(!i.deliver && i.entry.is_none());
    }

    #[test]
    fn cancellations_remove_one_direction() {
        let r = outbound_rule(
            Kind::Unsubscribe,
            &entry(Subscription::Both, false, false, false),
            "c@x",
        );
        assert_eq!(sub_of(&r.entry).0, Subscription::From);
        let r = outbound_rule(
            Kind::Unsubscribed,
            &entry(Subscription::Both, false, false, false),
            "c@x",
        );
        assert_eq!(sub_of(&r.entry).0, Subscription::To);
        assert_eq!(r.presence_to_contact, Some(false));
        let i = inbound_rule(
            Kind::Unsubscribe,
            &entry(Subscription::Both, false, false, false),
            "",
        );
        assert_eq!(sub_of(&i.entry).0, Subscription::To);
        let i = inbound_rule(
            Kind::Unsubscribed,
            &entry(Subscription::Both, false, false, false),
            "",
        );
        assert_eq!(sub_of(&i.entry).0, Subscription::From);
        let i = inbound_rule(
            Kind::Unsubscribed,
            &entry(Subscription::None, false, false, false),
            "",
        );
        assert!(!i.deliver, "nothing to cancel");
    }

    #[test]
    fn denying_a_request_clears_it() {
        let r = outbound_rule(
            Kind::Unsubscribed,
            &Entry {
                item: None,
                pending_in: Some("x".into()),
            },
            "c@x",
        );
        assert_eq!(
            r.entry,
            Some(Entry {
                item: None,
                pending_in: None
            })
        );
        assert!(r.route);
    }
}
