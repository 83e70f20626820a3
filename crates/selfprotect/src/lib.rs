//! Always-on self-protection of the Rampart agent and server.
//!
//! The agent's (or server's) processes, its install folder, its configuration store and its
//! state cannot be stopped, traced, changed, removed, renamed or mounted over, even by root; only
//! an authorized unload lifts it. Two tiers do it:
//!
//! - the **kernel tier** ([`kernel`]): BPF LSM programs refuse the attempt in the kernel;
//! - the **userspace tier** ([`userspace`]), where the kernel cannot load BPF LSM programs:
//!   fanotify permission events and the immutable attribute.
//!
//! What is protected is an explicit [`scope::Scope`]: nothing outside it is touched. Every
//! refused or observed attempt becomes a [`rampart_protocol::tamper::TamperAttempt`] naming its
//! actor ([`procinfo`]).

pub mod guardian;
pub mod kernel;
pub mod procinfo;
pub mod report;
pub mod scope;
/// The system calls, in their own crate (one place for unsafe code).
pub(crate) use rampart_sys as sys;
pub mod userspace;
