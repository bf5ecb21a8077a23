//! The registry of features: which modules answer the iqs the server handles (and so
//! what disco advertises), and which delivery hooks the router runs, in order. It sits
//! above `im` and `xep`, so that neither needs the other's list and the router needs
//! neither.

pub mod disco;

use std::sync::Arc;

use chorus_raft::StateReader;

use crate::bus::hooks::{DeliveryHook, Hooks};
use crate::bus::iq::{hidden, Answer, Caller, IqFeature, Target};
use crate::xep;
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, unreadable_state, StanzaErrorKind};

/// Every feature the server answers, in one place.
pub static SERVER_FEATURES: &[&dyn IqFeature] = &[
    &disco::Disco,
    &xep::ping::Ping,
    &xep::version::Version,
    &xep::legacy_session::LegacySession,
    &xep::vcard::VCard,
    &xep::private::Private,
    &xep::register::Register,
    &crate::im::roster::RosterFeature,
    &crate::im::offline::OfflineFeature,
    &xep::carbons::Carbons,
    &xep::blocking::Blocking,
    &xep::last_activity::LastActivity,
];

/// Answer an iq get or set handled by the server: the feature's answer, or
/// `service-unavailable` when no feature takes it (RFC 6120 8.4).
pub fn answer_iq(iq: &Element, target: &Target, caller: &Arc<Caller>) -> Answer {
    // XEP-0191 3.3: an account that blocked the sender answers as if it were not there.
    if let Target::Account(owner) = target {
        match xep::blocking::is_blocked(&caller.raft.state(), owner, &caller.full_jid) {
            Ok(false) => {}
            Ok(true) => return Answer::Now(hidden(iq)),
            Err(_) => return Answer::Now(unreadable_state(iq)),
        }
    }
    SERVER_FEATURES
        .iter()
        .find_map(|f| f.handle(iq, target, caller))
        .unwrap_or_else(|| Answer::Now(error_reply(iq, StanzaErrorKind::ServiceUnavailable, None)))
}

/// Data kinds a delivery hook reads for every stanza: which accounts hold any is kept in
/// memory by the state machine (`RaftConfig::memory_kinds`), so that the many accounts
/// with none cost no storage read.
pub fn memory_kinds() -> Vec<String> {
    vec![xep::blocking::KIND.to_string()]
}

/// Data kinds read whole several times for every login, logout and presence: the last
/// reads are kept in memory by the state machine (`RaftConfig::cached_kinds`, within
/// `cluster.data_cache_bytes`), true to the replica at every applied index.
pub fn cached_kinds() -> Vec<String> {
    vec![crate::im::roster::KIND.to_string()]
}

/// The delivery hooks the router runs, in order: the block list screens first and
/// filters the presence audience that presence fan-out makes; carbons; offline storage.
pub fn delivery_hooks(state: StateReader, offline: crate::im::offline::OfflineHook) -> Hooks {
    let hooks: Vec<Arc<dyn DeliveryHook>> = vec![
        Arc::new(crate::im::presence::PresenceHook {
            state: state.clone(),
        }),
        Arc::new(xep::blocking::BlockingHook { state }),
        Arc::new(xep::carbons::CarbonsHook),
        Arc::new(offline),
    ];
    Hooks::new(hooks)
}
