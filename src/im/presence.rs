//! RFC 6121 section 4: presence. Pure decisions: what a resource's own
//! presence says (availability, priority), and whom it goes to. The user actor
//! (`user`) keeps the state and sends the stanzas.

use chorus_raft::{ReadError, StateReader};

use super::roster::{self, Roster};
use crate::bus::hooks::DeliveryHook;
use crate::xmpp::element::Element;
use crate::xmpp::ns;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnState {
    pub available: bool,
    pub priority: i8,
}

/// The state an undirected presence sets, or `None` if it sets none
/// (subscription requests and probes are not about the sender's availability).
pub fn own_state(presence: &Element) -> Option<OwnState> {
    let available = match presence.attr("type") {
        None => true,
        Some("unavailable") => false,
        Some(_) => return None,
    };
    // RFC 6121 4.7.2.3: an integer from -128 to +127; anything else counts as 0.
    let priority = presence
        .get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    Some(OwnState {
        available,
        priority,
    })
}

/// Presence fan-out's part in delivery: a user's presence goes to the contacts
/// subscribed to it (RFC 6121 4.2.2, 4.4.2).
pub struct PresenceHook {
    pub state: StateReader,
}

impl DeliveryHook for PresenceHook {
    fn presence_audience(&self, user: &str, audience: &mut Vec<String>) -> Result<(), ReadError> {
        audience.extend(broadcast_targets(&roster::load(&self.state, user)?));
        Ok(())
    }
}

/// RFC 6121 4.2.2, 4.4.2: contacts that receive the user's presence (`from` or `both`).
pub fn broadcast_targets(roster: &Roster) -> Vec<String> {
    roster
        .items
        .values()
        .filter(|i| i.subscription.has_from())
        .map(|i| i.jid.clone())
        .collect()
}

/// RFC 6121 4.3.1: contacts whose presence the user receives (`to` or `both`),
/// which the server probes at initial presence.
pub fn probe_targets(roster: &Roster) -> Vec<String> {
    roster
        .items
        .values()
        .filter(|i| i.subscription.has_to())
        .map(|i| i.jid.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_subscription_direction() {
        use crate::im::roster::{RosterItem, Subscription};
        let mut roster = Roster::default();
        for (jid, sub) in [
            ("to@x", Subscription::To),
            ("from@x", Subscription::From),
            ("both@x", Subscription::Both),
            ("none@x", Subscription::None),
        ] {
            roster.items.insert(
                jid.into(),
                RosterItem {
                    jid: jid.into(),
                    subscription: sub,
                    ..Default::default()
                },
            );
        }
        assert_eq!(
            broadcast_targets(&roster),
            vec!["both@x".to_string(), "from@x".to_string()]
        );
        assert_eq!(
            probe_targets(&roster),
            vec!["both@x".to_string(), "to@x".to_string()]
        );
    }

    #[test]
    fn priority_is_read_and_bounded() {
        let p = Element::new("presence", ns::CLIENT)
            .with_child(Element::new("priority", ns::CLIENT).with_text("5"));
        assert_eq!(
            own_state(&p),
            Some(OwnState {
                available: true,
                priority: 5
            })
        );
        let p = Element::new("presence", ns::CLIENT)
            .with_child(Element::new("priority", ns::CLIENT).with_text("300"));
        assert_eq!(own_state(&p).unwrap().priority, 0);
        let p = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
        assert!(!own_state(&p).unwrap().available);
        let p = Element::new("presence", ns::CLIENT).with_attr("type", "subscribe");
        assert_eq!(own_state(&p), None);
    }
}
