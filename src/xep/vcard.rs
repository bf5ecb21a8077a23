//! XEP-0054: vcard-temp. An account's vCard is one element kept whole in the
//! replicated state (`stored`, kind "vcard"): a set replaces it, since the XEP
//! has no partial updates, and anyone in the domain may read it.
//!
//! Where the XEP leaves a choice:
//! - No vCard stored: an empty `<vCard/>` result, for one's own (section 3.1
//!   allows it) and for another existing account's. Section 3.3 asks for an
//!   error there, but Prosody (mod_vcard_legacy) answers an empty vCard and
//!   clients read both as "none"; the empty result also keeps "no vCard" apart
//!   from "no such account", which is `service-unavailable` (RFC 6121 8.5.1).
//! - Larger than `limits.vcard_bytes`: `not-acceptable` (type modify) rather
//!   than `policy-violation`. It is the condition every per-account limit of
//!   Chorus uses (roster items, private XML), and it says what RFC 6120 8.3.3.9
//!   says of it: this request, as sent, will not be taken, and a smaller one
//!   (usually a smaller PHOTO) will. The text names the limit.
//! - A set on another account: `forbidden` (section 3.2).

use std::sync::Arc;

use super::{result_for, stored, Answer, Caller, IqFeature, Target};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, unreadable_state, StanzaErrorKind};

pub const NS: &str = "vcard-temp";
const KIND: &str = "vcard";
/// An account has one vCard, so one key: "{namespace} {name}", as private XML
/// keys are (the state machine refuses an empty key).
const KEY: &str = "vcard-temp vCard";

pub struct VCard;

/// What to do with a vCard iq; a refusal carries its reason.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Answer with this account's vCard, or an empty one.
    Read(&'a str),
    /// Replace the sender's own vCard with the one sent.
    Write,
    Refuse(StanzaErrorKind, String),
}

/// The decision for an iq about an account's vCard. `set_bytes` is the size
/// of the vCard sent with a set.
pub fn decide<'a>(
    ty: &str,
    target: &'a Target,
    own: &'a str,
    account_exists: bool,
    set_bytes: usize,
    limit: u64,
) -> Verdict<'a> {
    let owner = match target {
        Target::Account(user) if !account_exists => {
            return Verdict::Refuse(
                StanzaErrorKind::ServiceUnavailable,
                format!("{user} is not an account here"),
            )
        }
        Target::Account(user) => user.as_str(),
        Target::OwnAccount => own,
        Target::Server => {
            return Verdict::Refuse(
                StanzaErrorKind::ServiceUnavailable,
                "this server keeps no vCard of its own".into(),
            )
        }
    };
    match ty {
        "get" => Verdict::Read(owner),
        "set" if owner != own => Verdict::Refuse(
            StanzaErrorKind::Forbidden,
            "only the account itself may change its vCard".into(),
        ),
        "set" if set_bytes as u64 > limit => Verdict::Refuse(
            StanzaErrorKind::NotAcceptable,
            format!("the vCard is {set_bytes} bytes; the limit is {limit}"),
        ),
        "set" => Verdict::Write,
        _ => Verdict::Refuse(StanzaErrorKind::BadRequest, "not a get or set".into()),
    }
}

impl IqFeature for VCard {
    fn disco_features(&self) -> &'static [&'static str] {
        &[NS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        let vcard = iq.get_child("vCard", NS)?;
        let ty = iq.attr("type").unwrap_or_default();
        let exists = match target {
            Target::Account(user) => match caller.raft.state().user(user) {
                Ok(record) => record.is_some(),
                Err(_) => return Some(Answer::Now(unreadable_state(iq))),
            },
            _ => true,
        };
        let xml = if ty == "set" {
            vcard.to_xml()
        } else {
            String::new()
        };
        let limit = caller.settings.limits.vcard_bytes;
        let verdict = decide(ty, target, &caller.bare_jid, exists, xml.len(), limit);
        tracing::debug!(jid = %caller.full_jid, ?verdict, "vcard-temp");
        match verdict {
            Verdict::Read(owner) => {
                let card = match stored::read(&caller.raft, owner, KIND, KEY) {
                    Ok(card) => card.unwrap_or_else(|| Element::new("vCard", NS)),
                    Err(_) => return Some(Answer::Now(unreadable_state(iq))),
                };
                Some(Answer::Now(result_for(iq).with_child(card)))
            }
            Verdict::Write => {
                // An empty vCard reads back the same as none, so it frees the key.
                let (deletes, puts) = if vcard.nodes().is_empty() && vcard.attrs().count() == 0 {
                    (vec![KEY.to_string()], Vec::new())
                } else {
                    (Vec::new(), vec![(KEY.to_string(), xml.into_bytes())])
                };
                Some(stored::answer_write(caller, iq, KIND, deletes, puts))
            }
            Verdict::Refuse(kind, reason) => {
                Some(Answer::Now(error_reply(iq, kind, Some(&reason))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "alice@localhost";

    #[test]
    fn own_vcard_is_read_and_written() {
        let own = Target::OwnAccount;
        assert_eq!(decide("get", &own, ME, true, 0, 10), Verdict::Read(ME));
        assert_eq!(decide("set", &own, ME, true, 10, 10), Verdict::Write);
    }

    #[test]
    fn another_accounts_vcard_is_readable_but_not_writable() {
        let bob = Target::Account("bob@localhost".into());
        assert_eq!(
            decide("get", &bob, ME, true, 0, 10),
            Verdict::Read("bob@localhost")
        );
        assert!(matches!(
            decide("set", &bob, ME, true, 1, 10),
            Verdict::Refuse(StanzaErrorKind::Forbidden, _)
        ));
    }

    #[test]
    fn the_server_itself_has_no_vcard() {
        assert!(matches!(
            decide("get", &Target::Server, ME, true, 0, 10),
            Verdict::Refuse(StanzaErrorKind::ServiceUnavailable, _)
        ));
    }

    #[test]
    fn a_missing_account_is_service_unavailable_for_get_and_set() {
        let nobody = Target::Account("nobody@localhost".into());
        for ty in ["get", "set"] {
            assert!(matches!(
                decide(ty, &nobody, ME, false, 1, 10),
                Verdict::Refuse(StanzaErrorKind::ServiceUnavailable, _)
            ));
        }
    }

    #[test]
    fn a_vcard_over_the_limit_is_not_acceptable_and_says_the_limit() {
        let Verdict::Refuse(kind, reason) = decide("set", &Target::OwnAccount, ME, true, 11, 10)
        else {
            panic!("an oversized vCard was accepted");
        };
        assert_eq!(kind, StanzaErrorKind::NotAcceptable);
        assert!(reason.contains("10"), "{reason}");
    }
}
