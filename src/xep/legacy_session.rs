//! RFC 3921 section 3 session establishment. RFC 6120 dropped it, but older
//! clients still send it after binding; the answer is an empty result.

use super::{payload, result_for, IqContext, IqFeature};
use crate::xmpp::element::Element;
use crate::xmpp::ns;

pub struct LegacySession;

impl IqFeature for LegacySession {
    fn disco_features(&self) -> &'static [&'static str] {
        &[]
    }

    fn handle(&self, iq: &Element, _: &IqContext) -> Option<Element> {
        payload(iq, "set", "session", ns::SESSION).map(|_| result_for(iq))
    }
}
