//! XEP-0160: messages for an account with no available resource are kept
//! through Raft (a per-account queue with a limit) and delivered, in order and
//! with XEP-0203 delay stamps, when a resource sends initial presence with a
//! non-negative priority.

use std::sync::Arc;

use actix::Recipient;
use chorus_raft::{Command, CommandResult, RaftNode};
use tokio::sync::mpsc;

use crate::bus::hooks::DeliveryHook;
use crate::bus::{DeliverBatch, OfflineQueued, RouteStanza, UserEvent};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, StanzaErrorKind};

pub const QUEUE: &str = "offline";
pub const DELAY_NS: &str = "urn:xmpp:delay";
/// Stanzas handed to a session per batch: bounded, so delivery follows the
/// client's pace instead of filling the node's memory.
const PAGE: usize = 256;
/// Messages waiting for the writer.
const WRITER_QUEUE: usize = 16 * 1024;

/// Which messages are kept (RFC 6121 8.5.2.2.1, XEP-0160 section 3): chat and
/// normal with something to say; no errors, groupchat or headlines.
pub fn keep(stanza: &Element) -> bool {
    matches!(stanza.attr("type").unwrap_or("normal"), "chat" | "normal")
}

/// A message for an account that cannot take it now.
pub struct ForLater {
    pub user: String,
    pub stanza: Element,
}

/// The one writer of offline messages on this node: it proposes them in the
/// order it gets them (so a user reads them in the order they were sent) while
/// consecutive ones still share Raft log entries. A refused message is
/// bounced to its sender with `service-unavailable` (RFC 6121 8.5.2.2.1).
pub fn spawn_writer(
    raft: Arc<RaftNode>,
    router: Recipient<RouteStanza>,
    domain: String,
    limit: u64,
    max_bytes: u64,
) -> mpsc::Sender<ForLater> {
    let (tx, mut rx) = mpsc::channel::<ForLater>(WRITER_QUEUE);
    tokio::spawn(async move {
        while let Some(ForLater { user, stanza }) = rx.recv().await {
            if !keep(&stanza) {
                bounce(&router, &stanza, StanzaErrorKind::ServiceUnavailable);
                continue;
            }
            let cmd = Command::QueuePushBounded {
                user: user.clone(),
                queue: QUEUE.to_string(),
                value: stamped(&stanza, &domain).to_xml().into_bytes(),
                limit,
                max_bytes,
            };
            let pending = match raft.enqueue(cmd).await {
                Ok(pending) => pending,
                Err(e) => {
                    tracing::warn!(%user, error = %e, "offline message not stored");
                    bounce(&router, &stanza, StanzaErrorKind::InternalServerError);
                    continue;
                }
            };
            let router = router.clone();
            tokio::spawn(async move {
                let refused = match pending.await {
                    Ok(CommandResult::Queued { .. }) => return,
                    Ok(CommandResult::QueueFull { .. } | CommandResult::NoSuchUser) => {
                        StanzaErrorKind::ServiceUnavailable
                    }
                    other => {
                        tracing::warn!(%user, result = ?other, "offline message not stored");
                        StanzaErrorKind::InternalServerError
                    }
                };
                bounce(&router, &stanza, refused);
            });
        }
    });
    tx
}

/// Hand a message to the writer; if even its queue is full, the node is
/// overloaded and the sender hears so at once.
pub fn keep_for_later(
    writer: &mpsc::Sender<ForLater>,
    router: &Recipient<RouteStanza>,
    user: &str,
    stanza: Element,
) {
    if let Err(e) = writer.try_send(ForLater {
        user: user.to_string(),
        stanza,
    }) {
        let (mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f)) = e;
        bounce(router, &f.stanza, StanzaErrorKind::ResourceConstraint);
    }
}

/// The offline store's part in delivery: it keeps what RFC 6121 says to keep for an
/// account with no available resource, and tells an online user's actor when a message
/// was stored for it (so that a stream that became available meanwhile gets it).
#[derive(Clone)]
pub struct OfflineHook {
    pub writer: mpsc::Sender<ForLater>,
    /// Where refusals go back to the sender.
    pub router: Recipient<RouteStanza>,
}

impl DeliveryHook for OfflineHook {
    fn keep_for_later(&self, bare: &str, stanza: Element) -> Option<Element> {
        keep_for_later(&self.writer, &self.router, bare, stanza);
        None
    }

    fn queued(&self, _user: &str, queue: &str) -> Option<UserEvent> {
        (queue == QUEUE).then_some(UserEvent::OfflineQueued(OfflineQueued))
    }
}

fn bounce(router: &Recipient<RouteStanza>, stanza: &Element, kind: StanzaErrorKind) {
    if stanza.attr("type") != Some("error") && stanza.attr("from").is_some() {
        router.do_send(RouteStanza(error_reply(stanza, kind, None)));
    }
}

/// The message as kept: with an XEP-0203 delay stamp made now, here (the state
/// machine reads no clock).
fn stamped(stanza: &Element, domain: &str) -> Element {
    let mut kept = stanza.clone();
    if kept.get_child("delay", DELAY_NS).is_none() {
        let stamp = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        kept.append_child(
            Element::new("delay", DELAY_NS)
                .with_attr("from", domain)
                .with_attr("stamp", stamp)
                .with_text("Offline Storage"),
        );
    }
    kept
}

/// Deliver every kept message to one resource, oldest first, then drop what
/// was delivered. A message that arrives meanwhile has a later sequence
/// number and stays for the next delivery.
pub async fn deliver(
    raft: &RaftNode,
    user: &str,
    to: &str,
    session: &Recipient<DeliverBatch>,
) -> u64 {
    // A delivery waits for the one before it to have removed what it wrote: a client
    // that read its messages and logged in again at once must not get them twice.
    let lock = super::account_lock("offline", user);
    let _turn = lock.lock().await;
    let mut after = 0u64;
    let mut delivered = 0u64;
    loop {
        let page = match raft.state().queue(user, QUEUE, after, PAGE) {
            Ok(page) => page,
            Err(e) => {
                // What is left stays queued for the next login.
                tracing::error!(%user, error = %e, "offline queue unreadable; delivery stopped");
                break;
            }
        };
        let Some(&(last, _)) = page.last() else { break };
        let batch: Vec<Element> = page
            .iter()
            .filter_map(|(_, xml)| Element::from_xml(std::str::from_utf8(xml).ok()?).ok())
            .map(|mut el| {
                el.set_attr("to", to);
                el
            })
            .collect();
        match session.send(DeliverBatch(batch)).await {
            Ok(true) => {}
            // The stream went away before the page was on its socket: the page stays
            // queued (what of it was written may come again: at least once).
            _ => break,
        }
        delivered += page.len() as u64;
        after = last;
    }
    if after > 0 {
        let cmd = Command::QueueRemove {
            user: user.to_string(),
            queue: QUEUE.to_string(),
            through_seq: after,
        };
        if let Err(e) = raft.propose(cmd).await {
            tracing::warn!(%user, error = %e, "delivered offline messages could not be removed; they may come again");
        }
    }
    delivered
}

/// XEP-0160 has no protocol of its own; the server only says it keeps messages.
pub struct OfflineFeature;

impl crate::bus::iq::IqFeature for OfflineFeature {
    fn disco_features(&self) -> &'static [&'static str] {
        &["msgoffline"]
    }

    fn handle(
        &self,
        _: &Element,
        _: &crate::bus::iq::Target,
        _: &Arc<crate::bus::iq::Caller>,
    ) -> Option<crate::bus::iq::Answer> {
        None
    }
}
