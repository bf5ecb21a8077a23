//! RFC 6121 section 8.5: where a message, presence or iq for a local user goes.
//!
//! Pure functions: given the stanza's kind and type and the recipient's
//! resources, they return the verdict and the rule that chose it, so that tests
//! and debug logs can show why a stanza went where it went.

use crate::xmpp::error::StanzaErrorKind;
use crate::xmpp::stanza::StanzaKind;

/// One connected resource of the recipient, as the router sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceView {
    pub full_jid: String,
    /// Sent initial presence and has not gone unavailable.
    pub available: bool,
    pub priority: i8,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Deliver a copy to each of these full JIDs.
    Deliver(Vec<String>),
    /// Nobody can take it now; keep it for later delivery (offline storage).
    Offline,
    /// Bounce it to the sender with this error.
    Bounce(StanzaErrorKind),
    /// Drop it without telling anyone.
    Ignore,
    /// The server answers it on the user's behalf (iq to a bare JID).
    HandleForUser,
}

pub type Decision = (Verdict, &'static str);

/// A stanza addressed to a bare JID of an existing local account.
pub fn to_bare(kind: StanzaKind, stanza_type: &str, resources: &[ResourceView]) -> Decision {
    match kind {
        StanzaKind::Iq => (
            Verdict::HandleForUser,
            "8.5.2.1.3: iq to a bare JID is handled by the server",
        ),
        StanzaKind::Presence => {
            let all: Vec<String> = resources
                .iter()
                .filter(|r| r.available)
                .map(|r| r.full_jid.clone())
                .collect();
            if all.is_empty() {
                (
                    Verdict::Ignore,
                    "8.5.2.2.2: presence to a user with no available resource",
                )
            } else {
                (
                    Verdict::Deliver(all),
                    "8.5.2.1.2: presence goes to every available resource",
                )
            }
        }
        StanzaKind::Message => message_to_bare(stanza_type, resources),
    }
}

fn message_to_bare(stanza_type: &str, resources: &[ResourceView]) -> Decision {
    let eligible: Vec<&ResourceView> = resources
        .iter()
        .filter(|r| r.available && r.priority >= 0)
        .collect();
    match stanza_type {
        "error" => (
            Verdict::Ignore,
            "8.5.2.1.1: an error message to a bare JID is dropped",
        ),
        "groupchat" => (
            Verdict::Bounce(StanzaErrorKind::ServiceUnavailable),
            "8.5.2.1.1: groupchat to a user",
        ),
        "headline" if eligible.is_empty() => (
            Verdict::Ignore,
            "8.5.2.2.1: headline with no available resource",
        ),
        "headline" => (
            Verdict::Deliver(eligible.iter().map(|r| r.full_jid.clone()).collect()),
            "8.5.2.1.1: headline goes to every non-negative resource",
        ),
        _ if eligible.is_empty() => (
            Verdict::Offline,
            "8.5.2.2.1: no available resource with non-negative priority",
        ),
        _ => {
            let top = eligible.iter().map(|r| r.priority).max().unwrap_or(0);
            (
                Verdict::Deliver(
                    eligible
                        .iter()
                        .filter(|r| r.priority == top)
                        .map(|r| r.full_jid.clone())
                        .collect(),
                ),
                "8.5.2.1.1: chat and normal go to the highest-priority resources",
            )
        }
    }
}

/// A stanza addressed to a full JID whose resource is not connected.
pub fn to_missing_resource(
    kind: StanzaKind,
    stanza_type: &str,
    resources: &[ResourceView],
) -> Decision {
    match kind {
        StanzaKind::Iq if matches!(stanza_type, "result" | "error") => (
            Verdict::Ignore,
            "8.5.3.2.3: iq result or error for a gone resource",
        ),
        StanzaKind::Iq => (
            Verdict::Bounce(StanzaErrorKind::ServiceUnavailable),
            "8.5.3.2.3: iq to a gone resource",
        ),
        StanzaKind::Presence => (Verdict::Ignore, "8.5.3.2.2: presence to a gone resource"),
        StanzaKind::Message => match stanza_type {
            "chat" => message_to_bare("chat", resources),
            "error" => (
                Verdict::Ignore,
                "8.5.3.2.1: error message to a gone resource",
            ),
            _ => (
                Verdict::Bounce(StanzaErrorKind::ServiceUnavailable),
                "8.5.3.2.1: normal, groupchat or headline to a gone resource",
            ),
        },
    }
}

/// A stanza addressed to an account that does not exist (RFC 6121 8.5.1).
pub fn to_no_such_user(kind: StanzaKind, stanza_type: &str) -> Decision {
    match (kind, stanza_type) {
        (_, "error") | (StanzaKind::Iq, "result") => {
            (Verdict::Ignore, "8.5.1: error or result to no such user")
        }
        (StanzaKind::Presence, _) => (Verdict::Ignore, "8.5.1: presence to no such user"),
        _ => (
            Verdict::Bounce(StanzaErrorKind::ServiceUnavailable),
            "8.5.1: no such user",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, available: bool, priority: i8) -> ResourceView {
        ResourceView {
            full_jid: format!("u@d/{name}"),
            available,
            priority,
        }
    }

    #[test]
    fn chat_to_bare_goes_to_highest_priority_only() {
        let rs = [
            res("a", true, 5),
            res("b", true, 5),
            res("c", true, 1),
            res("d", false, 9),
        ];
        let (v, _) = to_bare(StanzaKind::Message, "chat", &rs);
        assert_eq!(v, Verdict::Deliver(vec!["u@d/a".into(), "u@d/b".into()]));
    }

    #[test]
    fn negative_priority_never_gets_bare_messages() {
        let rs = [res("a", true, -1)];
        assert_eq!(
            to_bare(StanzaKind::Message, "normal", &rs).0,
            Verdict::Offline
        );
        assert_eq!(
            to_bare(StanzaKind::Message, "headline", &rs).0,
            Verdict::Ignore
        );
    }

    #[test]
    fn headline_goes_to_all_non_negative() {
        let rs = [res("a", true, 0), res("b", true, 3)];
        assert_eq!(
            to_bare(StanzaKind::Message, "headline", &rs).0,
            Verdict::Deliver(vec!["u@d/a".into(), "u@d/b".into()])
        );
    }

    #[test]
    fn iq_to_gone_resource_bounces_and_result_is_dropped() {
        assert_eq!(
            to_missing_resource(StanzaKind::Iq, "get", &[]).0,
            Verdict::Bounce(StanzaErrorKind::ServiceUnavailable)
        );
        assert_eq!(
            to_missing_resource(StanzaKind::Iq, "result", &[]).0,
            Verdict::Ignore
        );
    }

    #[test]
    fn chat_to_gone_resource_falls_back_to_bare() {
        let rs = [res("a", true, 0)];
        assert_eq!(
            to_missing_resource(StanzaKind::Message, "chat", &rs).0,
            Verdict::Deliver(vec!["u@d/a".into()])
        );
        assert_eq!(
            to_missing_resource(StanzaKind::Message, "normal", &rs).0,
            Verdict::Bounce(StanzaErrorKind::ServiceUnavailable)
        );
    }
}
