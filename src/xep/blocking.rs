//! XEP-0191: Blocking Command. An account's block list, and the server
//! refusing communication with what it names.
//!
//! The list is one Raft data kind per account ("blocklist"), one key per
//! blocked JID (as normalized by the `jid` crate) with an empty value, so a
//! block or unblock changes only the keys it names and survives restarts.
//! Changes are a compare-and-set on the kind's version, so the limit
//! (`limits.blocked_jids`) holds against concurrent blocks.
//!
//! Enforcement (section 3.3) lives where stanzas cross:
//! - inbound, in `router::Router::route` before any local delivery (direct to a
//!   session, through the user actor, or to offline storage), in
//!   `xep::answer_iq` for iqs the server answers for the account, and in
//!   `im::subscription` for subscription stanzas (which change the roster
//!   without passing through the router);
//! - outbound, in `c2s::session` before dispatch, and in the user actor's
//!   presence broadcast, so the unavailable presence sent on block stays true.
//!
//! Every check reads the list from the local replica with one RocksDB prefix
//! scan (`data_all`), once per stanza routed to a local account and once per
//! stanza a client sends with a `to`. That is acceptable for now: the scan of
//! an empty list is a single seek. If it shows in profiles, `candidates` gives
//! the at most three keys that can match, so the scan can become three point
//! reads, or the list can be cached in the user actor.
//!
//! Where the XEP leaves a choice:
//! - JID matching follows XEP-0016 2.1 (the XEP's section 4): a full JID item
//!   matches only that resource, a bare JID item any of its resources, a
//!   `domain/resource` item only that, a domain item the domain and every JID
//!   at it. Subdomains do not match (early drafts said they did; XEP-0016 and
//!   Prosody say not).
//! - Outbound: unavailable and unsubscribed presence still go out (the first is
//!   what the server itself sends on block; the second lets the user cut a
//!   subscription), errors and iq results are dropped without an answer (RFC
//!   6120 8.3.1 forbids answering them), everything else is refused with
//!   `<not-acceptable/>` plus `<blocked xmlns='urn:xmpp:blocking:errors'/>`.
//! - Stanzas to the user's own account are never checked: blocking oneself
//!   (or one's own domain) must not cut the user off from their own resources.
//! - A block or unblock iq addressed to another account or to the server is
//!   `forbidden`, as a roster request is.
//! - An invalid JID in an item is `jid-malformed`; an item without one is
//!   `bad-request`. Unblocking a JID that is not blocked is not an error.

use std::collections::BTreeSet;
use std::sync::Arc;

use chorus_raft::{Command, CommandResult, RaftError, RaftNode, ReadError, StateReader};

use super::{result_for, Answer, Caller, IqFeature, Target};
use crate::bus::hooks::{DeliveryHook, Screen};
use crate::bus::{PresenceTo, SessionFlag, ToResources, Which};
use crate::im::roster;
use crate::xmpp::element::Element;
use crate::xmpp::error::{
    error_reply, error_reply_with_type, unreadable_state, ErrorType, StanzaErrorKind,
};
use crate::xmpp::ns;
use crate::xmpp::stanza::StanzaKind;

pub const NS: &str = "urn:xmpp:blocking";
/// The application condition of an outbound stanza refused by the sender's own block.
pub const ERRORS_NS: &str = "urn:xmpp:blocking:errors";
pub const KIND: &str = "blocklist";

/// A compare-and-set that keeps losing means many writers at once; give up rather than spin.
const MAX_ATTEMPTS: usize = 16;

/// The account's block list, read from the local replica.
pub fn load(state: &StateReader, user: &str) -> Result<BTreeSet<String>, ReadError> {
    // From memory: most accounts hold no list, and presence reads it at every broadcast.
    if !state.has_data(user, KIND)? {
        return Ok(BTreeSet::new());
    }
    Ok(state
        .data_all(user, KIND)?
        .into_iter()
        .map(|(key, _)| key)
        .collect())
}

