//! Features the server itself answers: one module per XEP or RFC section, each
//! naming its disco features and answering the iqs of its namespace. The
//! session actor dispatches iqs addressed to the server here; it implements
//! none of them.

pub mod blocking;
pub mod carbons;
pub mod csi;
pub mod disco;
pub mod last_activity;
pub mod legacy_session;
pub mod ping;
pub mod private;
pub mod register;
pub mod stored;
pub mod vcard;
pub mod version;

use std::sync::Arc;

use actix::{Addr, Recipient};
use chorus_raft::RaftNode;
use futures::future::BoxFuture;

use crate::config::Settings;
use crate::router::messages::SessionFlag;
use crate::router::Router;
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaErrorKind};

/// Whom an iq handled by the server is about (RFC 6120 10.3, RFC 6121 8.5.2.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `to` is the domain.
    Server,
    /// No `to`, or the sender's own bare JID: the server answers for the account.
    OwnAccount,
    /// Another account's bare JID in our domain (which may not exist).
    Account(String),
}

/// What a feature may use to answer: the sender, and the node's services. One
/// per session, shared by the futures of its answers.
pub struct Caller {
    pub domain: String,
    /// The sender's full JID.
    pub full_jid: String,
    /// The sender's stream (its route's session id).
    pub session_id: String,
    pub bare_jid: String,
    pub raft: Arc<RaftNode>,
    pub router: Addr<Router>,
    pub settings: Arc<Settings>,
    /// The sender's session, for per-stream switches (carbons, roster interest).
    pub session: Recipient<SessionFlag>,
    /// When this node started serving clients: its uptime (XEP-0012).
    pub started: std::time::Instant,
    /// Rate limits (password changes) and the password hashing pool.
    pub rates: Arc<crate::rate::Rates>,
    pub hashing: Arc<crate::auth::pool::HashPool>,
}

/// A feature's answer: ready now, or after a Raft write.
pub enum Answer {
    Now(Element),
    Later(BoxFuture<'static, Element>),
}

pub trait IqFeature: Sync {
    /// The features this module adds to the server's disco#info.
    fn disco_features(&self) -> &'static [&'static str];
    /// Answer an iq get or set handled by the server, or `None` if this
    /// feature does not take it.
    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer>;
}

/// Every feature the server answers, in one place.
pub static SERVER_FEATURES: &[&dyn IqFeature] = &[
    &disco::Disco,
    &ping::Ping,
    &version::Version,
    &legacy_session::LegacySession,
    &vcard::VCard,
    &private::Private,
    &register::Register,
    &crate::im::roster::RosterFeature,
    &crate::im::offline::OfflineFeature,
    &carbons::Carbons,
    &blocking::Blocking,
    &last_activity::LastActivity,
];

/// Answer an iq get or set handled by the server: the feature's answer, or
/// `service-unavailable` when no feature takes it (RFC 6120 8.4).
pub fn answer_iq(iq: &Element, target: &Target, caller: &Arc<Caller>) -> Answer {
    // XEP-0191 3.3: an account that blocked the sender answers as if it were not there.
    if let Target::Account(owner) = target {
        if blocking::is_blocked(&caller.raft.state(), owner, &caller.full_jid) {
            return Answer::Now(hidden(iq));
        }
    }
    SERVER_FEATURES
        .iter()
        .find_map(|f| f.handle(iq, target, caller))
        .unwrap_or_else(|| Answer::Now(error_reply(iq, StanzaErrorKind::ServiceUnavailable, None)))
}

/// The answer for another account's data the asker may not see, the same as
/// for an account that does not exist (RFC 6121 8.5.1) and one that blocked
/// the asker (XEP-0191 3.3): no condition, no text tells the three apart, so
/// these iqs cannot be used to find out which accounts exist.
pub fn hidden(iq: &Element) -> Element {
    error_reply(iq, StanzaErrorKind::ServiceUnavailable, None)
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
