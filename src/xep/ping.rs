//! XEP-0199: XMPP Ping. Clients ping the server; the server pings idle clients
//! (see `c2s::session`).

use std::sync::Arc;

use super::{payload, result_for, Answer, Caller, IqFeature, Target};
use crate::xmpp::element::Element;
use crate::xmpp::ns;

pub struct Ping;

impl IqFeature for Ping {
    fn disco_features(&self) -> &'static [&'static str] {
        &[ns::PING]
    }

    fn handle(&self, iq: &Element, target: &Target, _: &Arc<Caller>) -> Option<Answer> {
        if matches!(target, Target::Account(_)) {
            return None;
        }
        payload(iq, "get", "ping", ns::PING).map(|_| Answer::Now(result_for(iq)))
    }
}

/// The ping the server sends to a client that has been silent.
pub fn server_ping(domain: &str, to: &str, id: &str) -> Element {
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_attr("id", id)
        .with_attr("from", domain)
        .with_attr("to", to)
        .with_child(Element::new("ping", ns::PING))
}
