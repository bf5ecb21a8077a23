//! Per-account XML kept in the replicated state machine, for the features that
//! keep what a client hands them (XEP-0054 vCards, XEP-0049 private XML).
//!
//! A value is the element's XML text (`Element::to_xml`), written with
//! `Command::DataWrite` under one kind per feature, so it survives restarts and
//! reaches every node. Reads come from the local replica: a write is answered
//! only after this node applied it, so the writer reads its own writes here.

use std::sync::Arc;

use chorus_raft::{Command, CommandResult, RaftError, RaftNode};

use super::result_for;
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, error_reply_with_type, ErrorType, StanzaErrorKind};

/// The stored element, parsed back. A value that no longer parses is logged
/// and read as absent: the client can then store it again, which an error
/// would not let it do. A storage error is an error.
pub fn read(
    raft: &RaftNode,
    user: &str,
    kind: &str,
    key: &str,
) -> Result<Option<Element>, chorus_raft::ReadError> {
    let Some(bytes) = raft.state().data(user, kind, key)? else {
        return Ok(None);
    };
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|xml| Element::from_xml(xml).map_err(|e| e.to_string()));
    match parsed {
        Ok(el) => Ok(Some(el)),
        Err(error) => {
            tracing::error!(user, kind, key, %error, "stored XML does not parse; answering as if absent");
            Ok(None)
        }
    }
}

/// The sender's own write of (kind) keys, as a feature's answer.
pub fn answer_write(
    caller: &super::Caller,
    iq: &Element,
    kind: &'static str,
    deletes: Vec<String>,
    puts: Vec<(String, Vec<u8>)>,
) -> super::Answer {
    super::Answer::Later(Box::pin(write(
        caller.raft.clone(),
        iq.clone(),
        caller.bare_jid.clone(),
        kind,
        deletes,
        puts,
    )))
}

/// Change keys of (user, kind) in one committed write and answer `iq` with the
/// outcome: an empty result once applied, or the error that says why not.
pub async fn write(
    raft: Arc<RaftNode>,
    iq: Element,
    user: String,
    kind: &'static str,
    deletes: Vec<String>,
    puts: Vec<(String, Vec<u8>)>,
) -> Element {
    let outcome = raft
        .propose(Command::DataWrite {
            user: user.clone(),
            kind: kind.to_string(),
            clear: false,
            deletes,
            puts,
            // Each write replaces whole items, so the last writer wins; no compare-and-set.
            expect_version: None,
        })
        .await;
    match outcome {
        Ok(CommandResult::DataWritten { .. }) => result_for(&iq),
        // The account was deleted while the write waited; its streams are being closed.
        Ok(CommandResult::NoSuchUser) => error_reply(
            &iq,
            StanzaErrorKind::ItemNotFound,
            Some("the account no longer exists"),
        ),
        Err(RaftError::CommandTooLarge { limit, .. }) => error_reply(
            &iq,
            StanzaErrorKind::NotAcceptable,
            Some(&format!(
                "larger than the cluster's {limit}-byte command limit"
            )),
        ),
        Err(error) => {
            tracing::warn!(user, kind, %error, "data write was not committed");
            error_reply_with_type(
                &iq,
                StanzaErrorKind::InternalServerError,
                ErrorType::Wait,
                Some("not stored, try again"),
            )
        }
        Ok(other) => {
            // Only a bug gets here (no compare-and-set is asked; keys are never empty).
            tracing::error!(user, kind, ?other, "unexpected answer to a data write");
            error_reply(&iq, StanzaErrorKind::InternalServerError, None)
        }
    }
}
