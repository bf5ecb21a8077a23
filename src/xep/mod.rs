//! Protocol extensions: one module per XEP, each naming its disco features, answering
//! the iqs of its namespace and registering the delivery hooks it needs
//! (`crate::features` lists them). They build on `im` (RFC 6121), never the other way.

pub mod blocking;
pub mod carbons;
pub mod csi;
pub mod last_activity;
pub mod legacy_session;
pub mod ping;
pub mod private;
pub mod register;
pub mod stored;
pub mod vcard;
pub mod version;

pub use crate::bus::iq::{hidden, payload, result_for, Answer, Caller, IqFeature, Target};
