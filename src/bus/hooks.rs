//! Delivery hooks: how features take part in delivery without the router knowing them
//! (as in Prosody, a feature registers for the events it handles). The router runs every
//! registered hook, in the order `crate::features::delivery_hooks` lists them, at each
//! of the points below; a hook that has nothing to say at a point keeps the default.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chorus_raft::ReadError;

use super::messages::UserEvent;
use crate::xmpp::element::Element;
use crate::xmpp::stanza::StanzaKind;

/// What a hook says of a stanza for a local account before any local path takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Pass,
    /// Not delivered, and nothing said; the reason is logged.
    Drop(&'static str),
    /// Not delivered; the sender gets `service-unavailable`.
    Bounce(&'static str),
}

pub trait DeliveryHook: Send + Sync {
    /// A stanza for the local account `to_bare` (which may not exist), before any
    /// session, user actor or offline store sees it. A read error refuses it.
    fn screen(
        &self,
        to_bare: &str,
        stanza: &Element,
        kind: StanzaKind,
    ) -> Result<Screen, ReadError> {
        let _ = (to_bare, stanza, kind);
        Ok(Screen::Pass)
    }

    /// A stanza was handed to the stream `full_jid` of `account`: what the account's user
    /// actor should hear of it.
    fn delivered(&self, account: &str, full_jid: &str, stanza: &Element) -> Option<UserEvent> {
        let _ = (account, full_jid, stanza);
        None
    }

    /// No resource takes the stanza and RFC 6121 says to keep it: `None` once this hook
    /// took it, else the stanza back.
    fn keep_for_later(&self, bare: &str, stanza: Element) -> Option<Element> {
        let _ = bare;
        Some(stanza)
    }

    /// Who hears `user`'s presence broadcast (and, when a stream of `user` on another
    /// node ends, its unavailable): adds or removes accounts, the hooks in order on one
    /// list.
    fn presence_audience(&self, user: &str, audience: &mut Vec<String>) -> Result<(), ReadError> {
        let _ = (user, audience);
        Ok(())
    }

    /// A stanza a peer never took: whether it may be routed anew (a copy of one another
    /// stream has, say, may not).
    fn reroutable(&self, stanza: &Element) -> bool {
        let _ = stanza;
        true
    }

    /// The state machine added to `queue` of `user`, who is online here: what the user's
    /// actor should hear of it.
    fn queued(&self, user: &str, queue: &str) -> Option<UserEvent> {
        let _ = (user, queue);
        None
    }
}

/// The registered hooks, in order.
#[derive(Clone)]
pub struct Hooks {
    hooks: Arc<[Arc<dyn DeliveryHook>]>,
    /// Stanzas a hook screened out (dropped or bounced), for `/metrics`.
    screened: Arc<AtomicU64>,
}

impl Hooks {
    pub fn new(hooks: Vec<Arc<dyn DeliveryHook>>) -> Hooks {
        Hooks {
            hooks: hooks.into(),
            screened: Arc::default(),
        }
    }

    /// Stanzas screened out since the node started.
    pub fn screened(&self) -> u64 {
        self.screened.load(Ordering::Relaxed)
    }

    /// The first verdict that is not `Pass`.
    pub fn screen(
        &self,
        to_bare: &str,
        stanza: &Element,
        kind: StanzaKind,
    ) -> Result<Screen, ReadError> {
        for hook in self.hooks.iter() {
            match hook.screen(to_bare, stanza, kind)? {
                Screen::Pass => continue,
                verdict => {
                    self.screened.fetch_add(1, Ordering::Relaxed);
                    return Ok(verdict);
                }
            }
        }
        Ok(Screen::Pass)
    }

    pub fn delivered(&self, account: &str, full_jid: &str, stanza: &Element) -> Vec<UserEvent> {
        self.hooks
            .iter()
            .filter_map(|h| h.delivered(account, full_jid, stanza))
            .collect()
    }

    /// `None` once a hook took it; the stanza back when none did.
    pub fn keep_for_later(&self, bare: &str, stanza: Element) -> Option<Element> {
        let mut stanza = stanza;
        for hook in self.hooks.iter() {
            stanza = hook.keep_for_later(bare, stanza)?;
        }
        Some(stanza)
    }

    pub fn presence_audience(&self, user: &str) -> Result<Vec<String>, ReadError> {
        let mut audience = Vec::new();
        for hook in self.hooks.iter() {
            hook.presence_audience(user, &mut audience)?;
        }
        Ok(audience)
    }

    pub fn reroutable(&self, stanza: &Element) -> bool {
        self.hooks.iter().all(|h| h.reroutable(stanza))
    }

    pub fn queued(&self, user: &str, queue: &str) -> Vec<UserEvent> {
        self.hooks
            .iter()
            .filter_map(|h| h.queued(user, queue))
            .collect()
    }
}
