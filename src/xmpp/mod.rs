//! XMPP wire format: parsing a stream of XML into stanzas, the element tree, and the
//! protocol's error vocabulary.
//!
//! This is the bottom layer of the server. It knows nothing of actors, sockets, TLS or
//! Raft: it reads from any `tokio::io::AsyncRead` and produces values. It depends only on
//! quick-xml, tokio's io traits, thiserror and std.
//!
//! The parser accepts the XML subset RFC 6120 section 11 allows and refuses the rest
//! with the matching stream error: no DTD (so no entity expansion), no comments or
//! processing instructions, only the five predefined entities and character references.
//! Every stanza is bounded in bytes, nesting depth and attributes per element
//! ([`stream::Limits`]); the byte bound is enforced below the XML parser, so an oversized
//! stanza is refused after about that many bytes have been read, never buffered whole.

pub mod element;
pub mod error;
pub mod ns;
pub mod stanza;
pub mod stream;

mod chars;
mod metered;
mod on_demand;
#[cfg(test)]
mod tests;

pub use chars::{escape_attr, escape_text};
pub use element::{Element, Node};
pub use error::{error_reply, stream_error_xml, ErrorType, StanzaErrorKind, StreamErrorKind};
pub use stanza::StanzaKind;
pub use stream::{Limits, ReadError, StreamEvent, StreamHeader, StreamReader};
