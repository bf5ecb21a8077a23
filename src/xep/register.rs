//! XEP-0077: In-Band Registration, for the server's own accounts.
//!
//! Two halves, because a stream is someone else before and after SASL:
//! - Before authentication (`answer_unauthenticated`, called from
//!   `c2s::negotiate`): while `registration.open` is set, the stream features
//!   offer `<register/>` and a get answers the form (username and password),
//!   a set creates the account through Raft (`Command::CreateUser`). Closed,
//!   a get is `service-unavailable` (nothing here to discover) and a set is
//!   `not-allowed`.
//! - After authentication (`Register`, an `IqFeature` for the sender's own
//!   account): a get says `<registered/>`, a set with a password changes it
//!   (`Command::ChangePassword`: with `auth.password_change_ends_sessions`, the
//!   account's other streams end), a set with `<remove/>` deletes the account
//!   (`Command::DeleteUser`), after which the router ends every stream of the
//!   account with `<not-authorized/>` (section 3.2). Both work whether
//!   registration is open or not: they concern an account that already exists.
//!   The request may be addressed to the domain, as the XEP's own password
//!   change example is, or carry no `to`.
//!
//! The password is made into SCRAM keys (`auth::make_user_record`, on a
//! blocking thread: PBKDF2 is slow on purpose) and never stored or logged.

use std::sync::Arc;

use chorus_raft::{Command, CommandResult, RaftNode};

use super::{result_for, Answer, Caller, IqFeature, Target};
use crate::auth::pool::{hash_password, HashPool};
use crate::config::Settings;
use crate::rate::Rates;
use crate::xmpp::element::Element;
use crate::xmpp::error::{
    error_reply, error_reply_with_type, unreadable_state, ErrorType, StanzaErrorKind,
};
use crate::xmpp::ns;

pub const NS: &str = "jabber:iq:register";
/// The stream feature (XEP-0077 section 8).
pub const FEATURE_NS: &str = "http://jabber.org/features/iq-register";
/// Longest password taken, as the admin API.
const MAX_PASSWORD_BYTES: usize = 1024;

const INSTRUCTIONS: &str = "Choose a username and password for an account on this server.";

/// The `<register/>` stream feature to offer an unauthenticated stream, or
/// nothing while registration is closed.
pub fn stream_feature(settings: &Settings) -> String {
    if settings.registration.open {
        format!("<register xmlns='{FEATURE_NS}'/>")
    } else {
        String::new()
    }
}

/// Whether an unauthenticated stream's stanza is a registration request.
pub fn is_request(el: &Element) -> bool {
    el.is("iq", ns::CLIENT)
        && matches!(el.attr("type"), Some("get" | "set"))
        && el.get_child("query", NS).is_some()
}

/// A refusal: the condition and the reason given to the client.
pub type Refusal = (StanzaErrorKind, String);

fn refusal(kind: StanzaErrorKind, reason: impl Into<String>) -> Refusal {
    (kind, reason.into())
}

/// What an unauthenticated stream's registration request calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Unauthenticated {
    /// Send the registration form.
    Form,
    /// Create this account (a normalized bare JID) with this password.
    Create {
        user: String,
        password: String,
    },
    Refuse(StanzaErrorKind, String),
}

/// The decision for a registration request before authentication.
pub fn decide_unauthenticated(open: bool, domain: &str, iq: &Element) -> Unauthenticated {
    let refuse = |(kind, reason): Refusal| Unauthenticated::Refuse(kind, reason);
    let Some(query) = iq.get_child("query", NS) else {
        return refuse(refusal(
            StanzaErrorKind::BadRequest,
            "no registration query",
        ));
    };
    if let Err(reason) = crate::xmpp::stanza::check_iq(iq) {
        return refuse(refusal(StanzaErrorKind::BadRequest, reason));
    }
    match (iq.attr("type"), open) {
        (Some("get"), true) => Unauthenticated::Form,
        (Some("get"), false) => refuse(refusal(
            StanzaErrorKind::ServiceUnavailable,
            "in-band registration is closed on this server",
        )),
        (_, false) => refuse(refusal(
            StanzaErrorKind::NotAllowed,
            "in-band registration is closed on this server; ask its operator for an account",
        )),
        (_, true) if query.get_child("remove", NS).is_some() => refuse(refusal(
            // Section 3.2's table: the sender is not registered (not authenticated).
            StanzaErrorKind::UnexpectedRequest,
            "authenticate before cancelling a registration",
        )),
        (_, true) => match new_account(domain, query) {
            Ok((user, password)) => Unauthenticated::Create { user, password },
            Err(r) => refuse(r),
        },
    }
}

