//! XEP-0160: messages for an account with no available resource are kept
//! through Raft (a per-account queue with a limit) and delivered, in order and
//! with XEP-0203 delay stamps, when a resource sends initial presence with a
//! non-negative priority.

use actix::Recipient;
use chorus_raft::{Command, CommandResult, RaftNode};

use crate::router::messages::DeliverBatch;
use crate::xmpp::element::Element;

pub const QUEUE: &str = "offline";
pub const DELAY_NS: &str = "urn:xmpp:delay";
/// Stanzas handed to a session per batch: bounded, so delivery follows the
/// client's pace instead of filling the node's memory.
const PAGE: usize = 256;

/// Which messages are kept (RFC 6121 8.5.2.2.1, XEP-0160 section 3): chat and
/// normal with something to say; no errors, groupchat or headlines.
pub fn keep(stanza: &Element) -> bool {
    matches!(stanza.attr("type").unwrap_or("normal"), "chat" | "normal")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Kept,
    /// The account's queue is at its limit; the sender gets service-unavailable.
    Full,
    NoSuchUser,
}

/// Keep a message for `user`, stamped now by `domain` (the stamp is made
/// here, never in the state machine, which reads no clock).
pub async fn store(
    raft: &RaftNode,
    domain: &str,
    user: &str,
    stanza: &Element,
    limit: u64,
) -> Result<Stored, String> {
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
    let cmd = Command::QueuePush {
        user: user.to_string(),
        queue: QUEUE.to_string(),
        value: kept.to_xml().into_bytes(),
        limit,
    };
    match raft.propose(cmd).await.map_err(|e| e.to_string())? {
        CommandResult::Queued { .. } => Ok(Stored::Kept),
        CommandResult::QueueFull { .. } => Ok(Stored::Full),
        CommandResult::NoSuchUser => Ok(Stored::NoSuchUser),
        other => Err(format!("unexpected result {other:?}")),
    }
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
    let mut after = 0u64;
    let mut delivered = 0u64;
    loop {
        let page = raft.state().queue(user, QUEUE, after, PAGE);
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
            // The stream went away: what was not handed over stays queued.
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
