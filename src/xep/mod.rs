//! Features the server itself answers: one module per XEP or RFC section, each
//! naming its disco features and answering the iqs of its namespace. The
//! session actor dispatches iqs addressed to the server here; it implements
//! none of them.

pub mod disco;
pub mod legacy_session;
pub mod ping;
pub mod version;

use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaErrorKind};

/// What a feature may know about the iq's sender and the server.
pub struct IqContext<'a> {
    pub domain: &'a str,
    /// The sender's full JID.
    pub from: &'a str,
}

pub trait IqFeature: Sync {
    /// The features this module adds to the server's disco#info.
    fn disco_features(&self) -> &'static [&'static str];
    /// Answer an iq get or set addressed to the server, or `None` if this
    /// feature does not handle its payload.
    fn handle(&self, iq: &Element, ctx: &IqContext) -> Option<Element>;
}

/// Every feature the server answers, in one place.
pub static SERVER_FEATURES: &[&dyn IqFeature] = &[
    &disco::Disco,
    &ping::Ping,
    &version::Version,
    &legacy_session::LegacySession,
];

/// Answer an iq get or set addressed to the server: the feature's answer, or
/// `service-unavailable` when no feature takes it (RFC 6120 8.4).
pub fn answer_server_iq(iq: &Element, ctx: &IqContext) -> Element {
    SERVER_FEATURES
        .iter()
        .find_map(|f| f.handle(iq, ctx))
        .unwrap_or_else(|| error_reply(iq, StanzaErrorKind::ServiceUnavailable, None))
}

/// The empty `result` for an iq: same id, addresses swapped.
pub fn result_for(iq: &Element) -> Element {
    let mut reply = Element::new("iq", iq.ns()).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        reply.set_attr("id", id);
    }
    if let Some(from) = iq.attr("from") {
        reply.set_attr("to", from);
    }
    if let Some(to) = iq.attr("to") {
        reply.set_attr("from", to);
    }
    reply
}

/// The iq's single payload child, if it is `name` in `ns` and the type is `ty`.
pub fn payload<'a>(iq: &'a Element, ty: &str, name: &str, ns: &str) -> Option<&'a Element> {
    if iq.attr("type") != Some(ty) {
        return None;
    }
    iq.get_child(name, ns)
}
