//! The agent's periodic check-in: what it reports, and the desired state it receives.
//!
//! The agent sends a [`CheckinRequest`] with the `If-None-Match` header set to the ETag of the
//! desired state it already has; the server answers `304 Not Modified` when nothing changed,
//! or `200` with a [`DesiredState`] and its new ETag.

use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// Who the agent is and what it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    /// Host name of the protected host.
    pub hostname: String,
    /// Operating system (e.g. `Debian GNU/Linux 12 (bookworm)`).
    pub os: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// The agent's build (its version).
    pub agent_build: String,
}

/// The state of one protection on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtectionState {
    /// Fully enforced (for self-protection: by the kernel tier).
    Enforced,
    /// Working with less strength than it could have; the reason says why.
    Degraded,
    /// Not working; the reason says why.
    Off,
}

/// One protection and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionStatus {
    /// The protection's name (`self-protection`, `ransomware`, `on-access-scan`, …).
    pub name: String,
    /// Its state.
    pub state: ProtectionState,
    /// Why it is degraded or off, in words an operator can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ProtectionStatus {
    /// The state as one phrase: `enforced`, `degraded: REASON`, `off: REASON`.
    pub fn describe(&self) -> String {
        let state = match self.state {
            ProtectionState::Enforced => "enforced",
            ProtectionState::Degraded => "degraded",
            ProtectionState::Off => "off",
        };
        match &self.reason {
            Some(r) => format!("{state}: {r}"),
            None => state.to_owned(),
        }
    }
}

/// A component an agent has or should have (pattern file, agent build).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentVersion {
    /// Component name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// What the agent reports at each check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    /// Who the agent is.
    pub identity: AgentIdentity,
    /// The state of each protection.
    pub protections: Vec<ProtectionStatus>,
    /// Version of the policy the agent has applied, if any.
    pub applied_policy_version: Option<u64>,
    /// Components the agent has installed.
    #[serde(default)]
    pub components: Vec<ComponentVersion>,
}

/// A policy with its version, as stored by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionedPolicy {
    /// Version, counting up from 1 per group.
    pub version: u64,
    /// The policy.
    pub policy: Policy,
}

/// What the server wants the agent to have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The agent's group.
    pub group: String,
    /// The group's current policy.
    pub policy: VersionedPolicy,
    /// Components the agent should have.
    #[serde(default)]
    pub components: Vec<ComponentVersion>,
}
