//! Chorus: a clustered XMPP server on Raft. See docs/architecture.md for the
//! map of the code; dependencies point one way, from `cli` down to `xmpp`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bus;
pub mod c2s;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod data_dir;
pub mod features;
pub mod http;
pub mod im;
pub mod node;
pub mod rate;
pub mod router;
pub mod user;
pub mod xep;
pub mod xmpp;
