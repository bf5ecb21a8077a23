//! Grammar and channel-binding checks of SCRAM client messages (RFC 5802 section 7),
//! done before rsasl sees a message.
//!
//! Why not leave parsing to rsasl 2.3.1: its server-side parser slices attribute bytes
//! without checking their length (a client sending "n,,x" or "c" makes it panic); it
//! accepts extensions but leaves them out of the AuthMessage it verifies; it hands the
//! callback the username still escaped; and under `-PLUS` it accepts a client that does
//! not bind at all. A message that passes here has exactly the attributes rsasl expects,
//! each at least "x=" long, so rsasl's parser can neither panic nor misread it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::{Mechanism, Rejection, SaslFailure, ScramHash, CHANNEL_BINDING_TYPE};

/// The gs2-cbind-flag of a client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CbindFlag {
    /// "n": the client does not support channel binding.
    NotSupported,
    /// "y": the client supports it but thinks the server does not.
    SupportedNotUsed,
    /// "p=name": the client binds with this channel binding type.
    Used(String),
}

/// The parts of a client-first-message that decisions depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    pub cbind: CbindFlag,
    pub authzid: Option<String>,
    /// Unescaped and SASLprep'd: the name accounts are stored under.
    pub authcid: String,
}

fn malformed(reason: &'static str) -> Rejection {
    Rejection::new(SaslFailure::MalformedRequest, reason)
}

/// client-first-message = gs2-cbind-flag "," [authzid] "," "n=" saslname "," "r=" nonce.
/// Extensions are refused: none are defined, and rsasl would verify a proof over an
/// AuthMessage without them, so a client using one could never succeed anyway.
pub(crate) fn parse_client_first(message: &[u8]) -> Result<ClientFirst, Rejection> {
    let text =
        std::str::from_utf8(message).map_err(|_| malformed("client-first-message is not UTF-8"))?;
    let parts: Vec<&str> = text.split(',').collect();
    let [flag, authzid, username, nonce] = parts[..] else {
        return Err(malformed(
            "client-first-message is not gs2-cbind-flag,[a=authzid],n=username,r=nonce \
             (extensions are not supported)",
        ));
    };
    let cbind = match flag {
        "n" => CbindFlag::NotSupported,
        "y" => CbindFlag::SupportedNotUsed,
        _ => match flag.strip_prefix("p=") {
            Some(name) if is_channel_binding_name(name) => CbindFlag::Used(name.to_owned()),
            _ => return Err(malformed("gs2-cbind-flag is not n, y or p=name")),
        },
    };
    let authzid = match authzid {
        "" => None,
        _ => {
            let raw = authzid
                .strip_prefix("a=")
                .ok_or_else(|| malformed("gs2 authzid does not start with a="))?;
            Some(authzid_from_saslname(raw)?)
        }
    };
    let raw_username = username
        .strip_prefix("n=")
        .ok_or_else(|| malformed("client-first-message has no n=username"))?;
    let authcid = authcid_from_saslname(raw_username)?;
    let nonce = nonce
        .strip_prefix("r=")
        .ok_or_else(|| malformed("client-first-message has no r=nonce"))?;
    if !is_nonce(nonce) {
        return Err(malformed("client nonce is empty or not printable ASCII"));
    }
    Ok(ClientFirst {
        cbind,
        authzid,
        authcid,
    })
}

/// client-final-message = "c=" base64 "," "r=" nonce "," "p=" base64, with the proof
/// exactly one hash long. Whether c= and r= hold the right values is rsasl's check.
pub(crate) fn check_client_final(message: &[u8], hash: ScramHash) -> Result<(), Rejection> {
    let text =
        std::str::from_utf8(message).map_err(|_| malformed("client-final-message is not UTF-8"))?;
    let parts: Vec<&str> = text.split(',').collect();
    let [cbind, nonce, proof] = parts[..] else {
        return Err(malformed(
            "client-final-message is not c=...,r=...,p=... (extensions are not supported)",
        ));
    };
    let cbind = cbind
        .strip_prefix("c=")
        .ok_or_else(|| malformed("client-final-message has no c=channel-binding"))?;
    if cbind.is_empty() || BASE64.decode(cbind).is_err() {
        return Err(malformed("c= is not base64"));
    }
    let nonce = nonce
        .strip_prefix("r=")
        .ok_or_else(|| malformed("client-final-message has no r=nonce"))?;
    if !is_nonce(nonce) {
        return Err(malformed("nonce is empty or not printable ASCII"));
    }
    let proof = proof
        .strip_prefix("p=")
        .ok_or_else(|| malformed("client-final-message has no p=proof"))?;
    match BASE64.decode(proof) {
        Ok(proof) if proof.len() == hash.output_len() => Ok(()),
        Ok(_) => Err(malformed("p= does not hold one hash output")),
        Err(_) => Err(malformed("p= is not base64")),
    }
}

/// Channel binding rules of RFC 5802 section 6 for the chosen mechanism.
/// `server_offers_plus`: this server advertised `-PLUS`, i.e. it has binding data.
pub(crate) fn channel_binding_verdict(
    mechanism: Mechanism,
    server_offers_plus: bool,
    flag: &CbindFlag,
) -> Result<(), Rejection> {
    match (mechanism.is_plus(), flag) {
        (true, CbindFlag::Used(name)) if name == CHANNEL_BINDING_TYPE => Ok(()),
        (true, CbindFlag::Used(_)) => Err(malformed(
            "unsupported channel binding type: only tls-exporter is offered",
        )),
        (true, _) => Err(malformed("a -PLUS mechanism requires p=tls-exporter")),
        (false, CbindFlag::Used(_)) => Err(malformed(
            "channel binding requested with a mechanism without -PLUS",
        )),
        (false, CbindFlag::SupportedNotUsed) if server_offers_plus => Err(Rejection::new(
            SaslFailure::NotAuthorized,
            "client supports channel binding but believes the server does not, while \
             -PLUS was offered: possible downgrade attack",
        )),
        (false, _) => Ok(()),
    }
}

/// The account name from a SCRAM saslname: unescaped, then SASLprep'd as RFC 5802 5.1
/// asks of servers.
pub(crate) fn authcid_from_saslname(raw: &str) -> Result<String, Rejection> {
    let name = unescape_saslname(raw).ok_or_else(|| malformed("username is not a saslname"))?;
    let prepared =
        stringprep::saslprep(&name).map_err(|_| malformed("username is refused by SASLprep"))?;
    if prepared.is_empty() {
        return Err(malformed("username is empty after SASLprep"));
    }
    Ok(prepared.into_owned())
}

pub(crate) fn authzid_from_saslname(raw: &str) -> Result<String, Rejection> {
    unescape_saslname(raw).ok_or_else(|| malformed("authzid is not a saslname"))
}

/// saslname (RFC 5802 section 7): non-empty UTF-8 where "," is "=2C", "=" is "=3D" and
/// no other "=" or NUL appears.
pub(crate) fn unescape_saslname(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\0' | ',' => return None,
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => out.push(','),
                (Some('3'), Some('D')) => out.push('='),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn is_channel_binding_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// printable = %x21-2B / %x2D-7E (RFC 5802 section 7).
fn is_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
}
