//! The three stanza kinds of RFC 6120 section 8.

use super::element::Element;
use super::ns;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

impl StanzaKind {
    pub fn name(&self) -> &'static str {
        match self {
            StanzaKind::Message => "message",
            StanzaKind::Presence => "presence",
            StanzaKind::Iq => "iq",
        }
    }
}

/// The kind of a top-level element, or `None` if it is not a stanza: only `message`,
/// `presence` and `iq` qualified by a content namespace are (a `jabber:client` `<iq/>`
/// and a `jabber:server` one both are; `<iq xmlns='urn:x'/>` is not).
pub fn kind(el: &Element) -> Option<StanzaKind> {
    if el.ns() != ns::CLIENT && el.ns() != ns::SERVER {
        return None;
    }
    match el.name() {
        "message" => Some(StanzaKind::Message),
        "presence" => Some(StanzaKind::Presence),
        "iq" => Some(StanzaKind::Iq),
        _ => None,
    }
}

/// Whether the stanza is itself an error, which must never be answered with another
/// error (RFC 6120 section 8.3.1, rule 2), or errors could bounce between two entities
/// forever.
pub fn is_error(el: &Element) -> bool {
    el.attr("type") == Some("error")
}

/// RFC 6120 section 8.2.3: an iq needs an id and a type; a get or set carries exactly one
/// payload child, a result at most one. Returns why it is malformed, for a `bad-request`.
pub fn check_iq(iq: &Element) -> Result<(), &'static str> {
    if iq.attr("id").is_none_or(str::is_empty) {
        return Err("an iq needs an id");
    }
    let children = iq.children().count();
    match iq.attr("type") {
        Some("get" | "set") if children == 1 => Ok(()),
        Some("get" | "set") => Err("an iq get or set carries exactly one child element"),
        Some("result") if children <= 1 => Ok(()),
        Some("result") => Err("an iq result carries at most one child element"),
        Some("error") => Ok(()),
        _ => Err("an iq's type is get, set, result or error"),
    }
}

/// The sender of an available presence (no `type`): its stream's state, which must not
/// reach anyone after that stream ended.
pub fn available_presence_from(stanza: &Element) -> Option<&str> {
    if stanza.name() != "presence" || stanza.attr("type").is_some() {
        return None;
    }
    stanza.attr("from")
}

/// The `type` a stanza without one has (RFC 6120 8.2.3, RFC 6121 4.7.1, 5.2.2).
pub fn default_type(kind: StanzaKind) -> &'static str {
    match kind {
        StanzaKind::Message => "normal",
        StanzaKind::Presence => "available",
        StanzaKind::Iq => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iq_syntax_is_checked() {
        let iq = |ty: &str, n: usize| {
            let mut e = Element::new("iq", ns::CLIENT)
                .with_attr("id", "1")
                .with_attr("type", ty);
            for _ in 0..n {
                e.append_child(Element::new("q", "urn:x"));
            }
            e
        };
        assert!(check_iq(&iq("get", 1)).is_ok());
        assert!(check_iq(&iq("get", 0)).is_err());
        assert!(check_iq(&iq("set", 2)).is_err());
        assert!(check_iq(&iq("result", 0)).is_ok());
        assert!(check_iq(&iq("result", 2)).is_err());
        assert!(check_iq(&iq("bogus", 1)).is_err());
        assert!(check_iq(&Element::new("iq", ns::CLIENT).with_attr("type", "get")).is_err());
    }

    #[test]
    fn only_content_namespace_stanzas_have_a_kind() {
        assert_eq!(
            kind(&Element::new("message", ns::CLIENT)),
            Some(StanzaKind::Message)
        );
        assert_eq!(
            kind(&Element::new("presence", ns::SERVER)),
            Some(StanzaKind::Presence)
        );
        assert_eq!(kind(&Element::new("iq", ns::CLIENT)), Some(StanzaKind::Iq));
        assert_eq!(kind(&Element::new("iq", ns::BIND)), None);
        assert_eq!(kind(&Element::new("auth", ns::SASL)), None);
        assert_eq!(kind(&Element::new("body", ns::CLIENT)), None);
        assert_eq!(StanzaKind::Iq.name(), "iq");
    }

    #[test]
    fn error_stanzas_are_recognized() {
        assert!(is_error(
            &Element::new("iq", ns::CLIENT).with_attr("type", "error")
        ));
        assert!(!is_error(
            &Element::new("iq", ns::CLIENT).with_attr("type", "get")
        ));
    }
}
