//! XEP-0012: Last Activity, as the server answers it: its own uptime (section
//! 5), and for an account's bare JID the time since the account's last
//! resource went unavailable, with that presence's status text (section 4).
//! Queries to a full JID are the client's to answer and are routed to it.
//!
//! The user actor records the logout (`record_logout`) through Raft (kind
//! "last", key "last", JSON `{unix_secs, status}`) when the account's last
//! available resource on the node goes unavailable, so the answer survives
//! restarts and reaches every node.
//!
//! Where the XEP leaves a choice:
//! - "Online" is read as "has a bound resource" (a route in the replicated
//!   routing table), which also counts a resource that has not sent presence
//!   yet; the answer is then 0 seconds, as section 4 asks for an available
//!   resource.
//! - Who may ask: the account itself, and any JID the account's roster gives a
//!   `from` or `both` subscription (section 8, the presence rule). Others get
//!   `service-unavailable`, exactly as for an account that does not exist and
//!   for a JID the account blocked (`xep::hidden`). Section 8 names
//!   `forbidden`, but a different answer would tell anyone which accounts
//!   exist (and a blocked contact that it is blocked).
//! - An account with no recorded logout (it never logged out, or only ever
//!   lost its node) answers `item-not-found`: 0 would say "online now".
//! - No such account: `service-unavailable` (RFC 6121 8.5.1), the same answer.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chorus_raft::{Command, RaftNode, ReadError};
use serde::{Deserialize, Serialize};

use super::{result_for, Answer, Caller, IqFeature, Target};
use crate::im::roster;
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, unreadable_state, StanzaErrorKind};

pub const NS: &str = "jabber:iq:last";
const KIND: &str = "last";
const KEY: &str = "last";

/// An account's last logout, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logout {
    pub unix_secs: u64,
    #[serde(default)]
    pub status: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Store that `user` has just gone offline, with the status text of its last
/// unavailable presence. The write runs on its own: the user actor does not
/// wait for it, and a lost write only makes the answer older.
pub fn record_logout(raft: &Arc<RaftNode>, user: &str, status: Option<String>) {
    let logout = Logout {
        unix_secs: unix_now(),
        status: status.unwrap_or_default(),
    };
    let cmd = Command::DataWrite {
        user: user.to_string(),
        kind: KIND.to_string(),
        clear: false,
        deletes: Vec::new(),
        puts: vec![(
            KEY.to_string(),
            serde_json::to_vec(&logout).expect("a logout encodes"),
        )],
        expect_version: None,
    };
    let (raft, user) = (raft.clone(), user.to_string());
    tokio::spawn(async move {
        if let Err(error) = raft.propose(cmd).await {
            tracing::warn!(%user, %error, "last logout not recorded");
        }
    });
}

fn read_logout(raft: &RaftNode, user: &str) -> Result<Option<Logout>, ReadError> {
    let Some(bytes) = raft.state().data(user, KIND, KEY)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes)
        .map_err(|error| tracing::error!(%user, %error, "stored last logout does not parse"))
        .ok())
}

/// What the server knows of the account asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub exists: bool,
    /// The asker is the account itself or has a subscription to its presence.
    pub may_see_presence: bool,
    pub online: bool,
    pub logout: Option<Logout>,
}

