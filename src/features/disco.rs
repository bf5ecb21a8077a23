//! XEP-0030: Service Discovery for the server itself. Its feature list is
//! gathered from every module in `SERVER_FEATURES`, so it advertises exactly
//! what is implemented.

use std::sync::Arc;

use super::SERVER_FEATURES;
use crate::bus::iq::{payload, result_for, Answer, Caller, IqFeature, Target};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, unreadable_state, StanzaErrorKind};
use crate::xmpp::ns;

pub struct Disco;

impl IqFeature for Disco {
    fn disco_features(&self) -> &'static [&'static str] {
        &[ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        let info = payload(iq, "get", "query", ns::DISCO_INFO);
        let items = payload(iq, "get", "query", ns::DISCO_ITEMS);
        let query = info.or(items)?;
        if let Target::Account(user) = target {
            // RFC 6121 8.5.1: no such account, no answer on its behalf.
            match caller.raft.state().user(user) {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(_) => return Some(Answer::Now(unreadable_state(iq))),
            }
        }
        if query.attr("node").is_some() {
            return Some(Answer::Now(error_reply(
                iq,
                StanzaErrorKind::ItemNotFound,
                None,
            )));
        }
        let body = match (info.is_some(), target) {
            (true, Target::Server) => server_info(),
            (true, _) => account_info(),
            (false, _) => Element::new("query", ns::DISCO_ITEMS),
        };
        Some(Answer::Now(result_for(iq).with_child(body)))
    }
}

/// The server's identity and sorted, de-duplicated features.
pub fn server_features() -> Vec<&'static str> {
    let mut features: Vec<&'static str> = SERVER_FEATURES
        .iter()
        .flat_map(|f| f.disco_features().iter().copied())
        .collect();
    features.sort_unstable();
    features.dedup();
    features
}

/// XEP-0030 section 3.1: an account answers as a registered account.
fn account_info() -> Element {
    Element::new("query", ns::DISCO_INFO).with_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "account")
            .with_attr("type", "registered"),
    )
}

fn server_info() -> Element {
    let mut query = Element::new("query", ns::DISCO_INFO).with_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "Chorus"),
    );
    for feature in server_features() {
        query.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", feature));
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disco_lists_every_registered_feature_once() {
        let f = server_features();
        assert!(f.contains(&ns::PING) && f.contains(&ns::VERSION) && f.contains(&ns::DISCO_INFO));
        let mut d = f.clone();
        d.dedup();
        assert_eq!(d, f);
    }
}
