//! What crosses between the parts of a node: the actor messages, the handle of a bound
//! stream, the iq contract between a session and the features, the router's port for
//! features and the delivery hooks features register. Router, user actors, features and
//! client streams all depend on this module; it depends on none of them.

pub mod hooks;
pub mod iq;
pub mod messages;
pub mod port;
pub mod session;

pub use messages::*;
pub use port::RouterPort;
pub use session::{deliver_or_kick, SessionHandle};
