//! Stream errors (RFC 6120 section 4.9) and stanza errors (section 8.3).

use std::fmt;

use super::chars::escape_text;
use super::element::Element;
use super::ns;

macro_rules! conditions {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            /// Every defined condition, in RFC order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The condition's element name, e.g. `not-well-formed`.
            pub fn name(&self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// The condition named by an element name, for errors received from a peer.
            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

conditions! {
    /// The defined conditions of RFC 6120 section 4.9.3.
    StreamErrorKind {
        BadFormat => "bad-format",
        BadNamespacePrefix => "bad-namespace-prefix",
        Conflict => "conflict",
        ConnectionTimeout => "connection-timeout",
        HostGone => "host-gone",
        HostUnknown => "host-unknown",
        ImproperAddressing => "improper-addressing",
        InternalServerError => "internal-server-error",
        InvalidFrom => "invalid-from",
        InvalidNamespace => "invalid-namespace",
        InvalidXml => "invalid-xml",
        NotAuthorized => "not-authorized",
        NotWellFormed => "not-well-formed",
        PolicyViolation => "policy-violation",
        RemoteConnectionFailed => "remote-connection-failed",
        Reset => "reset",
        ResourceConstraint => "resource-constraint",
        RestrictedXml => "restricted-xml",
        SeeOtherHost => "see-other-host",
        SystemShutdown => "system-shutdown",
        UndefinedCondition => "undefined-condition",
        UnsupportedEncoding => "unsupported-encoding",
        UnsupportedFeature => "unsupported-feature",
        UnsupportedStanzaType => "unsupported-stanza-type",
        UnsupportedVersion => "unsupported-version",
    }
}

conditions! {
    /// The defined conditions of RFC 6120 section 8.3.3.
    StanzaErrorKind {
        BadRequest => "bad-request",
        Conflict => "conflict",
        FeatureNotImplemented => "feature-not-implemented",
        Forbidden => "forbidden",
        Gone => "gone",
        InternalServerError => "internal-server-error",
        ItemNotFound => "item-not-found",
        JidMalformed => "jid-malformed",
        NotAcceptable => "not-acceptable",
        NotAllowed => "not-allowed",
        NotAuthorized => "not-authorized",
        PolicyViolation => "policy-violation",
        RecipientUnavailable => "recipient-unavailable",
        Redirect => "redirect",
        RegistrationRequired => "registration-required",
        RemoteServerNotFound => "remote-server-not-found",
        RemoteServerTimeout => "remote-server-timeout",
        ResourceConstraint => "resource-constraint",
        ServiceUnavailable => "service-unavailable",
        SubscriptionRequired => "subscription-required",
        UndefinedCondition => "undefined-condition",
        UnexpectedRequest => "unexpected-request",
    }
}

conditions! {
    /// The `type` of a stanza error (RFC 6120 section 8.3.2).
    ErrorType {
        Auth => "auth",
        Cancel => "cancel",
        Continue => "continue",
        Modify => "modify",
        Wait => "wait",
    }
}

impl StanzaErrorKind {
    /// The type RFC 6120 section 8.3.3 uses in the example of each condition.
    pub fn default_type(&self) -> ErrorType {
        use StanzaErrorKind::*;
        match self {
            BadRequest => ErrorType::Modify,
            Conflict => ErrorType::Cancel,
            FeatureNotImplemented => ErrorType::Cancel,
            Forbidden => ErrorType::Auth,
            Gone => ErrorType::Cancel,
            InternalServerError => ErrorType::Cancel,
            ItemNotFound => ErrorType::Cancel,
            JidMalformed => ErrorType::Modify,
            NotAcceptable => ErrorType::Modify,
            NotAllowed => ErrorType::Cancel,
            NotAuthorized => ErrorType::Auth,
            PolicyViolation => ErrorType::Modify,
            RecipientUnavailable => ErrorType::Wait,
            Redirect => ErrorType::Modify,
            RegistrationRequired => ErrorType::Auth,
            RemoteServerNotFound => ErrorType::Cancel,
            RemoteServerTimeout => ErrorType::Wait,
            ResourceConstraint => ErrorType::Wait,
            ServiceUnavailable => ErrorType::Cancel,
            SubscriptionRequired => ErrorType::Auth,
            UndefinedCondition => ErrorType::Modify,
            UnexpectedRequest => ErrorType::Wait,
        }
    }
}

/// `<stream:error>` with the condition and an optional human-readable text.
///
/// Written with the `stream:` prefix, which our own stream header declares.
pub fn stream_error_xml(kind: StreamErrorKind, text: Option<&str>) -> String {
    stream_error_with_content(kind, None, text)
}

/// `<stream:error><see-other-host>HOST</see-other-host></stream:error>`: the one stream
/// condition that carries content (RFC 6120 section 4.9.3.19), e.g. `node2.example:5222`.
pub fn see_other_host_xml(host: &str) -> String {
    stream_error_with_content(StreamErrorKind::SeeOtherHost, Some(host), None)
}

fn stream_error_with_content(
    kind: StreamErrorKind,
    content: Option<&str>,
    text: Option<&str>,
) -> String {
    let mut out = String::from("<stream:error>");
    match content {
        Some(content) => out.push_str(&format!(
            "<{0} xmlns='{1}'>{2}</{0}>",
            kind.name(),
            ns::STREAMS,
            escape_text(content)
        )),
        None => out.push_str(&format!("<{} xmlns='{}'/>", kind.name(), ns::STREAMS)),
    }
    if let Some(text) = text {
        out.push_str(&format!(
            "<text xmlns='{}' xml:lang='en'>{}</text>",
            ns::STREAMS,
            escape_text(text)
        ));
    }
    out.push_str("</stream:error>");
    out
}

/// The error reply to `stanza` (RFC 6120 section 8.3.1): same name, namespace and id,
/// `to` and `from` swapped, `type='error'`, and an `<error/>` child with the
/// condition's default type.
///
/// The original payload is not echoed (section 8.3.1 makes it optional), so a reply
/// is never larger than the limit its request was read under. Never answer a stanza of
/// type `error` with another error (rule 8.3.1.2): check
/// [`super::stanza::is_error`] first.
pub fn error_reply(stanza: &Element, kind: StanzaErrorKind, text: Option<&str>) -> Element {
    error_reply_with_type(stanza, kind, kind.default_type(), text)
}

/// [`error_reply`] with an explicit error type.
pub fn error_reply_with_type(
    stanza: &Element,
    kind: StanzaErrorKind,
    error_type: ErrorType,
    text: Option<&str>,
) -> Element {
    let mut reply = Element::new(stanza.name(), stanza.ns());
    if let Some(from) = stanza.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = stanza.attr("to") {
        reply.set_attr("from", to);
    }
    if let Some(id) = stanza.attr("id") {
        reply.set_attr("id", id);
    }
    reply.set_attr("type", "error");
    let mut error = Element::new("error", stanza.ns())
        .with_attr("type", error_type.name())
        .with_child(Element::new(kind.name(), ns::STANZAS));
    if let Some(text) = text {
        error.append_child(
            Element::new("text", ns::STANZAS)
                .with_attr("xml:lang", "en")
                .with_text(text),
        );
    }
    reply.with_child(error)
}

/// The condition of a received stanza error, if it names a defined one.
pub fn stanza_error_condition(stanza: &Element) -> Option<(StanzaErrorKind, Option<ErrorType>)> {
    let error = stanza.get_child("error", stanza.ns())?;
    let kind = error
        .children()
        .filter(|c| c.ns() == ns::STANZAS)
        .find_map(|c| StanzaErrorKind::from_name(c.name()))?;
    Some((kind, error.attr("type").and_then(ErrorType::from_name)))
}

/// The answer to a stanza whose handling needed state the server could not read (a
/// storage error): `internal-server-error` of type `wait`, since a retry may succeed.
/// Never an answer that pretends the state was empty.
pub fn unreadable_state(stanza: &Element) -> Element {
    error_reply_with_type(
        stanza,
        StanzaErrorKind::InternalServerError,
        ErrorType::Wait,
        Some("the server could not read its state; try again"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stream::parse_element;
    use crate::xmpp::stream::Limits;

    #[test]
    fn every_condition_has_a_distinct_name_that_maps_back() {
        assert_eq!(StreamErrorKind::ALL.len(), 25);
        assert_eq!(StanzaErrorKind::ALL.len(), 22);
        for k in StreamErrorKind::ALL {
            assert_eq!(StreamErrorKind::from_name(k.name()), Some(*k));
        }
        for k in StanzaErrorKind::ALL {
            assert_eq!(StanzaErrorKind::from_name(k.name()), Some(*k));
        }
        assert_eq!(StreamErrorKind::NotWellFormed.name(), "not-well-formed");
        assert_eq!(
            StanzaErrorKind::ServiceUnavailable.default_type(),
            ErrorType::Cancel
        );
        assert_eq!(ErrorType::Auth.name(), "auth");
    }

    #[test]
    fn stream_error_xml_has_condition_and_escaped_text() {
        assert_eq!(
            stream_error_xml(StreamErrorKind::NotWellFormed, None),
            "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        );
        assert_eq!(
            stream_error_xml(StreamErrorKind::PolicyViolation, Some("a < b & c")),
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>a &lt; b &amp; c</text>\
             </stream:error>"
        );
        assert_eq!(
            see_other_host_xml("node2.example:5222"),
            "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>\
             node2.example:5222</see-other-host></stream:error>"
        );
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let iq = parse_element(
            "<iq xmlns='jabber:client' from='romeo@example.net/orchard' to='example.net' \
             id='disco1' type='get'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            &Limits::default(),
        )
        .unwrap();
        let reply = error_reply(&iq, StanzaErrorKind::ServiceUnavailable, Some("no <such>"));
        assert_eq!(
            reply.to_xml_in(ns::CLIENT),
            "<iq to='romeo@example.net/orchard' from='example.net' id='disco1' type='error'>\
             <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>no &lt;such&gt;</text>\
             </error></iq>"
        );
        assert_eq!(
            stanza_error_condition(&reply),
            Some((StanzaErrorKind::ServiceUnavailable, Some(ErrorType::Cancel)))
        );

        let msg = Element::new("message", ns::SERVER).with_attr("to", "juliet@example.com");
        let reply = error_reply_with_type(&msg, StanzaErrorKind::Gone, ErrorType::Modify, None);
        assert_eq!(
            reply.to_xml(),
            "<message xmlns='jabber:server' from='juliet@example.com' type='error'>\
             <error type='modify'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        );
    }
}
