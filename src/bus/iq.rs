//! The contract between a session and the features that answer its iqs.

use std::sync::Arc;

use actix::Recipient;
use chorus_raft::RaftNode;
use futures::future::BoxFuture;

use super::hooks::Hooks;
use super::messages::SessionFlag;
use super::port::RouterPort;
use crate::auth::pool::HashPool;
use crate::config::Settings;
use crate::rate::Rates;
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
    /// Where stanzas and pushes for others go.
    pub router: RouterPort,
    /// The delivery hooks, for a feature that acts as the recipient's server itself
    /// (a subscription's contact side screens it as the router would).
    pub hooks: Hooks,
    pub settings: Arc<Settings>,
    /// The sender's session, for per-stream switches (carbons, roster interest).
    pub session: Recipient<SessionFlag>,
    /// When this node started serving clients: its uptime (XEP-0012).
    pub started: std::time::Instant,
    /// Rate limits (password changes) and the password hashing pool.
    pub rates: Arc<Rates>,
    pub hashing: Arc<HashPool>,
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
