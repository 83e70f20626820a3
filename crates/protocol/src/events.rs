//! Events an agent sends to the server from its outbox.
//!
//! Each event carries a per-agent sequence number assigned when it was written to the outbox;
//! the server stores each `(agent, seq)` once, so an upload can be retried any number of times.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The agent started. Body: `{"build": "...", "pid": N}`.
pub const AGENT_STARTED: &str = "agent.started";
/// The agent stopped in an orderly way. Body: `{"reason": "..."}`.
pub const AGENT_STOPPED: &str = "agent.stopped";
/// The state of the agent's protections changed. Body: `{"protections": [...]}`.
pub const PROTECTION_STATUS: &str = "protection.status";
/// An attempt against self-protection. Body: a [`crate::tamper::TamperAttempt`].
pub const TAMPER: &str = "tamper";
/// Self-protection was lifted by an authorized unload. Body: `{"by": "...", "minutes": N}`.
pub const UNLOADED: &str = "selfprotect.unloaded";
/// An unload was refused (wrong password or token). Body: `{"reason": "..."}`.
pub const UNLOAD_REFUSED: &str = "selfprotect.unload-refused";
/// An operator's note written on the host (`rampart agent note`). Body: `{"text": "..."}`.
pub const AGENT_NOTE: &str = "agent.note";
/// The agent applied a new policy. Body: `{"version": N}`.
pub const POLICY_APPLIED: &str = "policy.applied";
/// Ransomware protection convicted an actor (body: [`crate::ransomware::Incident`]).
pub const RANSOMWARE_INCIDENT: &str = "ransomware.incident";
/// An operator restored an incident's files again (body: the incident with the new outcomes).
pub const RANSOMWARE_RESTORED: &str = "ransomware.restored";

/// The most events one upload may carry.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// One event, as uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Per-agent sequence number, strictly increasing, never reused.
    pub seq: u64,
    /// What happened (`agent.started`, `tamper`, …): lower case letters, digits, `.`, `-`, `_`.
    pub kind: String,
    /// When it happened on the agent, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Details; their shape depends on the kind.
    pub body: Value,
}

impl Event {
    /// Checks the parts of an event the server relies on; the error names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let ok_kind = !self.kind.is_empty()
            && self.kind.len() <= 64
            && self.kind.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
            });
        if !ok_kind {
            return Err(format!(
                "event {}: kind {:?} must be 1 to 64 lower-case letters, digits, '.', '-' or '_'",
                self.seq, self.kind
            ));
        }
        if self.seq == 0 || self.seq > i64::MAX as u64 {
            return Err(format!(
                "event sequence number {} is out of range",
                self.seq
            ));
        }
        Ok(())
    }
}

/// One upload from the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// Events in sequence order.
    pub events: Vec<Event>,
}

/// The server's answer to an upload: every event of the batch is now stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventAck {
    /// Events stored by this upload.
    pub accepted: u64,
    /// Events the server already had (a retried upload).
    pub duplicates: u64,
}
