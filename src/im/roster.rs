//! RFC 6121 section 2: the roster, kept through Raft, with XEP-0237 versioning.
//!
//! One account's roster is one Raft data kind: `i:JID` keys hold roster items,
//! `p:JID` keys hold subscription requests waiting for the user's answer
//! (RFC 6121 3.1.3). Keeping both in one kind makes every subscription change
//! one compare-and-set on one version, which is also the roster version that
//! clients see (`ver`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chorus_raft::{Command, CommandResult, RaftNode, ReadError, StateReader};
use serde::{Deserialize, Serialize};

use crate::bus::iq::{result_for, Answer, Caller, IqFeature, Target};
use crate::bus::{SessionFlag, ToResources, Which};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, unreadable_state, StanzaErrorKind};
use crate::xmpp::ns;

pub const KIND: &str = "roster";
pub const NS: &str = "jabber:iq:roster";
/// XEP-0237 is announced as a stream feature, not in disco.
pub const VER_FEATURE_NS: &str = "urn:xmpp:features:rosterver";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn name(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }

    pub fn with(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    pub jid: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub subscription: Subscription,
    /// The user asked to subscribe and the contact has not answered (pending out).
    #[serde(default)]
    pub ask: bool,
    /// The user pre-approved the contact's subscription (RFC 6121 3.4).
    #[serde(default)]
    pub approved: bool,
}

impl RosterItem {
    pub fn new(jid: &str) -> Self {
        RosterItem {
            jid: jid.to_string(),
            ..Default::default()
        }
    }

    pub fn to_element(&self) -> Element {
        let mut item = Element::new("item", NS)
            .with_attr("jid", self.jid.as_str())
            .with_attr("subscription", self.subscription.name());
        if let Some(name) = &self.name {
            item.set_attr("name", name.as_str());
        }
        if self.ask {
            item.set_attr("ask", "subscribe");
        }
        if self.approved {
            item.set_attr("approved", "true");
        }
        for group in &self.groups {
            item.append_child(Element::new("group", NS).with_text(group.as_str()));
        }
        item
    }
}

/// One contact's entry in a user's roster data: the item (if the user has one)
/// and the contact's unanswered subscription request (if any), as stanza XML.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub item: Option<RosterItem>,
    pub pending_in: Option<String>,
}

/// A whole roster as read from the local replica.
#[derive(Clone, Debug, Default)]
pub struct Roster {
    pub version: u64,
    pub items: BTreeMap<String, RosterItem>,
    pub pending_in: BTreeMap<String, String>,
}

fn item_key(jid: &str) -> String {
    format!("i:{jid}")
}

fn pending_key(jid: &str) -> String {
    format!("p:{jid}")
}

pub fn load(state: &StateReader, user: &str) -> Result<Roster, ReadError> {
    let (version, items) = state.data_with_version(user, KIND)?;
    let mut roster = Roster {
        version,
        ..Default::default()
    };
    for (key, value) in items {
        if let Some(jid) = key.strip_prefix("i:") {
            if let Ok(item) = serde_json::from_slice::<RosterItem>(&value) {
                roster.items.insert(jid.to_string(), item);
            }
        } else if let Some(jid) = key.strip_prefix("p:") {
            roster.pending_in.insert(
                jid.to_string(),
                String::from_utf8_lossy(&value).into_owned(),
            );
        }
    }
    Ok(roster)
}