/// The account a registration asks for and its password, or why not.
fn new_account(domain: &str, query: &Element) -> Result<(String, String), Refusal> {
    let field = |name: &str| query.get_child(name, NS).map(|f| f.text());
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        // Section 3.1: required information missing is not-acceptable.
        return Err(refusal(
            StanzaErrorKind::NotAcceptable,
            "send both <username/> and <password/>",
        ));
    };
    let user = account(domain, username.trim()).ok_or_else(|| {
        refusal(
            StanzaErrorKind::NotAcceptable,
            "the username is not a valid JID localpart",
        )
    })?;
    check_password(&password)?;
    Ok((user, password))
}

/// The bare JID `username@domain`, normalized as SASL will look it up, if the
/// username is a valid localpart.
fn account(domain: &str, username: &str) -> Option<String> {
    if username.is_empty() || username.contains(['@', '/']) {
        return None;
    }
    let jid = jid::BareJid::new(&format!("{username}@{domain}")).ok()?;
    (jid.domain().as_str() == domain).then(|| jid.to_string())
}

fn check_password(password: &str) -> Result<(), Refusal> {
    if password.is_empty() {
        // Sections 3.1 and 3.3: an empty password is never set.
        return Err(refusal(
            StanzaErrorKind::NotAcceptable,
            "the password is empty",
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(refusal(
            StanzaErrorKind::NotAcceptable,
            format!("the password is longer than {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The stream that has not authenticated, and what answering it may use.
pub struct Newcomer<'a> {
    pub raft: &'a RaftNode,
    pub settings: &'a Settings,
    pub rates: &'a Rates,
    pub hashing: &'a Arc<HashPool>,
    pub ip: std::net::IpAddr,
}

/// Answer a registration request on a stream that has not authenticated.
pub async fn answer_unauthenticated(who: &Newcomer<'_>, iq: &Element) -> Element {
    let settings = who.settings;
    let decision = decide_unauthenticated(settings.registration.open, &settings.domain, iq);
    tracing::debug!(decision = %describe(&decision), "in-band registration request");
    let mut reply = match decision {
        Unauthenticated::Form => result_for(iq).with_child(form()),
        Unauthenticated::Refuse(kind, reason) => error_reply(iq, kind, Some(&reason)),
        Unauthenticated::Create { user, password } => match who.rates.registration(who.ip) {
            Ok(()) => create(who, iq, user, password).await,
            Err(_) => {
                tracing::info!(ip = %who.ip, "in-band registration refused by the rate limit");
                error_reply_with_type(
                    iq,
                    StanzaErrorKind::ResourceConstraint,
                    ErrorType::Wait,
                    Some("too many registrations from your address; try again later"),
                )
            }
        },
    };
    // The stream has no address yet; whatever `from` the client claimed is not one.
    reply.remove_attr("to");
    reply
}

fn describe(d: &Unauthenticated) -> String {
    match d {
        // Never the password.
        Unauthenticated::Create { user, .. } => format!("create {user}"),
        other => format!("{other:?}"),
    }
}

fn form() -> Element {
    Element::new("query", NS)
        .with_child(Element::new("instructions", NS).with_text(INSTRUCTIONS))
        .with_child(Element::new("username", NS))
        .with_child(Element::new("password", NS))
}

async fn create(who: &Newcomer<'_>, iq: &Element, user: String, password: String) -> Element {
    let raft = who.raft;
    let conflict = || {
        error_reply(
            iq,
            StanzaErrorKind::Conflict,
            Some("that username is taken"),
        )
    };
    // Spares the PBKDF2 work for a name that is plainly taken; the command checks again.
    match raft.state().user(&user) {
        Ok(Some(_)) => return conflict(),
        Ok(None) => {}
        Err(_) => return unreadable_state(iq),
    }
    let record = match user_record(who.settings, who.hashing, password).await {
        Ok(record) => record,
        Err((kind, reason)) => return error_reply(iq, kind, Some(&reason)),
    };
    match raft
        .propose(Command::CreateUser {
            user: user.clone(),
            record,
        })
        .await
    {
        Ok(CommandResult::Done) => {
            tracing::info!(user = %user, "account registered in-band");
            result_for(iq)
        }
        Ok(CommandResult::UserExists) => conflict(),
        other => not_committed(iq, &user, &other),
    }
}

/// SCRAM keys for a password, made on the hashing pool.
async fn user_record(
    settings: &Settings,
    hashing: &Arc<HashPool>,
    password: String,
) -> Result<chorus_raft::UserRecord, Refusal> {
    let iterations = settings.auth.scram_iterations as u32;
    hash_password(hashing, password, iterations)
        .await
        .map_err(|busy| refusal(StanzaErrorKind::ResourceConstraint, busy.to_string()))?
        // SASLprep refusals; their text says what password to choose instead.
        .map_err(|e| refusal(StanzaErrorKind::NotAcceptable, e.to_string()))
}

fn not_committed<E: std::fmt::Debug>(iq: &Element, user: &str, outcome: &E) -> Element {
    tracing::warn!(user, ?outcome, "account command was not committed");
    error_reply_with_type(
        iq,
        StanzaErrorKind::InternalServerError,
        ErrorType::Wait,
        Some("not done, try again"),
    )
}

/// What an authenticated account's registration request calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// Say the account is registered, and under which username.
    Info,
    ChangePassword(String),
    Remove,
    Refuse(StanzaErrorKind, String),
}

/// The decision for a registration request from the authenticated account
/// `own` (a bare JID) of `domain`.
pub fn decide_registered(ty: &str, own: &str, domain: &str, query: &Element) -> Registered {
    let refuse = |kind, reason: &str| Registered::Refuse(kind, reason.to_string());
    if ty == "get" {
        return Registered::Info;
    }
    if ty != "set" {
        return refuse(StanzaErrorKind::BadRequest, "not a get or set");
    }
    if query.get_child("remove", NS).is_some() {
        // Section 3.2's table: <remove/> must be the only child.
        return if query.children().count() == 1 {
            Registered::Remove
        } else {
            refuse(
                StanzaErrorKind::BadRequest,
                "<remove/> must be the only child of the query",
            )
        };
    }
    let Some(password) = query.get_child("password", NS).map(|p| p.text()) else {
        return refuse(
            StanzaErrorKind::BadRequest,
            "send <password/> to change the password, or <remove/> to delete the account",
        );
    };
    // The username may be left out; if given, it must be the account's own
    // (section 3.3 changes the sender's password, never another's).
    if let Some(given) = query.get_child("username", NS).map(|u| u.text()) {
        if account(domain, given.trim()).as_deref() != Some(own) {
            return refuse(
                StanzaErrorKind::BadRequest,
                "the username is not this account's",
            );
        }
    }
    match check_password(&password) {
        Ok(()) => Registered::ChangePassword(password),
        Err((_, reason)) => Registered::Refuse(StanzaErrorKind::BadRequest, reason),
    }
}

pub struct Register;

impl IqFeature for Register {
    fn disco_features(&self) -> &'static [&'static str] {
        &[NS]
    }

    fn handle(&self, iq: &Element, target: &Target, caller: &Arc<Caller>) -> Option<Answer> {
        // An account's registration is its own business: asked of another
        // account, answer as if no feature did (service-unavailable), which
        // tells nothing about that account.
        if matches!(target, Target::Account(_)) {
            return None;
        }
        let query = iq.get_child("query", NS)?;
        let username = caller.bare_jid.split('@').next().unwrap_or_default();
        let ty = iq.attr("type").unwrap_or_default();
        let decision = decide_registered(ty, &caller.bare_jid, &caller.domain, query);
        let described = describe_registered(&decision);
        tracing::debug!(jid = %caller.full_jid, decision = %described, "jabber:iq:register");
        match decision {
            Registered::Info => {
                let query = Element::new("query", NS)
                    .with_child(Element::new("instructions", NS).with_text(
                        "Send a new <password/> to change it, or <remove/> to delete the account.",
                    ))
                    .with_child(Element::new("registered", NS))
                    .with_child(Element::new("username", NS).with_text(username))
                    .with_child(Element::new("password", NS));
                Some(Answer::Now(result_for(iq).with_child(query)))
            }
            Registered::Refuse(kind, reason) => {
                Some(Answer::Now(error_reply(iq, kind, Some(&reason))))
            }
            Registered::ChangePassword(password) => Some(Answer::Later(Box::pin(change_password(
                caller.clone(),
                iq.clone(),
                password,
            )))),
            Registered::Remove => Some(Answer::Later(Box::pin(remove(caller.clone(), iq.clone())))),
        }
    }
}

fn describe_registered(d: &Registered) -> String {
    match d {
        // Never the password.
        Registered::ChangePassword(_) => "change password".into(),
        other => format!("{other:?}"),
    }
}

async fn change_password(caller: Arc<Caller>, iq: Element, password: String) -> Element {
    let user = caller.bare_jid.clone();
    if caller.rates.password_change(&user).is_err() {
        tracing::info!(user = %user, "in-band password change refused by the rate limit");
        return error_reply_with_type(
            &iq,
            StanzaErrorKind::ResourceConstraint,
            ErrorType::Wait,
            Some("too many password changes; try again later"),
        );
    }
    let record = match user_record(&caller.settings, &caller.hashing, password).await {
        Ok(record) => record,
        Err((kind, reason)) => return error_reply(&iq, kind, Some(&reason)),
    };
    match caller
        .raft
        .propose(Command::ChangePassword {
            user: user.clone(),
            record,
            // The stream that changed it goes on (XEP-0077 3.3); the others may end.
            keep_session: Some(caller.session_id.clone()),
        })
        .await
    {
        Ok(CommandResult::Done) => {
            tracing::info!(user = %user, "password changed in-band");
            result_for(&iq)
        }
        other => not_committed(&iq, &user, &other),
    }
}

/// Delete the sender's account. The router then ends the account's streams
/// with `<not-authorized/>`; this stream writes the result first, because a
/// session closes only once its pending answers are written.
async fn remove(caller: Arc<Caller>, iq: Element) -> Element {
    let user = caller.bare_jid.clone();
    match caller
        .raft
        .propose(Command::DeleteUser { user: user.clone() })
        .await
    {
        Ok(CommandResult::Done) => {
            tracing::info!(user = %user, "account removed in-band");
            result_for(&iq)
        }
        other => not_committed(&iq, &user, &other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stream::parse_element;

    const BOB: &str = "bob@localhost";

    fn iq(xml: &str) -> Element {
        parse_element(xml, &Default::default()).unwrap()
    }

    fn register(ty: &str, body: &str) -> Element {
        iq(&format!(
            "<iq xmlns='jabber:client' type='{ty}' id='r'><query xmlns='{NS}'>{body}</query></iq>"
        ))
    }

    fn refused(d: Unauthenticated) -> StanzaErrorKind {
        match d {
            Unauthenticated::Refuse(kind, _) => kind,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn closed_registration_refuses_get_and_set() {
        let get = register("get", "");
        let set = register("set", "<username>bob</username><password>pw</password>");
        assert_eq!(
            refused(decide_unauthenticated(false, "localhost", &get)),
            StanzaErrorKind::ServiceUnavailable
        );
        assert_eq!(
            refused(decide_unauthenticated(false, "localhost", &set)),
            StanzaErrorKind::NotAllowed
        );
        assert!(stream_feature(&Settings::default()).is_empty());
    }

    #[test]
    fn open_registration_sends_the_form_and_creates_a_normalized_account() {
        let get = register("get", "");
        assert_eq!(
            decide_unauthenticated(true, "localhost", &get),
            Unauthenticated::Form
        );
        let set = register("set", "<username>Bob</username><password>pw</password>");
        assert_eq!(
            decide_unauthenticated(true, "localhost", &set),
            Unauthenticated::Create {
                user: "bob@localhost".into(),
                password: "pw".into()
            }
        );
    }

    #[test]
    fn bad_usernames_and_missing_fields_are_not_acceptable() {
        for body in [
            "<username>a@b</username><password>pw</password>",
            "<username>a/b</username><password>pw</password>",
            "<username>a b</username><password>pw</password>",
            "<username/><password>pw</password>",
            "<username>bob</username><password/>",
            "<username>bob</username>",
        ] {
            assert_eq!(
                refused(decide_unauthenticated(
                    true,
                    "localhost",
                    &register("set", body)
                )),
                StanzaErrorKind::NotAcceptable,
                "{body}"
            );
        }
    }

    #[test]
    fn remove_before_authentication_is_unexpected() {
        let set = register("set", "<remove/>");
        assert_eq!(
            refused(decide_unauthenticated(true, "localhost", &set)),
            StanzaErrorKind::UnexpectedRequest
        );
    }

    #[test]
    fn an_account_changes_its_own_password_or_removes_itself() {
        let q = |body: &str| {
            register("set", body)
                .get_child("query", NS)
                .unwrap()
                .clone()
        };
        assert_eq!(
            decide_registered(
                "set",
                BOB,
                "localhost",
                &q("<username>bob</username><password>new</password>")
            ),
            Registered::ChangePassword("new".into())
        );
        assert_eq!(
            decide_registered("set", BOB, "localhost", &q("<password>new</password>")),
            Registered::ChangePassword("new".into())
        );
        assert!(matches!(
            decide_registered(
                "set",
                BOB,
                "localhost",
                &q("<username>eve</username><password>x</password>")
            ),
            Registered::Refuse(StanzaErrorKind::BadRequest, _)
        ));
        assert!(matches!(
            decide_registered(
                "set",
                BOB,
                "localhost",
                &q("<username>bob</username><password/>")
            ),
            Registered::Refuse(StanzaErrorKind::BadRequest, _)
        ));
        assert_eq!(
            decide_registered("set", BOB, "localhost", &q("<remove/>")),
            Registered::Remove
        );
        assert!(matches!(
            decide_registered(
                "set",
                BOB,
                "localhost",
                &q("<remove/><username>bob</username>")
            ),
            Registered::Refuse(StanzaErrorKind::BadRequest, _)
        ));
        assert_eq!(
            decide_registered("get", BOB, "localhost", &q("")),
            Registered::Info
        );
    }
}
