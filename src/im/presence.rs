//! RFC 6121 section 4: a resource's own presence. For now it decides only
//! whether the resource is available and at what priority, which the
//! delivery rules need; broadcast to contacts comes with rosters.

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

#[cfg(test)]
mod tests {
    use super::*;

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
