//! The userspace tier's file guard: fanotify permission events on the protected folders and
//! files. An open by anyone but the agent that could change a protected file — for writing, with
//! truncation, or the way `chattr` opens a file to change its flags — is answered `FAN_DENY`, so
//! it fails with EPERM. fanotify does not say how a file is being opened; the blocked thread's
//! `/proc/TID/syscall` does (the group reports thread ids).
//!
//! Every event is answered from memory and `/proc`, never after waiting on the network or on a
//! protected file, and the group is closed on drop, which makes the kernel allow what is pending.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;

use rampart_protocol::tamper::{Action, Outcome, TamperAttempt, Target, Tier};

use crate::procinfo;
use crate::scope::{Resolved, CONTENTS, OBJECT};
use crate::sys;
use crate::sys::open::{open_kind, tgid_of, OpenKind};

/// Whether this process answers the group now. fanotify matches an answer to its event by the
/// event's descriptor number in the reader's descriptor table, so two processes reading one
/// group could answer each other's events: only one process of the pair reads at a time (the
/// protected process; its supervisor while it is down), and the role passes between them with a
/// [`Gate`].
#[derive(Debug, Default)]
pub struct Gate {
    active: AtomicBool,
    /// Held while a batch is read and answered: closing the gate waits for it.
    batch: std::sync::Mutex<()>,
    /// Wakes a reader waiting for the gate to open (the supervisor's, all the while the
    /// protected process answers: it sleeps there instead of looking every few milliseconds).
    opened: (std::sync::Mutex<()>, std::sync::Condvar),
}

impl Gate {
    /// A gate, open (answering) or closed.
    pub fn new(open: bool) -> Arc<Gate> {
        Arc::new(Gate {
            active: AtomicBool::new(open),
            ..Default::default()
        })
    }

    /// Starts answering.
    pub fn open(&self) {
        let _wake = self.opened.0.lock().expect("gate lock");
        self.active.store(true, Ordering::SeqCst);
        self.opened.1.notify_all();
    }

    /// Stops answering, once every event already read is answered.
    pub fn close(&self) {
        self.active.store(false, Ordering::SeqCst);
        drop(self.batch.lock());
    }

    fn is_open(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Waits until the gate is open, `at_most` long: whether it is.
    fn wait_open(&self, at_most: std::time::Duration) -> bool {
        let guard = self.opened.0.lock().expect("gate lock");
        let _ = self
            .opened
            .1
            .wait_timeout_while(guard, at_most, |_| !self.is_open())
            .expect("gate lock");
        self.is_open()
    }
}

/// The running guard.
pub struct FileGuard {
    shared: OwnedFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileGuard {
    /// Marks the scope in a new group and starts answering. `trusted` holds the process ids
    /// whose opens are always allowed (the agent's own).
    pub fn start(
        scope: &Resolved,
        trusted: Arc<RwLock<HashSet<u32>>>,
        reports: mpsc::Sender<TamperAttempt>,
    ) -> std::io::Result<FileGuard> {
        let group = sys::fanotify_permission_group()?;
        mark(&group, scope)?;
        Self::answer(group, Gate::new(true), trusted, reports)
    }

    /// Answers the permission events of `group`, a group marked elsewhere (by the process
    /// that handed it over, or by [`mark`]), whenever `gate` is open.
    pub fn answer(
        group: OwnedFd,
        gate: Arc<Gate>,
        trusted: Arc<RwLock<HashSet<u32>>>,
        reports: mpsc::Sender<TamperAttempt>,
    ) -> std::io::Result<FileGuard> {
        let shared = group.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("selfprotect-fanotify".into())
            .spawn(move || answer_loop(group, gate, trusted, reports, flag))?;
        Ok(FileGuard {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The group, for handing over to the other process of the pair.
    pub fn group(&self) -> &OwnedFd {
        &self.shared
    }
}

/// Marks `scope` in `group` (again, if it was marked before: marks only add up). Folders are
/// marked with their children, which covers files created in them later; every file is marked
/// by itself too, so that opening it through a hard link elsewhere is guarded as well.
pub fn mark(group: &OwnedFd, scope: &Resolved) -> std::io::Result<()> {
    for (key, flags) in &scope.inodes {
        let Some(path) = scope.path_of(key) else {
            continue;
        };
        if flags & CONTENTS != 0 {
            sys::fanotify_mark_inode(
                group,
                libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD | libc::FAN_ONDIR,
                path,
            )?;
        } else if flags & OBJECT != 0 {
            sys::fanotify_mark_inode(group, libc::FAN_OPEN_PERM, path)?;
        }
    }
    Ok(())
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Size of `struct fanotify_event_metadata`.
const META: usize = 24;

fn answer_loop(
    group: OwnedFd,
    gate: Arc<Gate>,
    trusted: Arc<RwLock<HashSet<u32>>>,
    reports: mpsc::Sender<TamperAttempt>,
    stop: Arc<AtomicBool>,
) {
    // signals to this process go to other threads: an open of a protected file waits for this
    // one, which must not wait in a signal stop
    sys::block_signals_in_this_thread();
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        // closed: woken as it opens (and every 100 ms, to see `stop`)
        if !gate.wait_open(std::time::Duration::from_millis(100)) {
            continue;
        }
        if !sys::poll_readable(&group, 100) {
            continue;
        }
        let _batch = gate.batch.lock().expect("gate lock");
        if !gate.is_open() {
            continue;
        }
        let n = match sys::read_fd(&group, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "fanotify read failed");
                continue;
            }
        };
        // every event of the batch is judged before any is answered: an answer wakes every
        // opener waiting on the group for a moment, which hides what the others are doing
        let mut answers = Vec::new();
        let mut at = 0;
        while at + META <= n {
            let event_len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
            let fd = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4"));
            let tid = i32::from_ne_bytes(buf[at + 20..at + 24].try_into().expect("4")) as u32;
            if event_len < META {
                break;
            }
            if fd >= 0 {
                answers.push(judge(fd, tid, &trusted));
            }
            at += event_len;
        }
        for (fd, allow, attempt) in answers {
            if let Err(e) = sys::fanotify_answer(&group, fd, allow) {
                tracing::error!(error = %e, "answering a fanotify permission event failed");
            }
            if let Some(a) = attempt {
                let _ = reports.send(a);
            }
            sys::close_raw(fd);
        }
    }
    // dropping the group allows whatever is still pending
}

/// Decides one open: (event descriptor, allow, the attempt to report if refused). The actor is
/// named while it is still blocked in its open.
fn judge(fd: i32, tid: u32, trusted: &RwLock<HashSet<u32>>) -> (i32, bool, Option<TamperAttempt>) {
    let tgid = tgid_of(tid).unwrap_or(tid);
    if trusted.read().map(|t| t.contains(&tgid)).unwrap_or(false) {
        return (fd, true, None);
    }
    let kind = open_kind(tid);
    if kind == OpenKind::Unknown {
        tracing::warn!(tid, "an open the guard could not classify: refused");
    }
    if kind == OpenKind::Read {
        return (fd, true, None);
    }
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.display().to_string());
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let ppid = parent_of(tgid).unwrap_or(0);
    let attempt = TamperAttempt {
        action: if kind == OpenKind::FlagChange {
            Action::Flags
        } else {
            Action::Write
        },
        detail: None,
        target: Target { path, pid: None },
        actor: procinfo::actor(tgid, tid, uid_of(tgid).unwrap_or(0), &comm, ppid),
        tier: Tier::Userspace,
        outcome: Outcome::Refused,
        count: 1,
        repair_micros: None,
    };
    (fd, false, Some(attempt))
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
}
