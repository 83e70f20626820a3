//! Wire types shared by the Rampart agent, the management server and the `rampart` CLI.
//!
//! Everything that crosses the network between an agent and the server, or between an
//! administrator and the server, is defined here once: the [`policy`] (validated before it is
//! stored), the agent's [`checkin`] report and desired state, [`events`] sent from the agent's
//! outbox, [`enroll`]ment, and the administrator's [`admin`] API. [`api`] names the HTTP paths.
//!
//! ```
//! use rampart_protocol::policy::Policy;
//! let parsed = Policy::parse_json(r#"{"update": {"components": "pattern-files"}, "protect_services": false}"#).unwrap();
//! assert_eq!(parsed.policy.update.components, rampart_protocol::policy::UpdateComponents::PatternFiles);
//! assert_eq!(parsed.warnings.len(), 1); // the legacy switch is accepted and ignored
//! ```

pub mod admin;
pub mod api;
pub mod checkin;
pub mod enroll;
pub mod events;
pub mod maintenance;
pub mod passwords;
pub mod policy;
pub mod ransomware;
pub mod tamper;

/// The body of every error answer of the server: a sentence that says what was wrong.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What was wrong with the request, and where possible what to do about it.
    pub error: String,
}
