//! Instant messaging rules of RFC 6121: where stanzas for a user go, and a
//! resource's own presence.

pub mod delivery;
pub mod offline;
pub mod presence;
pub mod roster;
pub mod subscription;
