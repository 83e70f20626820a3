//! The body of a `tamper` event: an attempt to stop, trace or change the agent (or the server)
//! or what it owns, who made it, and what self-protection did about it.

use serde::{Deserialize, Serialize};

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// BPF LSM programs, in the kernel.
    Kernel,
    /// fanotify, the immutable attribute, mount repair, the supervisor, tracepoints.
    Userspace,
}

/// What self-protection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The attempt failed: the kernel or fanotify refused it.
    Refused,
    /// The attempt went through and was undone (a restarted process, a removed mount, a
    /// restored file).
    Repaired,
    /// The attempt was seen but neither refused nor undone.
    Observed,
}

/// What was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A signal to a protected process (`detail` is the signal number).
    Signal,
    /// Attaching a debugger or reading its memory.
    Trace,
    /// Opening a protected file for writing.
    Write,
    /// Truncating.
    Truncate,
    /// Deleting a file or folder.
    Delete,
    /// Renaming into, out of or over.
    Rename,
    /// A hard link to a protected file.
    Link,
    /// Creating an entry in a protected folder.
    Create,
    /// chmod, chown, utimes.
    Attributes,
    /// Extended attributes or ACLs.
    Xattr,
    /// Changing the immutable or append-only flag.
    Flags,
    /// Mounting onto a protected folder or one of its ancestors.
    Mount,
    /// Unmounting a filesystem holding protected files.
    Unmount,
    /// Getting hold of self-protection's own BPF programs, maps or links.
    Bpf,
    /// A protected process died or stopped and was restarted or resumed.
    ProcessLost,
}

/// A process in the actor's ancestry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcessRef {
    /// Process id.
    pub pid: u32,
    /// Command name (16 bytes at most, from the kernel).
    pub comm: String,
    /// Executable, when it could still be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// Who made the attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Actor {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// User id.
    pub uid: u32,
    /// Command name.
    pub comm: String,
    /// Executable, when it could still be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Command line, when it could still be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Parent, grandparent, … up to PID 1.
    #[serde(default)]
    pub parents: Vec<ProcessRef>,
}

/// What was acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Target {
    /// A protected path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A protected process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// One attempt, or several identical ones aggregated (`count`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TamperAttempt {
    /// What was attempted.
    pub action: Action,
    /// Signal number, ioctl command, BPF command or object id, by action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<i64>,
    /// What was acted on.
    pub target: Target,
    /// Who.
    pub actor: Actor,
    /// Which tier answered.
    pub tier: Tier,
    /// What it did.
    pub outcome: Outcome,
    /// How many identical attempts this stands for (a flood is aggregated, never dropped).
    pub count: u64,
    /// For a repair: microseconds from noticing the attempt to having undone it (a process
    /// running again, a file back in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair_micros: Option<u64>,
}
