//! Self-healing of the folders the protected process writes while it runs (its configuration
//! store and its state), in the userspace tier.
//!
//! fanotify cannot refuse an unlink, a rename, a chmod or an xattr change, and these folders
//! cannot carry the immutable attribute (the agent writes in them). So every such change is
//! undone as soon as it is announced: a notification group (`FAN_REPORT_DFID_NAME`) on the
//! folders, their parents and ancestors names each change and the process that made it;
//! changes by the pair itself update the folder's [`shadow`](shadow::Shadow), changes by anyone
//! else are undone from it (a deleted file linked back — the same inode, so an open database
//! goes on —, a file renamed away moved back, one renamed over put back, a planted entry
//! removed, mode, owner, times and extended attributes restored), and reported with their
//! author as `repaired`. The group outlives either process of the pair (it is handed over), so
//! a change made while one of them restarts is undone when it is back.

pub mod shadow;

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use rampart_protocol::tamper::{Action, Actor, Outcome, TamperAttempt, Target, Tier};

use crate::procinfo;
use crate::sys::notify::{self as events, Change, Place, FAN_Q_OVERFLOW};
use crate::sys::{self, Handle};
use shadow::{Repair, Shadow};

/// Events on the protected folders (and everything in them).
const ON_TREE: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_RENAME
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;
/// Events on the folders above them: renames and deletions of folders, and attribute changes
/// of the protected folders themselves (reported to their parent).
const ON_PARENT: u64 = libc::FAN_RENAME
    | libc::FAN_DELETE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;
const ON_ANCESTOR: u64 = libc::FAN_RENAME | libc::FAN_ONDIR;

/// The running healer.
pub struct Healer {
    group: OwnedFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Shadow>>>,
}

/// Who counts as the pair: changes by these update the shadows instead of being undone.
pub type Trusted = Arc<RwLock<HashSet<u32>>>;

