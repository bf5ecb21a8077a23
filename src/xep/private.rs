//! XEP-0049: Private XML Storage. An account keeps elements only it can read,
//! each under its (namespace, name), in the replicated state (`stored`, kind
//! "private", key "{namespace} {name}").
//!
//! The XEP's error table decides the refusals:
//! - a get without a child: `bad-request` (the XEP's "Bad Format"), and with
//!   more than one: `bad-request` too (a client MUST NOT ask for more);
//! - a set without a child: `not-acceptable` ("at least one child ... MUST be
//!   included");
//! - a child in a reserved namespace (`jabber:*`) or in none: `not-acceptable`.
//!   Other namespaces the XEP calls reserved (`http://jabber.org/*`,
//!   `vcard-temp`) are stored: refusing them is optional, and clients do keep
//!   data there;
//! - another account's data: `forbidden`, which the XEP prefers to
//!   service-unavailable; a missing account is `service-unavailable` (RFC 6121
//!   8.5.1), so existence leaks no more than it does through disco.
//!
//! A set may carry several elements (the XEP allows it); they are stored in one
//! write, all or none, each within `limits.private_bytes` (over it:
//! `not-acceptable`, as every per-account limit). An empty element deletes its
//! item, since a get of a missing item answers that same empty element.

use std::sync::Arc;

use super::{result_for, stored, Answer, Caller, IqFeature, Target};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, unreadable_state, StanzaErrorKind};

pub const NS: &str = "jabber:iq:private";
const KIND: &str = "private";

pub struct Private;

/// The storage key of an element.
pub fn key(el: &Element) -> String {
    format!("{} {}", el.ns(), el.name())
}

/// What to do with a private-storage iq; a refusal carries its reason.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer with the stored element of this key, or the empty one asked for.
    Read {
        key: String,
        asked: Element,
    },
    /// Delete these keys and put these values, in one write.
    Write {
        deletes: Vec<String>,
        puts: Vec<(String, Vec<u8>)>,
    },
    Refuse(StanzaErrorKind, String),
    /// Another account's: answered as if it did not exist (`xep::hidden`).
    Hidden,
}

fn refuse(kind: StanzaErrorKind, reason: impl Into<String>) -> Verdict {
    Verdict::Refuse(kind, reason.into())
}

fn reserved(ns: &str) -> bool {
    ns.is_empty() || ns.starts_with("jabber:")
}

/// The decision for an iq about an account's private XML.
pub fn decide(ty: &str, target: &Target, query: &Element, limit: u64) -> Verdict {
    match target {
        // Whether or not it exists (`xep::hidden`).
        Target::Account(_) => return Verdict::Hidden,
        Target::Server => {
            return refuse(
                StanzaErrorKind::Forbidden,
                "private XML belongs to the account alone",
            )
        }
        Target::OwnAccount => {}
    }
    let items: Vec<&Element> = query.children().collect();
    if let Some(item) = items.iter().find(|i| reserved(i.ns())) {
        return refuse(
            StanzaErrorKind::NotAcceptable,
            format!("the namespace '{}' is reserved", item.ns()),
        );
    }
    match (ty, items.as_slice()) {
        ("get", [item]) => Verdict::Read {
            key: key(item),
            asked: Element::new(item.name(), item.ns()),
        },
        ("get", []) => refuse(StanzaErrorKind::BadRequest, "name the element to get"),
        ("get", _) => refuse(StanzaErrorKind::BadRequest, "get one element at a time"),
        ("set", []) => refuse(StanzaErrorKind::NotAcceptable, "nothing to store"),
        ("set", _) => write(&items, limit),
        _ => refuse(StanzaErrorKind::BadRequest, "not a get or set"),
    }
}

fn write(items: &[&Element], limit: u64) -> Verdict {
    // The last element of a key wins, as a later put in one `DataWrite` does;
    // settling it here keeps a delete and a put of one key from both applying.
    let mut last: Vec<(String, Option<String>)> = Vec::new();
    for item in items {
        let value = if item.nodes().is_empty() && item.attrs().count() == 0 {
            None
        } else {
            let xml = item.to_xml();
            if xml.len() as u64 > limit {
                return refuse(
                    StanzaErrorKind::NotAcceptable,
                    format!(
                        "<{}/> is {} bytes; the limit is {limit}",
                        item.name(),
                        xml.len()
                    ),
                );
            }
            Some(xml)
        };
        let k = key(item);
        last.retain(|(existing, _)| *existing != k);
        last.push((k, value));
    }
    let mut deletes = Vec::new();
    let mut puts = Vec::new();
    for (k, value) in last {
        match value {
            Some(xml) => puts.push((k, xml.into_bytes())),
            None => deletes.push(k),
        }
    }
    Verdict::Write { deletes, puts }
}

/// The verdict for the log: keys, not the stored bytes.
fn summary(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Write { deletes, puts } => {
            let put: Vec<&str> = puts.iter().map(|(k, _)| k.as_str()).collect();
            format!("write: delete {deletes:?}, put {put:?}")
        }
        other => format!("{other:?}"),
    }
}