/// The item of `user`'s block list that blocks `from`, if one does: a point lookup of each
/// of at most three candidate keys, not a read of the whole list. A JID that does not
/// parse matches nothing.
pub fn lookup(state: &StateReader, user: &str, from: &str) -> Result<Option<String>, ReadError> {
    let Ok(from) = jid::Jid::new(from) else {
        return Ok(None);
    };
    // From memory: most accounts block no one, and this runs for every stanza.
    if !state.has_data(user, KIND)? {
        return Ok(None);
    }
    for key in candidates(&from) {
        if state.data(user, KIND, &key)?.is_some() {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// The keys of a block list that can match `from` (XEP-0016 2.1): the JID
/// itself, its bare JID and its domain, without repeats.
pub fn candidates(from: &jid::Jid) -> Vec<String> {
    let mut keys = vec![from.as_str().to_string()];
    for key in [from.to_bare().to_string(), from.domain().to_string()] {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The item of `blocklist` that blocks `from`, if one does: the reason a
/// stanza is refused, for the logs.
pub fn matching_item<'a>(blocklist: &'a BTreeSet<String>, from: &str) -> Option<&'a str> {
    if blocklist.is_empty() {
        return None;
    }
    let from = jid::Jid::new(from).ok()?;
    candidates(&from)
        .into_iter()
        .find_map(|key| blocklist.get(&key).map(String::as_str))
}

/// Whether `blocklist` blocks `from_jid`. A JID that does not parse matches nothing.
pub fn blocked(blocklist: &BTreeSet<String>, from_jid: &str) -> bool {
    matching_item(blocklist, from_jid).is_some()
}

/// Whether `user`'s block list (in the local replica) blocks `from`.
pub fn is_blocked(state: &StateReader, user: &str, from: &str) -> Result<bool, ReadError> {
    Ok(lookup(state, user, from)?.is_some())
}

/// What becomes of a stanza for a user from a JID the user blocked (section 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Not delivered, and nothing said: the user looks offline.
    Drop(&'static str),
    /// Not delivered; the sender gets `service-unavailable`, as from an offline user.
    Bounce(&'static str),
}

pub fn inbound_rule(kind: StanzaKind, stanza_type: Option<&str>) -> Inbound {
    match (kind, stanza_type) {
        (StanzaKind::Presence, _) => {
            Inbound::Drop("3.3: presence, subscriptions and probes are ignored without an answer")
        }
        (_, Some("error")) => Inbound::Drop("RFC 6120 8.3.1: an error is never answered"),
        (StanzaKind::Message, _) => Inbound::Bounce("3.3: a message gets service-unavailable"),
        (StanzaKind::Iq, Some("get" | "set")) => {
            Inbound::Bounce("3.3: an iq get or set gets service-unavailable")
        }
        (StanzaKind::Iq, _) => Inbound::Drop("3.3: iqs of other types are dropped"),
    }
}

/// The decision for a stanza routed to local account `user`: `None` to deliver
/// it, or what to do instead because `user` blocked its sender.
pub fn inbound(
    state: &StateReader,
    user: &str,
    stanza: &Element,
    kind: StanzaKind,
) -> Result<Option<Inbound>, ReadError> {
    let Some(from) = stanza.attr("from") else {
        return Ok(None);
    };
    let Some(item) = lookup(state, user, from)? else {
        return Ok(None);
    };
    let verdict = inbound_rule(kind, stanza.attr("type"));
    tracing::debug!(%user, %from, %item, ?verdict, "stanza from a blocked JID");
    Ok(Some(verdict))
}

/// The router's part (section 3.3): a stanza from a blocked JID is dropped or bounced
/// before any local path, and a user's stream ending elsewhere is not told to the JIDs
/// the user blocked.
pub struct BlockingHook {
    pub state: StateReader,
}

impl DeliveryHook for BlockingHook {
    fn screen(
        &self,
        to_bare: &str,
        stanza: &Element,
        kind: StanzaKind,
    ) -> Result<Screen, ReadError> {
        Ok(match inbound(&self.state, to_bare, stanza, kind)? {
            None => Screen::Pass,
            Some(Inbound::Drop(reason)) => Screen::Drop(reason),
            Some(Inbound::Bounce(reason)) => Screen::Bounce(reason),
        })
    }

    fn presence_audience(&self, user: &str, audience: &mut Vec<String>) -> Result<(), ReadError> {
        // Nothing to screen: no list read at all.
        if audience.is_empty() {
            return Ok(());
        }
        let list = load(&self.state, user)?;
        audience.retain(|c| !blocked(&list, c));
        Ok(())
    }
}

/// What becomes of a stanza a user sends to a JID the user blocked (section 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Not blocked, or a kind that may still go out.
    Send,
    /// Not routed and not answered.
    Drop(&'static str),
    /// Not routed; this error goes back to the user.
    Refuse(Element),
}

/// The part of the outbound decision that depends only on the stanza:
/// `Ok(())` lets it go even to a blocked JID, `Err(reason)` drops it silently,
/// and `None` refuses it.
fn outbound_rule(kind: StanzaKind, stanza_type: Option<&str>) -> Option<Result<(), &'static str>> {
    match (kind, stanza_type) {
        (StanzaKind::Presence, Some("unavailable" | "unsubscribed")) => Some(Ok(())),
        (_, Some("error")) | (StanzaKind::Iq, Some("result")) => {
            Some(Err("RFC 6120 8.3.1: an error or result is never answered"))
        }
        _ => None,
    }
}

/// The decision for a stanza user `user` (bare JID) sends to `to`.
pub fn outbound(
    state: &StateReader,
    user: &str,
    kind: StanzaKind,
    stanza: &Element,
    to: &jid::Jid,
) -> Outbound {
    if to.to_bare().as_str() == user {
        return Outbound::Send;
    }
    let item = match lookup(state, user, to.as_str()) {
        Ok(Some(item)) => item,
        Ok(None) => return Outbound::Send,
        // Not sent: the user may have blocked this JID.
        Err(_) => return Outbound::Refuse(unreadable_state(stanza)),
    };
    let verdict = match outbound_rule(kind, stanza.attr("type")) {
        Some(Ok(())) => Outbound::Send,
        Some(Err(reason)) => Outbound::Drop(reason),
        None => Outbound::Refuse(blocked_error(stanza)),
    };
    tracing::debug!(%user, %to, %item, ?verdict, "stanza to a blocked JID");
    verdict
}

/// `<not-acceptable/>` with the XEP's `<blocked/>` condition, from the blocked JID.
fn blocked_error(stanza: &Element) -> Element {
    let mut reply = error_reply_with_type(
        stanza,
        StanzaErrorKind::NotAcceptable,
        ErrorType::Cancel,
        Some("you have blocked this JID; unblock it to communicate"),
    );
    if let Some(error) = reply.get_child_mut("error", stanza.ns()) {
        error.append_child(Element::new("blocked", ERRORS_NS));
    }
    reply
}

/// A change a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Block(Vec<String>),
    Unblock(Vec<String>),
    UnblockAll,
}

/// The items of a block or unblock element, normalized.
fn parse_items(el: &Element) -> Result<Vec<String>, (StanzaErrorKind, &'static str)> {
    let mut items = Vec::new();
    for item in el.children().filter(|c| c.is("item", NS)) {
        let jid = item.attr("jid").ok_or((
            StanzaErrorKind::BadRequest,
            "every item needs a jid attribute",
        ))?;
        let jid = jid::Jid::new(jid).map_err(|_| {
            (
                StanzaErrorKind::JidMalformed,
                "an item's jid is not a valid JID",
            )
        })?;
        let jid = jid.to_string();
        if !items.contains(&jid) {
            items.push(jid);
        }
    }
    Ok(items)
}

/// The action a `<block/>` or `<unblock/>` asks for.
pub fn parse_action(el: &Element) -> Result<Action, (StanzaErrorKind, &'static str)> {
    let items = parse_items(el)?;
    match (el.name(), items.is_empty()) {
        ("block", true) => Err((
            StanzaErrorKind::BadRequest,
            "a block needs at least one item (section 3.3)",
        )),
        ("block", false) => Ok(Action::Block(items)),
        ("unblock", true) => Ok(Action::UnblockAll),
        _ => Ok(Action::Unblock(items)),
    }
}

/// One write that carries out an action on the list as it stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub clear: bool,
    pub deletes: Vec<String>,
    pub puts: Vec<String>,
    /// The list once written.
    pub after: BTreeSet<String>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.clear && self.deletes.is_empty() && self.puts.is_empty()
    }
}

