//! RFC 3921 section 3 session establishment. RFC 6120 dropped it, but older
//! clients still send it after binding; the answer is an empty result.

use std::sync::Arc;

use super::{payload, result_for, Answer, Caller, IqFeature, Target};
use crate::xmpp::element::Element;
use crate::xmpp::ns;

pub struct LegacySession;

impl IqFeature for LegacySession {
    fn disco_features(&self) -> &'static [&'static str] {
        &[]
    }

    fn handle(&self, iq: &Element, target: &Target, _: &Arc<Caller>) -> Option<Answer> {
        if matches!(target, Target::Account(_)) {
            return None;
        }
        payload(iq, "set", "session", ns::SESSION).map(|_| Answer::Now(result_for(iq)))
    }
}
