//! The userspace tier, for kernels that do not load BPF LSM programs: the fanotify file guard
//! ([`guard`]) refuses opens that would change protected files, and the immutable attribute
//! ([`immutable`]) makes the install files refuse unlink, rename, chmod and link even for root,
//! and mount repair ([`mounts`]) detaches at once whatever is mounted over a protected folder.
//! The processes are protected by a pair: the [`supervisor`] traces the protected process
//! (holding back signals, keeping debuggers out, starting it again when killed) and the
//! protected process's [`watchdog`] does the same service for the supervisor; what they share
//! passes between them in a [`handover`]. The [`observer`] names whoever signals either.

pub mod guard;
pub mod handover;
pub mod heal;
pub mod immutable;
pub mod mounts;
pub mod observer;
pub mod supervisor;
pub mod watchdog;
