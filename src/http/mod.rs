//! HTTP: the admin API (and, in later issues, BOSH, WebSocket and metrics).

pub mod api;
pub mod cluster;
pub mod metrics;
pub mod server;
pub mod settings;
