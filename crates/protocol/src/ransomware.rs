//! The body of a `ransomware.incident` event: an actor convicted of encrypting or destroying
//! documents, what was done about it, and every file it touched with what became of it.

use serde::{Deserialize, Serialize};

/// What ransomware protection did about the actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Block mode: the actor was stopped, its program blocked, its files restored.
    Stopped,
    /// Audit mode: detected and reported; nothing stopped or restored.
    Reported,
}

/// What the actor did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileAction {
    /// Changed its content.
    Modified,
    /// Renamed it (moved it away).
    Renamed,
    /// Deleted it.
    Deleted,
    /// Created it (an encrypted copy, a note).
    Created,
}

/// What became of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOutcome {
    /// Back at its original path with its original name and content.
    Restored,
    /// Its original was not kept (larger than the vault's limit per file): it stays as it is.
    NotPreserved,
    /// A file the actor made, moved to quarantine.
    Quarantined,
    /// Nothing to do: it is as it was.
    Unchanged,
    /// Not restored yet (audit mode, or a restore that could not finish; `rampart ransomware
    /// restore` does it).
    Pending,
    /// Restoring failed (the reason is logged on the agent).
    Failed,
}

/// One file of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentFile {
    /// The file's original path (for a created file, where it was made).
    pub path: String,
    /// What the actor did.
    pub action: FileAction,
    /// Where it went, for a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
    /// What became of it.
    pub outcome: FileOutcome,
}

/// The convicted actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IncidentActor {
    /// Its process group.
    pub pgid: u32,
    /// The program it runs (executable, and the script for an interpreter).
    pub program: String,
    /// SHA-256 of the executable (or script), when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Command line the program was seen with.
    pub cmdline: String,
    /// The processes stopped.
    #[serde(default)]
    pub stopped_pids: Vec<u32>,
}

/// A ransomware incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Unique on this agent (`rw-TIME-N`).
    pub id: String,
    /// The policy's mode when it happened (`block`, `audit`, `strict`).
    pub mode: String,
    /// What was done.
    pub response: Response,
    /// Who.
    pub actor: IncidentActor,
    /// Why: the evidence, in words.
    pub evidence: Vec<String>,
    /// The score that convicted.
    pub score: f64,
    /// When the first change was seen (ms since the epoch).
    pub first_change_ms: i64,
    /// When the actor was convicted (ms since the epoch).
    pub convicted_ms: i64,
    /// Documents the actor had changed when it was convicted.
    pub changed_before_conviction: usize,
    /// Whether its program was blocked from running again on this host.
    pub program_blocked: bool,
    /// The program blocked: the one named, or — that one a tool of the system, never blocked
    /// — the script or program leading its process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_program: Option<String>,
    /// The file blocked (the executable, or the script), with its content hash: copies of it
    /// are stopped as they start, on this host, also after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_file: Option<BlockedFile>,
    /// Every file it touched.
    pub files: Vec<IncidentFile>,
}

/// A program's file blocked from running on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedFile {
    /// Where it was when it was blocked.
    pub path: String,
    /// Its content (SHA-256, hex): what a copy is recognised by.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Incident {
    /// Files whose outcome is `outcome`.
    pub fn count(&self, outcome: FileOutcome) -> usize {
        self.files.iter().filter(|f| f.outcome == outcome).count()
    }
}
