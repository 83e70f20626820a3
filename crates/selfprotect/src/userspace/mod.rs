//! The userspace tier, for kernels that do not load BPF LSM programs: the fanotify file guard
//! ([`guard`]) refuses opens that would change protected files, and the immutable attribute
//! ([`immutable`]) makes the install files refuse unlink, rename, chmod and link even for root,
//! and mount repair ([`mounts`]) detaches at once whatever is mounted over a protected folder.

pub mod guard;
pub mod immutable;
pub mod mounts;
pub mod observer;
