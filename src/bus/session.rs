//! How anything reaches one bound client stream.

use actix::prelude::*;

use super::messages::{Deliver, DeliverBatch, Kick};
use crate::xmpp::element::Element;
use crate::xmpp::error::StreamErrorKind;

/// How the router and user actors reach one bound client stream.
#[derive(Clone)]
pub struct SessionHandle {
    pub full_jid: String,
    pub session_id: String,
    pub deliver: Recipient<Deliver>,
    pub kick: Recipient<Kick>,
    pub batch: Recipient<DeliverBatch>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("full_jid", &self.full_jid)
            .field("session_id", &self.session_id)
            .finish()
    }
}

/// Hand a stanza to a session; a session whose queue is full is too slow to
/// keep up and is disconnected rather than allowed to grow without bound.
pub fn deliver_or_kick(handle: &SessionHandle, stanza: Element) {
    if let Err(SendError::Full(_)) = handle.deliver.try_send(Deliver(stanza)) {
        tracing::warn!(jid = %handle.full_jid, "outbound queue full; disconnecting slow client");
        handle.kick.do_send(Kick {
            condition: StreamErrorKind::PolicyViolation,
            text: Some("too many stanzas waiting to be written".into()),
        });
    }
}