/// The write for `action` on `before`, or why it is refused.
pub fn plan(
    action: &Action,
    before: &BTreeSet<String>,
    limit: u64,
) -> Result<Plan, (StanzaErrorKind, String)> {
    let mut plan = Plan {
        after: before.clone(),
        ..Default::default()
    };
    match action {
        Action::Block(items) => {
            for jid in items {
                if plan.after.insert(jid.clone()) {
                    plan.puts.push(jid.clone());
                }
            }
            if plan.after.len() as u64 > limit {
                return Err((
                    StanzaErrorKind::NotAcceptable,
                    format!(
                        "the block list would hold {} JIDs; the limit is {limit}",
                        plan.after.len()
                    ),
                ));
            }
        }
        Action::Unblock(items) => {
            for jid in items {
                if plan.after.remove(jid) {
                    plan.deletes.push(jid.clone());
                }
            }
        }
        Action::UnblockAll => {
            plan.clear = !before.is_empty();
            plan.after.clear();
        }
    }
    Ok(plan)
}

/// Roster contacts whose view of the user's presence changes when the list
/// goes from `before` to `after` (sections 3.3, 3.4): those that may see it
/// (`from` or `both`) and are now blocked and were not (they get unavailable
/// presence), and the reverse (they get the current presence).
pub fn presence_changes(
    contacts_with_from: &[String],
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let mut now_blocked = Vec::new();
    let mut now_unblocked = Vec::new();
    for contact in contacts_with_from {
        match (blocked(before, contact), blocked(after, contact)) {
            (false, true) => now_blocked.push(contact.clone()),
            (true, false) => now_unblocked.push(contact.clone()),
            _ => {}
        }
    }
    (now_blocked, now_unblocked)
}

