//! What the two processes of the userspace tier hand each other when one starts the other: the
//! kernel objects that must outlive either of them (the fanotify permission group, the signal
//! observer's program and maps, the supervisor's report pipe) as inherited descriptors, and the
//! little state that must survive a restart (the mounts that were there before protection
//! began, how to start the protected process again).
//!
//! Both processes hold every object, so when one of them is killed nothing lapses: the fanotify
//! group keeps its marks and the survivor keeps answering it, the observer stays attached, and
//! the reports the supervisor wrote while the protected process was down wait in the pipe.
//!
//! The handover travels in one environment variable ([`VAR`]) naming descriptor numbers.

use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::sys;

/// The environment variable carrying the handover to the started process.
pub const VAR: &str = "RAMPART_SELFPROTECT_HANDOVER";

/// The observer's kernel objects.
#[derive(Debug)]
pub struct ObserverFds {
    /// The program's link: while it is open, the program stays attached.
    pub link: OwnedFd,
    /// The ring buffer of observations.
    pub ring: OwnedFd,
    /// The map of watched and trusted processes.
    pub watched: OwnedFd,
}

/// The shared objects and state.
#[derive(Debug)]
pub struct Handover {
    /// The fanotify permission group of the file guard.
    pub guard: OwnedFd,
    /// The signal observer, when it loaded.
    pub observer: Option<ObserverFds>,
    /// The healer's notification group, when it runs.
    pub heal: Option<OwnedFd>,
    /// Reports from the supervisor to the protected process (read end).
    pub reports_read: OwnedFd,
    /// The same pipe's write end (the supervisor writes; the protected process keeps it open).
    pub reports_write: OwnedFd,
    /// Mount ids present before protection began (mount repair leaves these alone).
    pub mount_baseline: Vec<u64>,
    /// The other process: for the supervisor, the process it protects; for a restarted
    /// protected process, its supervisor.
    pub peer: u32,
    /// The command line that starts the protected process again (argv, first element the
    /// program name).
    pub restart_args: Vec<String>,
    /// For a restarted process: the process it replaces (changes it made that are still
    /// queued were the pair's own).
    pub predecessor: Option<u32>,
    /// For a restarted process: its end of the baton, a socket to its supervisor, which
    /// answers the file guard while the protected process is down. The restarted process
    /// writes `T` (taking over) and waits for `K` before it answers the group itself.
    pub baton: Option<OwnedFd>,
}

/// The byte that asks the supervisor to stop answering the file guard.
pub const BATON_TAKE: u8 = b'T';
/// The supervisor's answer: it answered everything it read and reads no more.
pub const BATON_GIVEN: u8 = b'K';

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    guard: i32,
    observer: Option<[i32; 3]>,
    heal: Option<i32>,
    reports: [i32; 2],
    mount_baseline: Vec<u64>,
    peer: u32,
    restart_args: Vec<String>,
    predecessor: Option<u32>,
    baton: Option<i32>,
}

impl Handover {
    /// Copies of every descriptor, for handing to another process while keeping ours (the baton
    /// is not copied: each handover gets a baton of its own).
    pub fn try_clone(&self) -> std::io::Result<Handover> {
        Ok(Handover {
            guard: self.guard.try_clone()?,
            observer: match &self.observer {
                Some(o) => Some(ObserverFds {
                    link: o.link.try_clone()?,
                    ring: o.ring.try_clone()?,
                    watched: o.watched.try_clone()?,
                }),
                None => None,
            },
            heal: match &self.heal {
                Some(h) => Some(h.try_clone()?),
                None => None,
            },
            reports_read: self.reports_read.try_clone()?,
            reports_write: self.reports_write.try_clone()?,
            mount_baseline: self.mount_baseline.clone(),
            peer: self.peer,
            restart_args: self.restart_args.clone(),
            predecessor: self.predecessor,
            baton: None,
        })
    }

    /// The descriptors to keep open across exec, and the variable's value naming them.
    pub fn encode(&self) -> (Vec<i32>, String) {
        let observer = self.observer.as_ref().map(|o| {
            [
                o.link.as_raw_fd(),
                o.ring.as_raw_fd(),
                o.watched.as_raw_fd(),
            ]
        });
        let heal = self.heal.as_ref().map(|h| h.as_raw_fd());
        let wire = Wire {
            guard: self.guard.as_raw_fd(),
            observer,
            heal,
            reports: [
                self.reports_read.as_raw_fd(),
                self.reports_write.as_raw_fd(),
            ],
            mount_baseline: self.mount_baseline.clone(),
            peer: self.peer,
            restart_args: self.restart_args.clone(),
            predecessor: self.predecessor,
            baton: self.baton.as_ref().map(|b| b.as_raw_fd()),
        };
        let mut fds = vec![wire.guard, wire.reports[0], wire.reports[1]];
        fds.extend(observer.into_iter().flatten());
        fds.extend(heal);
        fds.extend(wire.baton);
        (
            fds,
            serde_json::to_string(&wire).expect("handover serializes"),
        )
    }

    /// The handover this process was started with, if any; the variable is removed so that
    /// processes this one starts do not see it.
    pub fn inherited() -> Option<Result<Handover, String>> {
        let text = std::env::var(VAR).ok()?;
        std::env::remove_var(VAR);
        Some(Self::decode(&text))
    }

    fn decode(text: &str) -> Result<Handover, String> {
        let wire: Wire =
            serde_json::from_str(text).map_err(|e| format!("unreadable {VAR}: {e}"))?;
        let fd = |n: i32| {
            sys::adopt_inherited_fd(n).map_err(|e| format!("inherited descriptor {n}: {e}"))
        };
        Ok(Handover {
            guard: fd(wire.guard)?,
            observer: match wire.observer {
                Some([link, ring, watched]) => Some(ObserverFds {
                    link: fd(link)?,
                    ring: fd(ring)?,
                    watched: fd(watched)?,
                }),
                None => None,
            },
            heal: wire.heal.map(fd).transpose()?,
            reports_read: fd(wire.reports[0])?,
            reports_write: fd(wire.reports[1])?,
            mount_baseline: wire.mount_baseline,
            peer: wire.peer,
            restart_args: wire.restart_args,
            predecessor: wire.predecessor,
            baton: wire.baton.map(fd).transpose()?,
        })
    }
}

/// What the supervisor tells the protected process through the report pipe, one JSON line each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorReport {
    /// An attempt the supervisor answered (a file-guard refusal while it read the group).
    Attempt(rampart_protocol::tamper::TamperAttempt),
    /// The protected process was lost and started again.
    Restarted {
        /// The lost process.
        pid: u32,
        /// The signal that killed it, or `None` if it exited.
        signal: Option<i32>,
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The new process.
        new_pid: u32,
        /// Microseconds from noticing the loss to the new process running under supervision.
        micros: u64,
    },
}
