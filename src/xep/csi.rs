//! XEP-0352 Client State Indication: while a client says it is inactive, the
//! server holds back presence (the latest per sender) and sends it all as
//! soon as anything important arrives or the client is active again, so a
//! phone in a pocket is woken for messages, not for every status change.

use std::collections::BTreeMap;

use crate::xmpp::element::Element;
use crate::xmpp::ns;

pub const NS: &str = "urn:xmpp:csi:0";
/// Senders whose presence is held at most; past this the held presence is
/// flushed, so an inactive client cannot grow the node's memory.
pub const MAX_HELD: usize = 512;

/// Whether a stanza may wait while the client is inactive, and why.
pub fn can_wait(stanza: &Element) -> (bool, &'static str) {
    if stanza.name() != "presence" || stanza.ns() != ns::CLIENT {
        return (false, "only presence waits");
    }
    match stanza.attr("type") {
        None | Some("unavailable") => (true, "a status change"),
        Some(_) => (false, "subscription requests and errors are important"),
    }
}

/// The held presence of an inactive stream: the latest per sender, in the
/// order the senders first changed.
#[derive(Default)]
pub struct Held {
    by_sender: BTreeMap<String, (u64, Element)>,
    next: u64,
}

impl Held {
    /// Keep `stanza` (replacing the sender's earlier one); `false` if full.
    pub fn hold(&mut self, stanza: Element) -> bool {
        let from = stanza.attr("from").unwrap_or_default().to_string();
        if !self.by_sender.contains_key(&from) && self.by_sender.len() >= MAX_HELD {
            return false;
        }
        let order = self
            .by_sender
            .get(&from)
            .map(|(o, _)| *o)
            .unwrap_or_else(|| {
                self.next += 1;
                self.next
            });
        self.by_sender.insert(from, (order, stanza));
        true
    }

    /// Everything held, oldest first; the buffer is empty afterwards.
    pub fn drain(&mut self) -> Vec<Element> {
        let mut all: Vec<(u64, Element)> =
            std::mem::take(&mut self.by_sender).into_values().collect();
        all.sort_by_key(|(o, _)| *o);
        all.into_iter().map(|(_, e)| e).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sender.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(from: &str, show: &str) -> Element {
        Element::new("presence", ns::CLIENT)
            .with_attr("from", from)
            .with_child(Element::new("show", ns::CLIENT).with_text(show))
    }

    #[test]
    fn only_status_presence_waits() {
        assert!(can_wait(&presence("a@x/1", "away")).0);
        assert!(!can_wait(&Element::new("presence", ns::CLIENT).with_attr("type", "subscribe")).0);
        assert!(!can_wait(&Element::new("message", ns::CLIENT)).0);
    }

    #[test]
    fn latest_presence_per_sender_in_first_change_order() {
        let mut held = Held::default();
        assert!(held.hold(presence("a@x/1", "away")));
        assert!(held.hold(presence("b@x/1", "dnd")));
        assert!(held.hold(presence("a@x/1", "xa")));
        let out = held.drain();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].attr("from"), Some("a@x/1"));
        assert_eq!(out[0].get_child("show", ns::CLIENT).unwrap().text(), "xa");
        assert!(held.is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut held = Held::default();
        for i in 0..MAX_HELD {
            assert!(held.hold(presence(&format!("u{i}@x/r"), "away")));
        }
        assert!(!held.hold(presence("one-more@x/r", "away")));
        assert!(
            held.hold(presence("u0@x/r", "dnd")),
            "replacing needs no room"
        );
    }
}
