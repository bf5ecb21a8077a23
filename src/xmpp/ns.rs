//! Namespace names used by the core protocol (RFC 6120/6121) and a few XEPs.
//!
//! Feature modules that own a XEP may keep their namespace next to their code; the ones
//! here are shared by several layers.

/// Content namespace of client-to-server streams.
pub const CLIENT: &str = "jabber:client";
/// Content namespace of server-to-server streams.
pub const SERVER: &str = "jabber:server";
/// The stream namespace: `<stream:stream>`, `<stream:features>`, `<stream:error>`.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// Defined conditions of stream errors (RFC 6120 section 4.9.3).
pub const STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Defined conditions of stanza errors (RFC 6120 section 8.3.3).
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 session establishment, still requested by old clients (RFC 6121 appendix E).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XEP-0199.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0030.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0092.
pub const VERSION: &str = "jabber:iq:version";
/// RFC 6121 roster.
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0220 server dialback.
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0203.
pub const DELAY: &str = "urn:xmpp:delay";
/// Bound to the `xml` prefix by definition (`xml:lang`).
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// Bound to the `xmlns` prefix by definition; no element or attribute may use it.
pub const XMLNS: &str = "http://www.w3.org/2000/xmlns/";
