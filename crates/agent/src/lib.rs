//! The Rampart agent: the daemon on every protected host.
//!
//! It enrolls with the management server ([`config::enroll`]), then [`daemon::run`] checks in,
//! applies the policy the server wants, and delivers every event through the durable
//! [`outbox::Outbox`]. Everything it keeps is below one root prefix ([`paths::AgentPaths`]).

pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
mod files;
pub mod identity;
pub mod outbox;
pub mod paths;
pub mod protection;
pub mod ransomware;
pub mod status;
pub mod tamper;

pub use files::write_atomic;