fn load_entry(state: &StateReader, user: &str, contact: &str) -> Result<Entry, ReadError> {
    Ok(Entry {
        item: state
            .data(user, KIND, &item_key(contact))?
            .and_then(|v| serde_json::from_slice(&v).ok()),
        pending_in: state
            .data(user, KIND, &pending_key(contact))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    #[error("no such account")]
    NoSuchUser,
    #[error("the roster could not be written: {0}")]
    Raft(String),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// The outcome of a committed change to one contact's entry.
#[derive(Clone, Debug)]
pub struct Updated {
    pub before: Entry,
    pub after: Entry,
    pub version: u64,
}

/// Read-modify-write one contact's entry: `change` sees the current entry and
/// returns the new one, or `None` for no change. The write is a compare-and-set
/// on the roster version, retried from a fresh read when another write won, so
/// concurrent subscription changes (from any node) never overwrite each other.
pub async fn update<F>(
    raft: &RaftNode,
    user: &str,
    contact: &str,
    mut change: F,
) -> Result<Option<Updated>, RosterError>
where
    F: FnMut(&Entry) -> Option<Entry>,
{
    // One roster change of an account at a time here: they would all compete for the
    // same version, and losers would re-read and retry.
    let lock = super::account_lock("roster", user);
    let _turn = lock.lock().await;
    for _ in 0..64 {
        let state = raft.state();
        let version = state.data_version(user, KIND)?;
        let before = load_entry(&state, user, contact)?;
        let Some(after) = change(&before) else {
            return Ok(None);
        };
        if after == before {
            return Ok(None);
        }
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        match &after.item {
            Some(item) => puts.push((
                item_key(contact),
                serde_json::to_vec(item).expect("roster item encodes"),
            )),
            None => deletes.push(item_key(contact)),
        }
        match &after.pending_in {
            Some(xml) => puts.push((pending_key(contact), xml.clone().into_bytes())),
            None => deletes.push(pending_key(contact)),
        }
        let cmd = Command::DataWrite {
            user: user.to_string(),
            kind: KIND.to_string(),
            clear: false,
            deletes,
            puts,
            expect_version: Some(version),
        };
        match raft
            .propose(cmd)
            .await
            .map_err(|e| RosterError::Raft(e.to_string()))?
        {
            CommandResult::DataWritten { version } => {
                return Ok(Some(Updated {
                    before,
                    after,
                    version,
                }))
            }
            CommandResult::VersionMismatch { .. } => {
                // Another write won; wait until this replica has applied it, then retry.
                let _ = raft.ensure_linearizable().await;
                continue;
            }
            CommandResult::NoSuchUser => return Err(RosterError::NoSuchUser),
            other => return Err(RosterError::Raft(format!("unexpected result {other:?}"))),
        }
    }
    Err(RosterError::Raft("too many concurrent changes".into()))
}

/// RFC 6121 2.1.6: push a changed item (or its removal) to every interested resource.
pub fn push(
    caller_router: &crate::bus::RouterPort,
    user: &str,
    contact: &str,
    item: Option<&RosterItem>,
    version: u64,
) {
    let item = match item {
        Some(item) => item.to_element(),
        None => Element::new("item", NS)
            .with_attr("jid", contact)
            .with_attr("subscription", "remove"),
    };
    let stanza = Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", format!("push-{version}"))
        .with_child(
            Element::new("query", NS)
                .with_attr("ver", version.to_string())
                .with_child(item),
        );
    caller_router.do_send(ToResources {
        user: user.to_string(),
        which: Which::RosterInterested,
        stanza,
    });
}

/// The `jabber:iq:roster` iq feature: get, set and remove.
pub struct RosterFeature;

impl IqFeature for RosterFeature {
    fn disco_features(&self) -> &'static [&'static str] {
        &[NS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        let query = iq.get_child("query", NS)?;
        if *target != Target::OwnAccount {
            return Some(Answer::Now(error_reply(
                iq,
                StanzaErrorKind::Forbidden,
                None,
            )));
        }
        match iq.attr("type") {
            Some("get") => Some(Answer::Now(get(iq, query, caller))),
            Some("set") => Some(set(iq, query, caller)),
            _ => None,
        }
    }
}

fn get(iq: &Element, query: &Element, caller: &Arc<Caller>) -> Element {
    caller.session.do_send(SessionFlag::RosterInterest);
    let roster = match load(&caller.raft.state(), &caller.bare_jid) {
        Ok(roster) => roster,
        Err(_) => return unreadable_state(iq),
    };
    let current = roster.version.to_string();
    // XEP-0237: an unchanged roster is answered with an empty result.
    if query.attr("ver") == Some(current.as_str()) {
        return result_for(iq);
    }
    let mut out = Element::new("query", NS).with_attr("ver", current);
    for item in roster.items.values() {
        out.append_child(item.to_element());
    }
    result_for(iq).with_child(out)
}

/// A roster set's item: contact JID, name, groups.
type ItemFields = (String, Option<String>, Vec<String>);

/// Why a roster set is refused (RFC 6121 2.3.3, 2.5.3).
fn check_set(
    item: &Element,
    own: &str,
    max_bytes: usize,
) -> Result<ItemFields, (StanzaErrorKind, &'static str)> {
    let jid = item
        .attr("jid")
        .and_then(|j| jid::BareJid::new(j).ok())
        .ok_or((
            StanzaErrorKind::BadRequest,
            "the item needs a valid bare JID",
        ))?
        .to_string();
    if jid == own {
        return Err((
            StanzaErrorKind::NotAllowed,
            "an account cannot be its own contact",
        ));
    }
    let name = item.attr("name").map(str::to_string);
    let mut groups: Vec<String> = item
        .children()
        .filter(|c| c.is("group", NS))
        .map(|g| g.text())
        .collect();
    if groups.iter().any(|g| g.is_empty()) {
        return Err((
            StanzaErrorKind::NotAcceptable,
            "a group name cannot be empty",
        ));
    }
    let count = groups.len();
    groups.sort();
    groups.dedup();
    if groups.len() != count {
        return Err((StanzaErrorKind::BadRequest, "a group is named twice"));
    }
    let size = jid.len()
        + name.as_ref().map_or(0, |n| n.len())
        + groups.iter().map(|g| g.len()).sum::<usize>();
    if size > max_bytes {
        return Err((StanzaErrorKind::NotAcceptable, "the item is too large"));
    }
    Ok((jid, name, groups))
}

fn set(iq: &Element, query: &Element, caller: &Arc<Caller>) -> Answer {
    let items: Vec<&Element> = query.children().filter(|c| c.is("item", NS)).collect();
    if items.len() != 1 || query.children().count() != 1 {
        return Answer::Now(error_reply(
            iq,
            StanzaErrorKind::BadRequest,
            Some("a roster set carries exactly one item"),
        ));
    }
    let item = items[0];
    let limits = &caller.settings.limits;
    let (contact, name, groups) =
        match check_set(item, &caller.bare_jid, limits.roster_item_bytes as usize) {
            Ok(parts) => parts,
            Err((kind, text)) => return Answer::Now(error_reply(iq, kind, Some(text))),
        };
    let remove = item.attr("subscription") == Some("remove");
    let (iq, caller) = (iq.clone(), caller.clone());
    let max_items = limits.roster_items as usize;
    Answer::Later(Box::pin(async move {
        let user = caller.bare_jid.clone();
        if remove {
            return match crate::im::subscription::remove_contact(&caller, &contact).await {
                Ok(true) => result_for(&iq),
                Ok(false) => error_reply(&iq, StanzaErrorKind::ItemNotFound, None),
                Err(e) => internal(&iq, e),
            };
        }
        let full = match load(&caller.raft.state(), &user) {
            Ok(roster) => roster.items.len() >= max_items,
            Err(_) => return unreadable_state(&iq),
        };
        let outcome = update(&caller.raft, &user, &contact, |entry| {
            if entry.item.is_none() && full {
                return None;
            }
            let mut item = entry
                .item
                .clone()
                .unwrap_or_else(|| RosterItem::new(&contact));
            item.name = name.clone();
            item.groups = groups.clone();
            Some(Entry {
                item: Some(item),
                pending_in: entry.pending_in.clone(),
            })
        })
        .await;
        match outcome {
            Ok(Some(updated)) => {
                push(
                    &caller.router,
                    &user,
                    &contact,
                    updated.after.item.as_ref(),
                    updated.version,
                );
                result_for(&iq)
            }
            Ok(None)
                if full
                    && load_entry(&caller.raft.state(), &user, &contact)
                        .is_ok_and(|e| e.item.is_none()) =>
            {
                error_reply(&iq, StanzaErrorKind::NotAllowed, Some("the roster is full"))
            }
            Ok(None) => result_for(&iq),
            Err(RosterError::Read(_)) => unreadable_state(&iq),
            Err(e) => internal(&iq, e),
        }
    }))
}

pub fn internal(iq: &Element, e: RosterError) -> Element {
    tracing::warn!(error = %e, "roster change failed");
    crate::xmpp::error::error_reply_with_type(
        iq,
        StanzaErrorKind::InternalServerError,
        crate::xmpp::error::ErrorType::Wait,
        Some("try again"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_states_compose() {
        assert_eq!(Subscription::with(true, true), Subscription::Both);
        assert!(Subscription::From.has_from() && !Subscription::From.has_to());
        let mut item = RosterItem::new("b@x");
        item.ask = true;
        item.groups = vec!["G".into()];
        let el = item.to_element();
        assert_eq!(el.attr("ask"), Some("subscribe"));
        assert_eq!(el.attr("subscription"), Some("none"));
        assert_eq!(el.get_child("group", NS).unwrap().text(), "G");
    }

    #[test]
    fn roster_set_checks() {
        let item = |xml: &str| Element::from_xml(xml).unwrap();
        let ok = item("<item xmlns='jabber:iq:roster' jid='b@x' name='B'><group>G</group></item>");
        assert_eq!(
            check_set(&ok, "a@x", 4096).unwrap(),
            ("b@x".into(), Some("B".into()), vec!["G".into()])
        );
        let dup = item(
            "<item xmlns='jabber:iq:roster' jid='b@x'><group>G</group><group>G</group></item>",
        );
        assert_eq!(
            check_set(&dup, "a@x", 4096).unwrap_err().0,
            StanzaErrorKind::BadRequest
        );
        let empty = item("<item xmlns='jabber:iq:roster' jid='b@x'><group></group></item>");
        assert_eq!(
            check_set(&empty, "a@x", 4096).unwrap_err().0,
            StanzaErrorKind::NotAcceptable
        );
        let big = item("<item xmlns='jabber:iq:roster' jid='b@x' name='0123456789'/>");
        assert_eq!(
            check_set(&big, "a@x", 8).unwrap_err().0,
            StanzaErrorKind::NotAcceptable
        );
        let own = item("<item xmlns='jabber:iq:roster' jid='a@x'/>");
        assert!(check_set(&own, "a@x", 4096).is_err());
    }
}
