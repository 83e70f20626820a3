//! The administrator's API: login, groups and their policies, enrollment tokens, agents, events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkin::{AgentIdentity, ComponentVersion, ProtectionStatus};
use crate::policy::Policy;

/// Login with user name and password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Administrator's user name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A session token for the administrator API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginResponse {
    /// Bearer token; the server keeps only its hash.
    pub token: String,
    /// When it stops working, ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// An agent group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Current policy version.
    pub policy_version: u64,
    /// Agents in the group (revoked ones excluded).
    pub agents: u64,
}

/// Create a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// Name: 1 to 64 letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Initial policy (validated); the default policy when absent.
    #[serde(default)]
    pub policy: Option<Value>,
}

/// A group's policy as the server has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyView {
    /// Group name.
    pub group: String,
    /// Policy version.
    pub version: u64,
    /// The policy.
    pub policy: Policy,
    /// Warnings raised while storing it (legacy switches ignored).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Create an enrollment token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    /// The group enrolled agents join.
    pub group: String,
    /// Validity in seconds (1 to 31,536,000).
    pub expires_in_seconds: u64,
    /// How many agents may enroll with it (1 to 1,000,000).
    pub max_uses: u64,
}

/// A new enrollment token (shown once).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokenCreated {
    /// The token to give to `rampart agent enroll --token`.
    pub token: String,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: i64,
    /// Use limit.
    pub max_uses: u64,
}

/// An agent as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentInfo {
    /// Agent id.
    pub id: String,
    /// Group name.
    pub group: String,
    /// Last reported identity.
    pub identity: AgentIdentity,
    /// Enrollment time, ms since the Unix epoch.
    pub enrolled_at_ms: i64,
    /// Last check-in, ms since the Unix epoch (0: never).
    pub last_seen_ms: i64,
    /// Revoked agents are refused with 401.
    pub revoked: bool,
    /// Policy version the agent last reported as applied.
    pub applied_policy_version: Option<u64>,
    /// Last reported protection states.
    pub protections: Vec<ProtectionStatus>,
    /// Last reported components.
    pub components: Vec<ComponentVersion>,
}

/// An event as stored by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    /// The agent that sent it.
    pub agent_id: String,
    /// Its sequence number on that agent.
    pub seq: u64,
    /// Kind.
    pub kind: String,
    /// When it happened on the agent.
    pub time_ms: i64,
    /// When the server stored it.
    pub received_ms: i64,
    /// Details.
    pub body: Value,
}

/// Filters for listing events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this agent's events.
    pub agent: Option<String>,
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Skip this many (for paging).
    pub offset: Option<u64>,
    /// At most this many (default 1,000, at most 10,000).
    pub limit: Option<u64>,
}

/// Ask for a maintenance token.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceTokenRequest {
    /// How long it may be used, seconds (60 to 86,400; default 3,600).
    #[serde(default)]
    pub valid_seconds: Option<u64>,
}

/// A maintenance token (shown once; usable once).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceToken {
    /// Give it to `rampart agent unload --token` on the agent's host.
    pub token: String,
    /// When it stops working.
    pub expires_at_ms: i64,
}