/// The push of a change to every resource that asked for the list (sections 3.3 to 3.5).
fn push_stanza(action: &Action, version: u64) -> Element {
    let (name, items): (&str, &[String]) = match action {
        Action::Block(items) => ("block", items),
        Action::Unblock(items) => ("unblock", items),
        Action::UnblockAll => ("unblock", &[]),
    };
    let mut el = Element::new(name, NS);
    for jid in items {
        el.append_child(Element::new("item", NS).with_attr("jid", jid.as_str()));
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", format!("blocklist-push-{version}"))
        .with_child(el)
}

pub struct Blocking;

impl IqFeature for Blocking {
    fn disco_features(&self) -> &'static [&'static str] {
        &[NS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        let el = iq
            .children()
            .find(|c| c.ns() == NS && matches!(c.name(), "blocklist" | "block" | "unblock"))?;
        match target {
            Target::OwnAccount => {}
            // Another account's list: as if there were no such account.
            Target::Account(_) => return Some(Answer::Now(super::hidden(iq))),
            Target::Server => {
                return Some(Answer::Now(error_reply(
                    iq,
                    StanzaErrorKind::Forbidden,
                    Some("a block list is only the account's own"),
                )))
            }
        }
        match (iq.attr("type"), el.name()) {
            (Some("get"), "blocklist") => Some(Answer::Now(get(iq, caller))),
            (Some("set"), "block" | "unblock") => Some(match parse_action(el) {
                Ok(action) => Answer::Later(Box::pin(set(iq.clone(), action, caller.clone()))),
                Err((kind, text)) => Answer::Now(error_reply(iq, kind, Some(text))),
            }),
            _ => Some(Answer::Now(error_reply(
                iq,
                StanzaErrorKind::BadRequest,
                Some("blocklist is read with get; block and unblock are sets"),
            ))),
        }
    }
}

fn get(iq: &Element, caller: &Arc<Caller>) -> Element {
    // Section 3.3: pushes go to the resources that asked for the list.
    caller.session.do_send(SessionFlag::BlocklistInterest);
    let mut list = Element::new("blocklist", NS);
    let Ok(items) = load(&caller.raft.state(), &caller.bare_jid) else {
        return unreadable_state(iq);
    };
    for jid in items {
        list.append_child(Element::new("item", NS).with_attr("jid", jid));
    }
    result_for(iq).with_child(list)
}

async fn set(iq: Element, action: Action, caller: Arc<Caller>) -> Element {
    let user = caller.bare_jid.as_str();
    let limit = caller.settings.limits.blocked_jids;
    let (before, after, version) = match commit(&caller.raft, user, &action, limit).await {
        Ok(done) => done,
        Err((kind, error_type, text)) => {
            return error_reply_with_type(&iq, kind, error_type, Some(&text))
        }
    };
    caller.router.do_send(ToResources {
        user: user.to_string(),
        which: Which::BlocklistInterested,
        stanza: push_stanza(&action, version),
    });
    let contacts = match roster::load(&caller.raft.state(), user) {
        Ok(roster) => crate::im::presence::broadcast_targets(&roster),
        Err(e) => {
            // The list changed; only the presence it would have sent or withdrawn is missed.
            tracing::error!(%user, error = %e, "roster unreadable; no presence changes for a block list change");
            Vec::new()
        }
    };
    let (now_blocked, now_unblocked) = presence_changes(&contacts, &before, &after);
    for (contacts, available) in [(now_blocked, false), (now_unblocked, true)] {
        for to in contacts {
            caller.router.do_send(PresenceTo {
                user: user.to_string(),
                to,
                available,
            });
        }
    }
    result_for(&iq)
}

type Refusal = (StanzaErrorKind, ErrorType, String);

/// Carry out `action` on `user`'s list as one compare-and-set write, retried
/// from a fresh read when another write won. Returns the list before and after
/// and the version that the push names.
async fn commit(
    raft: &RaftNode,
    user: &str,
    action: &Action,
    limit: u64,
) -> Result<(BTreeSet<String>, BTreeSet<String>, u64), Refusal> {
    let retry_later = |text: &str| {
        (
            StanzaErrorKind::InternalServerError,
            ErrorType::Wait,
            text.to_string(),
        )
    };
    for _ in 0..MAX_ATTEMPTS {
        let state = raft.state();
        // The version is read before the list: a write between the two reads
        // then fails the compare-and-set instead of being overwritten.
        let unreadable = |_| {
            (
                StanzaErrorKind::InternalServerError,
                ErrorType::Wait,
                "the server could not read the block list; try again".to_string(),
            )
        };
        let version = state.data_version(user, KIND).map_err(unreadable)?;
        let before = load(&state, user).map_err(unreadable)?;
        let plan = plan(action, &before, limit).map_err(|(kind, text)| {
            let error_type = kind.default_type();
            (kind, error_type, text)
        })?;
        if plan.is_empty() {
            return Ok((before, plan.after, version));
        }
        let outcome = raft
            .propose(Command::DataWrite {
                user: user.to_string(),
                kind: KIND.to_string(),
                clear: plan.clear,
                deletes: plan.deletes,
                // An empty value: the key is the whole item.
                puts: plan.puts.into_iter().map(|jid| (jid, Vec::new())).collect(),
                expect_version: Some(version),
            })
            .await;
        match outcome {
            Ok(CommandResult::DataWritten { version }) => return Ok((before, plan.after, version)),
            Ok(CommandResult::VersionMismatch { .. }) => {
                // Another write won; wait until this replica has it, then plan again.
                let _ = raft.ensure_linearizable().await;
            }
            Ok(CommandResult::NoSuchUser) => {
                return Err((
                    StanzaErrorKind::ItemNotFound,
                    ErrorType::Cancel,
                    "the account no longer exists".into(),
                ))
            }
            Err(RaftError::CommandTooLarge { limit, .. }) => {
                return Err((
                    StanzaErrorKind::NotAcceptable,
                    ErrorType::Modify,
                    format!("larger than the cluster's {limit}-byte command limit; block fewer JIDs at once"),
                ))
            }
            Err(error) => {
                tracing::warn!(%user, %error, "block list write was not committed");
                return Err(retry_later("not stored, try again"));
            }
            Ok(other) => {
                // Keys are valid JIDs (never empty, never NUL), so only a bug gets here.
                tracing::error!(%user, ?other, "unexpected answer to a block list write");
                return Err(retry_later("not stored"));
            }
        }
    }
    Err(retry_later("too many concurrent changes, try again"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn jid_matching_follows_xep_0016_order() {
        let full = list(&["romeo@montague.lit/orchard"]);
        assert!(blocked(&full, "romeo@montague.lit/orchard"));
        assert!(!blocked(&full, "romeo@montague.lit/garden"));
        assert!(!blocked(&full, "romeo@montague.lit"));

        let bare = list(&["romeo@montague.lit"]);
        assert!(blocked(&bare, "romeo@montague.lit"));
        assert!(blocked(&bare, "romeo@montague.lit/anywhere"));
        assert!(!blocked(&bare, "mercutio@montague.lit"));

        let domain_resource = list(&["montague.lit/gate"]);
        assert!(blocked(&domain_resource, "montague.lit/gate"));
        assert!(!blocked(&domain_resource, "romeo@montague.lit/gate"));
        assert!(!blocked(&domain_resource, "montague.lit"));

        let domain = list(&["montague.lit"]);
        for jid in [
            "montague.lit",
            "montague.lit/gate",
            "romeo@montague.lit",
            "romeo@montague.lit/orchard",
        ] {
            assert!(blocked(&domain, jid), "{jid}");
        }
        assert!(!blocked(&domain, "house.montague.lit"));
        assert!(!blocked(&domain, "juliet@capulet.lit"));
    }

    #[test]
    fn matching_names_the_item_and_normalizes_the_sender() {
        let items = list(&["romeo@montague.lit"]);
        assert_eq!(
            matching_item(&items, "Romeo@Montague.lit/Orchard"),
            Some("romeo@montague.lit")
        );
        assert!(!blocked(&items, "not a jid@@"));
        assert!(!blocked(&BTreeSet::new(), "romeo@montague.lit"));
    }

    #[test]
    fn inbound_presence_is_dropped_messages_and_requests_bounce() {
        use StanzaKind::*;
        assert!(matches!(inbound_rule(Presence, None), Inbound::Drop(_)));
        assert!(matches!(
            inbound_rule(Presence, Some("subscribe")),
            Inbound::Drop(_)
        ));
        assert!(matches!(
            inbound_rule(Presence, Some("probe")),
            Inbound::Drop(_)
        ));
        assert!(matches!(inbound_rule(Message, None), Inbound::Bounce(_)));
        assert!(matches!(
            inbound_rule(Message, Some("chat")),
            Inbound::Bounce(_)
        ));
        assert!(matches!(
            inbound_rule(Message, Some("error")),
            Inbound::Drop(_)
        ));
        assert!(matches!(inbound_rule(Iq, Some("get")), Inbound::Bounce(_)));
        assert!(matches!(inbound_rule(Iq, Some("set")), Inbound::Bounce(_)));
        assert!(matches!(inbound_rule(Iq, Some("result")), Inbound::Drop(_)));
        assert!(matches!(inbound_rule(Iq, Some("error")), Inbound::Drop(_)));
    }

    #[test]
    fn outbound_lets_unavailable_and_unsubscribed_through_and_refuses_the_rest() {
        use StanzaKind::*;
        assert_eq!(outbound_rule(Presence, Some("unavailable")), Some(Ok(())));
        assert_eq!(outbound_rule(Presence, Some("unsubscribed")), Some(Ok(())));
        assert!(matches!(
            outbound_rule(Message, Some("error")),
            Some(Err(_))
        ));
        assert!(matches!(outbound_rule(Iq, Some("result")), Some(Err(_))));
        for (kind, ty) in [
            (Message, None),
            (Message, Some("chat")),
            (Presence, None),
            (Presence, Some("subscribe")),
            (Iq, Some("get")),
        ] {
            assert_eq!(outbound_rule(kind, ty), None, "{kind:?} {ty:?}");
        }
    }

    #[test]
    fn the_refusal_carries_the_blocked_condition() {
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("from", "juliet@capulet.lit/balcony")
            .with_attr("to", "romeo@montague.lit")
            .with_attr("id", "m1");
        let reply = blocked_error(&msg);
        assert_eq!(reply.attr("type"), Some("error"));
        assert_eq!(reply.attr("to"), Some("juliet@capulet.lit/balcony"));
        let error = reply.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(error.attr("type"), Some("cancel"));
        assert!(error.get_child("not-acceptable", ns::STANZAS).is_some());
        assert!(error.get_child("blocked", ERRORS_NS).is_some());
    }

    #[test]
    fn actions_are_parsed_from_block_and_unblock() {
        let parse = |xml: &str| parse_action(&Element::from_xml(xml).unwrap());
        assert_eq!(
            parse("<block xmlns='urn:xmpp:blocking'><item jid='A@x'/><item jid='a@x'/></block>"),
            Ok(Action::Block(vec!["a@x".into()]))
        );
        assert_eq!(
            parse("<block xmlns='urn:xmpp:blocking'/>").unwrap_err().0,
            StanzaErrorKind::BadRequest
        );
        assert_eq!(
            parse("<unblock xmlns='urn:xmpp:blocking'/>"),
            Ok(Action::UnblockAll)
        );
        assert_eq!(
            parse("<unblock xmlns='urn:xmpp:blocking'><item jid='b@x/r'/></unblock>"),
            Ok(Action::Unblock(vec!["b@x/r".into()]))
        );
        assert_eq!(
            parse("<block xmlns='urn:xmpp:blocking'><item/></block>")
                .unwrap_err()
                .0,
            StanzaErrorKind::BadRequest
        );
        assert_eq!(
            parse("<block xmlns='urn:xmpp:blocking'><item jid='@x'/></block>")
                .unwrap_err()
                .0,
            StanzaErrorKind::JidMalformed
        );
    }

    #[test]
    fn plans_write_only_what_changes_and_hold_the_limit() {
        let before = list(&["a@x", "b@x"]);
        let p = plan(&Action::Block(vec!["b@x".into(), "c@x".into()]), &before, 3).unwrap();
        assert_eq!(p.puts, vec!["c@x".to_string()]);
        assert_eq!(p.after, list(&["a@x", "b@x", "c@x"]));
        let (kind, text) =
            plan(&Action::Block(vec!["c@x".into(), "d@x".into()]), &before, 3).unwrap_err();
        assert_eq!(kind, StanzaErrorKind::NotAcceptable);
        assert!(text.contains('3'), "{text}");
        // Already blocked: nothing to write, even at the limit.
        assert!(plan(&Action::Block(vec!["a@x".into()]), &before, 2)
            .unwrap()
            .is_empty());
        let p = plan(
            &Action::Unblock(vec!["a@x".into(), "z@x".into()]),
            &before,
            0,
        )
        .unwrap();
        assert_eq!(p.deletes, vec!["a@x".to_string()]);
        let p = plan(&Action::UnblockAll, &before, 0).unwrap();
        assert!(p.clear && p.after.is_empty());
        assert!(plan(&Action::UnblockAll, &BTreeSet::new(), 0)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn presence_follows_what_the_change_blocks_and_unblocks() {
        let contacts = vec!["bob@x".to_string(), "carol@y".to_string()];
        let (blocked_now, unblocked_now) =
            presence_changes(&contacts, &BTreeSet::new(), &list(&["x"]));
        assert_eq!(
            (blocked_now, unblocked_now),
            (vec!["bob@x".to_string()], vec![])
        );
        // Still blocked by the domain: unblocking the bare JID changes nothing.
        let (blocked_now, unblocked_now) =
            presence_changes(&contacts, &list(&["x", "bob@x"]), &list(&["x"]));
        assert!(blocked_now.is_empty() && unblocked_now.is_empty());
        let (_, unblocked_now) = presence_changes(&contacts, &list(&["carol@y"]), &BTreeSet::new());
        assert_eq!(unblocked_now, vec!["carol@y".to_string()]);
    }
}