impl Healer {
    /// Heals `trees`. `inherited`: the group handed over by the supervisor (this process was
    /// started again); `guard`: the file guard's group, in which new files are marked too;
    /// `also_trusted`: the process this one replaced (its changes still queued are its own).
    pub fn start(
        trees: Vec<PathBuf>,
        inherited: Option<OwnedFd>,
        guard: Option<OwnedFd>,
        trusted: Trusted,
        also_trusted: Vec<u32>,
        reports: mpsc::Sender<TamperAttempt>,
    ) -> std::io::Result<Healer> {
        let restarted = inherited.is_some();
        let group = match inherited {
            Some(g) => g,
            None => sys::fanotify_notification_group()?,
        };
        let mut shadows = Vec::new();
        for tree in &trees {
            let shadow = match Shadow::open(tree) {
                Some(s) if restarted => s,
                Some(s) => {
                    // the previous run ended without an authorized unload: what changed while
                    // nothing guarded the folder is undone first (this process has not made
                    // anything in it yet, so what the shadow does not know was planted)
                    let unknown = Actor {
                        comm: "unknown (changed while Rampart was not running)".into(),
                        ..Default::default()
                    };
                    for (rel, repair) in s.restore_all(true) {
                        let action = repair_action(repair);
                        let _ = reports.send(report(&s.path(&rel), action, unknown.clone(), None));
                    }
                    for path in s.unknown() {
                        if remove(&path).is_ok() {
                            let _ =
                                reports.send(report(&path, Action::Create, unknown.clone(), None));
                        }
                    }
                    drop(s);
                    Shadow::snapshot(tree)?
                }
                None => Shadow::snapshot(tree)?,
            };
            shadows.push(shadow);
        }
        let mut state = State {
            shadows,
            dirs: HashMap::new(),
            guard,
            trusted,
            also_trusted: also_trusted.into_iter().collect(),
            reports,
        };
        state.mark_all(&group)?;
        // what was queued while the previous process was gone is undone before this one reads
        // its files
        state.drain(&group);
        let shared = group.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("selfprotect-heal".into())
            .spawn(move || state.run(group, flag))?;
        Ok(Healer {
            group: shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The notification group, for handing over.
    pub fn group(&self) -> &OwnedFd {
        &self.group
    }

    /// The shadow folders (guarded like the folders they shadow).
    pub fn shadow_dirs(trees: &[PathBuf]) -> Vec<PathBuf> {
        trees.iter().map(|t| Shadow::dir_of(t)).collect()
    }

    /// Stops healing and removes the shadows (an authorized unload).
    pub fn release(mut self) {
        for s in self.stop_thread() {
            s.remove();
        }
    }

    fn stop_thread(&mut self) -> Vec<Shadow> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Healer {
    fn drop(&mut self) {
        // the shadows stay: a process that ends without an unload is protected at its next start
        self.stop_thread();
    }
}

struct State {
    shadows: Vec<Shadow>,
    /// Folders with marks, by file handle.
    dirs: HashMap<Handle, PathBuf>,
    guard: Option<OwnedFd>,
    trusted: Trusted,
    also_trusted: HashSet<u32>,
    reports: mpsc::Sender<TamperAttempt>,
}

fn repair_action(r: Repair) -> Action {
    match r {
        Repair::Relinked => Action::Delete,
        Repair::Replaced => Action::Rename,
        Repair::Metadata => Action::Attributes,
    }
}

fn report(path: &Path, action: Action, actor: Actor, micros: Option<u64>) -> TamperAttempt {
    TamperAttempt {
        action,
        detail: None,
        target: Target {
            path: Some(path.display().to_string()),
            pid: None,
        },
        actor,
        tier: Tier::Userspace,
        outcome: Outcome::Repaired,
        count: 1,
        repair_micros: micros,
    }
}

/// An untrusted change, with the places resolved to paths.
struct Undo {
    mask: u64,
    pid: u32,
    from: Option<PathBuf>,
    to: Option<PathBuf>,
    noticed: Instant,
    actor: Actor,
}

impl State {
    fn mark(&mut self, group: &OwnedFd, dir: &Path, mask: u64) -> std::io::Result<()> {
        sys::fanotify_mark_inode(group, mask, dir)?;
        if let Ok(h) = sys::name_to_handle(dir) {
            self.dirs.insert(h, dir.to_path_buf());
        }
        Ok(())
    }

    /// Marks every folder of every tree, their parents and ancestors.
    fn mark_all(&mut self, group: &OwnedFd) -> std::io::Result<()> {
        let mut folders = Vec::new();
        let mut above = Vec::new();
        for s in &self.shadows {
            for (rel, e) in &s.entries {
                if e.kind == shadow::Kind::Dir {
                    folders.push(s.path(rel));
                }
            }
            if let Some(parent) = s.tree.parent() {
                above.push((parent.to_path_buf(), ON_PARENT));
                let mut a = parent.parent();
                while let Some(dir) = a {
                    above.push((dir.to_path_buf(), ON_ANCESTOR));
                    a = dir.parent();
                }
            }
        }
        for dir in folders {
            self.mark(group, &dir, ON_TREE)?;
        }
        for (dir, mask) in above {
            self.mark(group, &dir, mask)?;
        }
        Ok(())
    }

    fn is_trusted(&self, pid: u32) -> bool {
        self.also_trusted.contains(&pid)
            || self
                .trusted
                .read()
                .map(|t| t.contains(&pid))
                .unwrap_or(false)
    }

    /// The path a place names: a marked folder's path, or (a folder we do not mark, the far
    /// end of a rename) looked up by its handle.
    fn resolve(&self, place: &Place) -> Option<PathBuf> {
        let dir = match self.dirs.get(&place.dir) {
            Some(d) => d.clone(),
            None => {
                let anchor = self.shadows.first()?.tree.parent()?.to_path_buf();
                let mount = std::fs::File::open(&anchor).ok()?;
                let fd = sys::open_by_handle(&OwnedFd::from(mount), &place.dir).ok()?;
                std::fs::read_link(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                ))
                .ok()?
            }
        };
        Some(if place.name.is_empty() || place.name == "." {
            dir
        } else {
            dir.join(&place.name)
        })
    }

    fn shadow_of(&mut self, path: &Path) -> Option<(usize, String)> {
        self.shadows
            .iter()
            .position(|s| path.starts_with(&s.tree))
            .and_then(|i| self.shadows[i].rel_of(path).map(|r| (i, r)))
    }

    fn run(mut self, group: OwnedFd, stop: Arc<AtomicBool>) -> Vec<Shadow> {
        sys::block_signals_in_this_thread();
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::SeqCst) {
            if !sys::poll_readable(&group, 200) {
                continue;
            }
            self.drain_with(&group, &mut buf);
        }
        self.shadows
    }

    fn drain(&mut self, group: &OwnedFd) {
        let mut buf = vec![0u8; 64 * 1024];
        self.drain_with(group, &mut buf);
    }

    /// Handles everything queued, in one go, so the pair's own changes are recorded before
    /// anything else is judged against the shadows.
    fn drain_with(&mut self, group: &OwnedFd, buf: &mut [u8]) {
        let mut changes = Vec::new();
        loop {
            match sys::read_fd(group, buf) {
                Ok(0) => break,
                Ok(n) => changes.extend(events::decode(&buf[..n])),
                Err(e) => {
                    tracing::error!(error = %e, "healer: reading notifications failed");
                    break;
                }
            }
        }
        if !changes.is_empty() {
            self.handle(group, changes);
        }
    }

    fn handle(&mut self, group: &OwnedFd, changes: Vec<Change>) {
        let mut undo = Vec::new();
        let mut touched = HashSet::new();
        let mut overflow = false;
        for c in changes {
            if c.mask & FAN_Q_OVERFLOW != 0 {
                overflow = true;
                continue;
            }
            let from = c.place.as_ref().and_then(|p| self.resolve(p));
            let to = c.to.as_ref().and_then(|p| self.resolve(p));
            if self.is_trusted(c.pid) {
                for path in from.iter().chain(to.iter()) {
                    if let Some((i, rel)) = self.shadow_of(path) {
                        if let Err(e) = self.shadows[i].record(&rel) {
                            tracing::warn!(path = %path.display(), error = %e, "healer: could not record a change");
                        }
                        touched.insert(i);
                        if c.mask & libc::FAN_CREATE != 0 || c.mask & libc::FAN_RENAME != 0 {
                            self.guard_new(group, path);
                        }
                    }
                }
            } else {
                undo.push(Undo {
                    mask: c.mask,
                    pid: c.pid,
                    actor: actor_of(c.pid),
                    from,
                    to,
                    noticed: Instant::now(),
                });
            }
        }
        for i in touched {
            if let Err(e) = self.shadows[i].save() {
                tracing::warn!(error = %e, "healer: could not save a shadow");
            }
        }
        for u in undo {
            self.undo(group, u);
        }
        if overflow {
            tracing::warn!("healer: notifications were lost; checking every protected file");
            for s in &self.shadows {
                for (rel, r) in s.restore_all(false) {
                    let _ = self.reports.send(report(
                        &s.path(&rel),
                        repair_action(r),
                        Actor::default(),
                        None,
                    ));
                }
            }
        }
    }

    /// A new file or folder of the pair's: guarded like the rest (a hard link to it elsewhere
    /// must not open it for writing), and a folder watched.
    fn guard_new(&mut self, group: &OwnedFd, path: &Path) {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return;
        };
        if let Some(g) = &self.guard {
            let mask = if m.is_dir() {
                libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD | libc::FAN_ONDIR
            } else {
                libc::FAN_OPEN_PERM
            };
            let _ = sys::fanotify_mark_inode(g, mask, path);
        }
        if m.is_dir() {
            let _ = self.mark(group, path, ON_TREE);
        }
    }

    /// Is `path` a protected folder, one of its ancestors, or an entry of one?
    fn protected(&mut self, path: &Path) -> bool {
        self.shadows.iter().any(|s| {
            s.tree.starts_with(path) || s.rel_of(path).is_some_and(|r| s.entries.contains_key(&r))
        })
    }

    fn undo(&mut self, group: &OwnedFd, u: Undo) {
        let send = |s: &State, path: &Path, action: Action| {
            let mut a = report(
                path,
                action,
                u.actor.clone(),
                Some(u.noticed.elapsed().as_micros() as u64),
            );
            if a.actor.pid == 0 {
                a.actor.pid = u.pid;
            }
            let _ = s.reports.send(a);
        };
        if u.mask & libc::FAN_RENAME != 0 {
            if let (Some(from), Some(to)) = (&u.from, &u.to) {
                if self.protected(from) && !from.exists() && to.exists() {
                    // moved away (a file, a protected folder, an ancestor): moved back
                    match std::fs::rename(to, from) {
                        Ok(()) => send(self, from, Action::Rename),
                        Err(e) => {
                            tracing::warn!(from = %to.display(), to = %from.display(), error = %e, "healer: could not move back")
                        }
                    }
                }
            }
        }
        // whatever the change, every place it names is brought back to its shadow
        for path in [&u.from, &u.to].into_iter().flatten() {
            self.settle(group, path, &u, &send);
        }
    }

    /// Brings `path` back: a protected entry restored (and the folder restored as a whole if it
    /// is a protected folder), an entry nobody recorded removed.
    fn settle(
        &mut self,
        group: &OwnedFd,
        path: &Path,
        u: &Undo,
        send: &dyn Fn(&State, &Path, Action),
    ) {
        let Some((i, rel)) = self.shadow_of(path) else {
            return;
        };
        let times = u.mask & libc::FAN_ATTRIB != 0;
        if self.shadows[i].entries.contains_key(&rel) {
            let is_dir = self.shadows[i].entries[&rel].kind == shadow::Kind::Dir;
            match self.shadows[i].restore(&rel, times) {
                Ok(Some(r)) => {
                    let action = match (r, u.mask) {
                        (Repair::Metadata, _) => Action::Attributes,
                        (_, m) if m & libc::FAN_RENAME != 0 => Action::Rename,
                        (_, m) if m & libc::FAN_CREATE != 0 => Action::Create,
                        _ => Action::Delete,
                    };
                    send(self, path, action);
                    if is_dir && r != Repair::Metadata {
                        // a folder made again: its entries come back and it is watched again
                        let below = format!("{rel}/");
                        let s = &self.shadows[i];
                        let inside: Vec<String> = s
                            .entries
                            .keys()
                            .filter(|k| k.starts_with(&below) || rel.is_empty() && !k.is_empty())
                            .cloned()
                            .collect();
                        for k in inside {
                            let _ = self.shadows[i].restore(&k, false);
                        }
                        self.guard_new(group, path);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "healer: could not restore")
                }
            }
        } else if std::fs::symlink_metadata(path).is_ok() {
            // planted by someone else
            match remove(path) {
                Ok(()) => send(self, path, Action::Create),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "healer: could not remove a planted entry")
                }
            }
        }
    }
}

/// Removes a file or a folder with everything in it.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    }
}

/// The actor of a change, from `/proc` while it is still there.
fn actor_of(pid: u32) -> Actor {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let comm = field("Name:").unwrap_or_default();
    let uid = field("Uid:")
        .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
        .unwrap_or(0);
    let ppid = field("PPid:").and_then(|v| v.parse().ok()).unwrap_or(0);
    procinfo::actor(pid, pid, uid, &comm, ppid)
}
