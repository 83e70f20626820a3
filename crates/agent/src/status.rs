//! What the running agent says about itself, written to the state folder after every check-in
//! and read by `rampart agent status`.

use rampart_protocol::checkin::ProtectionStatus;
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::paths::AgentPaths;

/// The agent's status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentStatus {
    /// Process id of the agent.
    pub pid: u32,
    /// When it started, ms since the Unix epoch.
    pub started_ms: i64,
    /// The agent's id.
    pub agent_id: String,
    /// Its group.
    pub group: String,
    /// Its server.
    pub server_url: String,
    /// Last successful check-in, ms since the Unix epoch (0: none yet).
    pub last_checkin_ms: i64,
    /// The last check-in error, if the last attempt failed.
    pub last_error: Option<String>,
    /// The policy version in force.
    pub applied_policy_version: Option<u64>,
    /// The protections and their state.
    pub protections: Vec<ProtectionStatus>,
    /// Events waiting in the outbox.
    pub outbox_pending: u64,
}

impl AgentStatus {
    /// Writes the status file.
    pub fn save(&self, paths: &AgentPaths) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("status serializes");
        write_atomic(&paths.status_file(), &text, 0o644)
    }

    /// Reads the status file, if an agent has written one.
    pub fn load(paths: &AgentPaths) -> Option<AgentStatus> {
        let text = std::fs::read(paths.status_file()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Whether the process that wrote this status still runs.
    pub fn is_running(&self) -> bool {
        self.pid != 0 && std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}
