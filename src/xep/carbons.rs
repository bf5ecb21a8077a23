//! XEP-0280 Message Carbons: each of an account's streams that asked for it
//! gets a copy of the chats its other streams send and receive.
//!
//! The one real decision, `should_copy`, is a pure function that returns the
//! verdict with its reason. The user actor keeps which streams enabled
//! carbons and sends the copies (`user::UserActor`).

use std::sync::Arc;

use super::{payload, result_for, Answer, Caller, IqFeature, Target};
use crate::bus::hooks::DeliveryHook;
use crate::bus::{Carbon, SessionFlag, UserEvent};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaErrorKind};
use crate::xmpp::ns;

pub const NS: &str = "urn:xmpp:carbons:2";
pub const RULES_NS: &str = "urn:xmpp:carbons:rules:0";
pub const FORWARD_NS: &str = "urn:xmpp:forward:0";
const HINTS_NS: &str = "urn:xmpp:hints";
const MUC_USER_NS: &str = "http://jabber.org/protocol/muc#user";

pub struct Carbons;

impl IqFeature for Carbons {
    fn disco_features(&self) -> &'static [&'static str] {
        &[NS, RULES_NS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        let enable = payload(iq, "set", "enable", NS).is_some();
        let disable = payload(iq, "set", "disable", NS).is_some();
        if !enable && !disable {
            return None;
        }
        if matches!(target, Target::Account(_)) {
            return Some(Answer::Now(error_reply(
                iq,
                StanzaErrorKind::Forbidden,
                None,
            )));
        }
        caller.session.do_send(SessionFlag::Carbons(enable));
        Some(Answer::Now(result_for(iq)))
    }
}

/// Whether a message is copied to the account's other carbons-enabled
/// streams (XEP-0280 section 6, and the rules of `urn:xmpp:carbons:rules:0`).
pub fn should_copy(message: &Element) -> (bool, &'static str) {
    if message.name() != "message" {
        return (false, "not a message");
    }
    if message.get_child("private", NS).is_some() {
        return (false, "marked private (XEP-0280 section 7)");
    }
    if message.get_child("no-copy", HINTS_NS).is_some() {
        return (false, "no-copy hint (XEP-0334)");
    }
    if is_carbon(message) {
        return (false, "already a carbon");
    }
    match message.attr("type").unwrap_or("normal") {
        "chat" => (true, "type chat"),
        "normal" if message.get_child("body", ns::CLIENT).is_some() => {
            (true, "type normal with a body")
        }
        "groupchat" => (false, "groupchat is not copied"),
        "error" => (true, "an error for a copied chat"),
        _ if message.get_child("x", MUC_USER_NS).is_some() => (false, "MUC private message"),
        _ => (false, "not a chat"),
    }
}

/// A carbon copy (a `<sent/>` or `<received/>` wrapper), not an original.
pub fn is_carbon(message: &Element) -> bool {
    message.get_child("sent", NS).is_some() || message.get_child("received", NS).is_some()
}

/// Which way the copied message went.
pub use crate::bus::CarbonDirection as Direction;

/// The router's part: a message handed to one stream of an account is copied to the
/// account's other streams that enabled carbons (by its user actor), and a copy a peer
/// did not take is not routed anew (the account has the original).
pub struct CarbonsHook;

impl DeliveryHook for CarbonsHook {
    fn delivered(&self, account: &str, full_jid: &str, stanza: &Element) -> Option<UserEvent> {
        let (copy, reason) = should_copy(stanza);
        tracing::trace!(%full_jid, copy, reason, "carbons");
        copy.then(|| {
            UserEvent::Carbon(Carbon {
                account: account.to_string(),
                full_jid: full_jid.to_string(),
                direction: Direction::Received,
                stanza: stanza.clone(),
            })
        })
    }

    fn reroutable(&self, stanza: &Element) -> bool {
        !(stanza.name() == "message" && is_carbon(stanza))
    }
}

/// The carbon for one stream: from the account's bare JID, wrapping the
/// original in `<forwarded/>` (XEP-0297).
pub fn wrap(direction: Direction, account: &str, to_full: &str, original: &Element) -> Element {
    let name = match direction {
        Direction::Sent => "sent",
        Direction::Received => "received",
    };
    let mut inner = original.clone();
    if inner.ns() != ns::CLIENT {
        inner.set_ns(ns::CLIENT);
    }
    Element::new("message", ns::CLIENT)
        .with_attr("from", account)
        .with_attr("to", to_full)
        .with_attr("type", original.attr("type").unwrap_or("normal"))
        .with_child(
            Element::new(name, NS)
                .with_child(Element::new("forwarded", FORWARD_NS).with_child(inner)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(xml: &str) -> Element {
        Element::from_xml(xml).unwrap()
    }

    #[test]
    fn chats_are_copied_and_the_rest_is_not() {
        assert!(
            should_copy(&msg(
                "<message xmlns='jabber:client' type='chat'><body>x</body></message>"
            ))
            .0
        );
        assert!(
            should_copy(&msg(
                "<message xmlns='jabber:client'><body>x</body></message>"
            ))
            .0
        );
        assert!(
            !should_copy(&msg(
                "<message xmlns='jabber:client' type='headline'><body>x</body></message>"
            ))
            .0
        );
        assert!(
            !should_copy(&msg(
                "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>"
            ))
            .0
        );
        let private = "<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>";
        assert_eq!(
            should_copy(&msg(private)),
            (false, "marked private (XEP-0280 section 7)")
        );
        let hint = "<message xmlns='jabber:client' type='chat'><no-copy xmlns='urn:xmpp:hints'/></message>";
        assert!(!should_copy(&msg(hint)).0);
    }

    #[test]
    fn carbons_wrap_the_original() {
        let original = msg("<message xmlns='jabber:client' type='chat' from='a@x/1' to='b@x'><body>hi</body></message>");
        let c = wrap(Direction::Sent, "a@x", "a@x/2", &original);
        assert_eq!(c.attr("from"), Some("a@x"));
        let inner = c
            .get_child("sent", NS)
            .unwrap()
            .get_child("forwarded", FORWARD_NS)
            .unwrap();
        assert_eq!(
            inner.get_child("message", ns::CLIENT).unwrap().attr("from"),
            Some("a@x/1")
        );
    }
}
