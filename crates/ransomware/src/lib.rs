//! Ransomware protection: documents in the protected folders are kept before an untrusted
//! process changes them, the process tree that encrypts or destroys them is convicted within a
//! few files and stopped, and every file it touched is restored.
//!
//! - [`doctype`]: which files are documents (by extension, by content type);
//! - [`content`]: what a change did to a document (edited, converted, destroyed, encrypted);
//! - [`vault`]: copies of originals (before the first write); [`holds`]: descriptors that keep
//!   a document alive when it is deleted or renamed over;
//! - [`actor`]: who acts — process group and program; [`creations`]: every fork and exec on
//!   the host, from the scheduler's tracepoints;
//! - [`detector`]: evidence, scores, convictions;
//! - [`monitor`]: the fanotify groups, the judgement of each change, the response;
//! - [`respond`] stops an actor, [`restore`] puts back what it did.

pub mod actor;
pub mod blocklist;
pub mod breakers;
pub mod content;
pub mod creations;
pub mod detector;
pub mod doctype;
pub mod holds;
pub mod monitor;
pub mod respond;
pub mod restore;
pub mod vault;