/// The answer to a last activity query, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Seconds(u64, String, &'static str),
    Refuse(StanzaErrorKind, &'static str),
    /// No such account, or the asker may not see it: one answer for both.
    Hidden(&'static str),
}

pub fn decide(view: &AccountView, now_unix: u64) -> Verdict {
    if !view.exists {
        return Verdict::Hidden("RFC 6121 8.5.1: no such account");
    }
    if !view.may_see_presence {
        return Verdict::Hidden("4: only the account and its presence subscribers may ask");
    }
    if view.online {
        return Verdict::Seconds(0, String::new(), "4: an online account answers 0");
    }
    match &view.logout {
        Some(logout) => Verdict::Seconds(
            now_unix.saturating_sub(logout.unix_secs),
            logout.status.clone(),
            "4: seconds since the last resource went unavailable",
        ),
        None => Verdict::Refuse(StanzaErrorKind::ItemNotFound, "no logout was recorded"),
    }
}

pub struct LastActivity;

impl IqFeature for LastActivity {
    fn disco_features(&self) -> &'static [&'static str] {
        &[NS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        iq.get_child("query", NS)?;
        if iq.attr("type") != Some("get") {
            return Some(Answer::Now(error_reply(
                iq,
                StanzaErrorKind::BadRequest,
                Some("last activity is only read, with get"),
            )));
        }
        let account = match target {
            Target::Server => {
                let uptime = caller.started.elapsed().as_secs();
                return Some(Answer::Now(answer(iq, uptime, "")));
            }
            Target::OwnAccount => caller.bare_jid.as_str(),
            Target::Account(user) => user.as_str(),
        };
        let state = caller.raft.state();
        let view = (|| -> Result<AccountView, ReadError> {
            let exists = state.user(account)?.is_some();
            let may_see_presence = account == caller.bare_jid
                || roster::load(&state, account)?
                    .items
                    .get(&caller.bare_jid)
                    .is_some_and(|item| item.subscription.has_from());
            Ok(AccountView {
                exists,
                may_see_presence,
                online: exists && !state.routes_of(account)?.is_empty(),
                logout: if exists && may_see_presence {
                    read_logout(&caller.raft, account)?
                } else {
                    None
                },
            })
        })();
        let Ok(view) = view else {
            return Some(Answer::Now(unreadable_state(iq)));
        };
        let verdict = decide(&view, unix_now());
        tracing::debug!(jid = %caller.full_jid, %account, ?verdict, "last activity");
        Some(Answer::Now(match verdict {
            Verdict::Seconds(seconds, status, _) => answer(iq, seconds, &status),
            Verdict::Refuse(kind, reason) => error_reply(iq, kind, Some(reason)),
            Verdict::Hidden(_) => super::hidden(iq),
        }))
    }
}

fn answer(iq: &Element, seconds: u64, status: &str) -> Element {
    let mut query = Element::new("query", NS).with_attr("seconds", seconds.to_string());
    if !status.is_empty() {
        query.append_text(status);
    }
    result_for(iq).with_child(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> AccountView {
        AccountView {
            exists: true,
            may_see_presence: true,
            online: false,
            logout: Some(Logout {
                unix_secs: 1_000,
                status: "gone fishing".into(),
            }),
        }
    }

    #[test]
    fn a_subscriber_reads_the_time_since_logout_and_its_status() {
        assert!(matches!(
            decide(&view(), 1_090),
            Verdict::Seconds(90, status, _) if status == "gone fishing"
        ));
        // A clock that went back does not give a negative age.
        assert!(matches!(decide(&view(), 10), Verdict::Seconds(0, _, _)));
    }

    #[test]
    fn an_online_account_answers_zero() {
        let online = AccountView {
            online: true,
            ..view()
        };
        assert!(matches!(decide(&online, 1_090), Verdict::Seconds(0, s, _) if s.is_empty()));
    }

    #[test]
    fn strangers_and_missing_accounts_get_the_same_answer() {
        let stranger = AccountView {
            may_see_presence: false,
            ..view()
        };
        assert!(matches!(decide(&stranger, 0), Verdict::Hidden(_)));
        let missing = AccountView {
            exists: false,
            may_see_presence: false,
            logout: None,
            ..view()
        };
        assert!(matches!(decide(&missing, 0), Verdict::Hidden(_)));
        let never = AccountView {
            logout: None,
            ..view()
        };
        assert!(matches!(
            decide(&never, 0),
            Verdict::Refuse(StanzaErrorKind::ItemNotFound, _)
        ));
    }
}
