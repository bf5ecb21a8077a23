//! XEP-0092: Software Version.

use std::sync::Arc;

use super::{payload, result_for, Answer, Caller, IqFeature, Target};
use crate::xmpp::element::Element;
use crate::xmpp::ns;

pub struct Version;

impl IqFeature for Version {
    fn disco_features(&self) -> &'static [&'static str] {
        &[ns::VERSION]
    }

    fn handle(&self, iq: &Element, target: &Target, _: &Arc<Caller>) -> Option<Answer> {
        if *target != Target::Server {
            return None;
        }
        payload(iq, "get", "query", ns::VERSION)?;
        let query = Element::new("query", ns::VERSION)
            .with_child(Element::new("name", ns::VERSION).with_text("Chorus"))
            .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
        Some(Answer::Now(result_for(iq).with_child(query)))
    }
}