impl IqFeature for Private {
    fn disco_features(&self) -> &'static [&'static str] {
        &[NS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        let query = iq.get_child("query", NS)?;
        let ty = iq.attr("type").unwrap_or_default();
        let limit = caller.settings.limits.private_bytes;
        let verdict = decide(ty, target, query, limit);
        tracing::debug!(jid = %caller.full_jid, verdict = %summary(&verdict), "private XML");
        match verdict {
            Verdict::Read { key, asked } => {
                let item = match stored::read(&caller.raft, &caller.bare_jid, KIND, &key) {
                    Ok(item) => item.unwrap_or(asked),
                    Err(_) => return Some(Answer::Now(unreadable_state(iq))),
                };
                let body = Element::new("query", NS).with_child(item);
                Some(Answer::Now(result_for(iq).with_child(body)))
            }
            Verdict::Write { deletes, puts } => {
                let held: std::collections::BTreeSet<String> =
                    match caller.raft.state().data_all(&caller.bare_jid, KIND) {
                        Ok(all) => all.into_iter().map(|(k, _)| k).collect(),
                        Err(_) => return Some(Answer::Now(unreadable_state(iq))),
                    };
                let after = held
                    .iter()
                    .filter(|k| !deletes.contains(k))
                    .chain(puts.iter().map(|(k, _)| k).filter(|k| !held.contains(*k)))
                    .count() as u64;
                let max = caller.settings.limits.private_items;
                if after > max {
                    let text = format!("private storage holds at most {max} elements");
                    return Some(Answer::Now(error_reply(
                        iq,
                        StanzaErrorKind::NotAcceptable,
                        Some(&text),
                    )));
                }
                Some(stored::answer_write(caller, iq, KIND, deletes, puts))
            }
            Verdict::Refuse(kind, reason) => {
                Some(Answer::Now(error_reply(iq, kind, Some(&reason))))
            }
            Verdict::Hidden => Some(Answer::Now(super::hidden(iq))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(items: &[Element]) -> Element {
        items
            .iter()
            .fold(Element::new("query", NS), |q, i| q.with_child(i.clone()))
    }

    fn prefs(text: &str) -> Element {
        Element::new("exodus", "exodus:prefs")
            .with_child(Element::new("defaultnick", "exodus:prefs").with_text(text))
    }

    fn refusal(v: Verdict) -> StanzaErrorKind {
        match v {
            Verdict::Refuse(kind, _) => kind,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn get_reads_the_key_of_the_one_element_named() {
        let q = query(&[Element::new("exodus", "exodus:prefs")]);
        assert_eq!(
            decide("get", &Target::OwnAccount, &q, 100),
            Verdict::Read {
                key: "exodus:prefs exodus".into(),
                asked: Element::new("exodus", "exodus:prefs"),
            }
        );
    }

    #[test]
    fn set_puts_each_element_and_the_last_of_a_key_wins() {
        let q = query(&[
            prefs("Hamlet"),
            Element::new("storage", "storage:bookmarks"),
            prefs("Ophelia"),
        ]);
        let Verdict::Write { deletes, puts } = decide("set", &Target::OwnAccount, &q, 1000) else {
            panic!("set refused");
        };
        assert_eq!(deletes, vec!["storage:bookmarks storage".to_string()]);
        assert_eq!(puts.len(), 1);
        assert_eq!(puts[0].0, "exodus:prefs exodus");
        assert!(String::from_utf8_lossy(&puts[0].1).contains("Ophelia"));
    }

    #[test]
    fn missing_or_extra_children_are_refused_as_the_xep_says() {
        let own = Target::OwnAccount;
        assert_eq!(
            refusal(decide("get", &own, &query(&[]), 100)),
            StanzaErrorKind::BadRequest
        );
        let two = query(&[prefs("a"), Element::new("x", "urn:x")]);
        assert_eq!(
            refusal(decide("get", &own, &two, 100)),
            StanzaErrorKind::BadRequest
        );
        assert_eq!(
            refusal(decide("set", &own, &query(&[]), 100)),
            StanzaErrorKind::NotAcceptable
        );
    }

    #[test]
    fn reserved_namespaces_are_not_acceptable() {
        for ns in ["jabber:iq:roster", "jabber:client", ""] {
            let q = query(&[Element::new("query", ns).with_text("x")]);
            for ty in ["get", "set"] {
                assert_eq!(
                    refusal(decide(ty, &Target::OwnAccount, &q, 100)),
                    StanzaErrorKind::NotAcceptable,
                    "{ty} in '{ns}'"
                );
            }
        }
    }

    #[test]
    fn another_account_is_hidden_whether_or_not_it_exists() {
        let q = query(&[prefs("x")]);
        let bob = Target::Account("bob@localhost".into());
        assert_eq!(decide("get", &bob, &q, 100), Verdict::Hidden);
        assert_eq!(decide("set", &bob, &q, 100), Verdict::Hidden);
        assert_eq!(
            refusal(decide("get", &Target::Server, &q, 100)),
            StanzaErrorKind::Forbidden
        );
    }

    #[test]
    fn an_element_over_the_limit_is_not_acceptable() {
        let q = query(&[prefs(&"x".repeat(200))]);
        assert_eq!(
            refusal(decide("set", &Target::OwnAccount, &q, 100)),
            StanzaErrorKind::NotAcceptable
        );
    }
}
