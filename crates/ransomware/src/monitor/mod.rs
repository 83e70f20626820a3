//! The monitor: watches the protected folders, keeps originals, judges changes, convicts,
//! responds.
//!
//! Two fanotify groups:
//! - a **permission** group with an inode mark on every protected document (so other files cost
//!   nothing): an open for writing by a process that is not trusted is answered only after the
//!   document's content is copied into the vault; in `strict` mode it is refused; an actor with
//!   evidence against it has its opens held until its earlier changes are judged (so it cannot
//!   race ahead of the judgement), and a convicted one is refused ([`permission`]);
//! - a **notification** group on every protected folder: closes after writing, creations,
//!   deletions and renames, each with the acting process, judged in order by one worker
//!   ([`changes`]).
//!
//! On conviction (block mode) the actor is stopped, its program blocked, every file it touched
//! restored, and an [`Incident`] sent; in audit mode the incident is sent and nothing else.

mod calm;
mod changes;
mod permission;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rampart_protocol::policy::RansomwareMode;
use rampart_protocol::ransomware::{BlockedFile, Incident};
use rampart_sys::Handle;

use crate::actor::{ActorKey, Program};
use crate::detector::Detector;
use crate::doctype::DocumentTypes;
use crate::restore::Touch;
use crate::vault::{Kept, Vault};

/// What the monitor protects and how.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Protected folders (absolute; those that exist are watched).
    pub folders: Vec<PathBuf>,
    /// Which files are documents.
    pub types: DocumentTypes,
    /// Folder names (anywhere below) or folders left alone.
    pub exclusions: Vec<String>,
    /// Trusted programs: path and SHA-256.
    pub trusted: Vec<(PathBuf, String)>,
    /// `block`, `audit` or `strict`.
    pub mode: RansomwareMode,
    /// Whether decoy documents are placed.
    pub canaries: bool,
    /// Where files an actor made go.
    pub quarantine: PathBuf,
    /// Programs blocked on this host before (by an earlier run): refused again, and their
    /// copies stopped as they start.
    pub blocked: Vec<BlockedFile>,
}

/// What the monitor reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Folders watched.
    pub folders: usize,
    /// Documents held and guarded.
    pub documents: usize,
    /// Whether the first walk of the folders is done.
    pub ready: bool,
    /// Incidents so far (since start).
    pub incidents: usize,
    /// Opens held until their actor's earlier changes were judged (since start): what
    /// protection costs the programs it watches.
    pub held: u64,
    /// How long they waited in all, in milliseconds.
    pub held_ms: u64,
    /// Changes read and waiting to be judged (a tree just unpacked gives thousands).
    pub backlog: usize,
    /// Documents guarded by a lease (see `calm`).
    pub guarded: usize,
    /// Folders calm now: their documents' opens raise no permission event.
    pub calm_folders: usize,
    /// Permission events answered so far.
    pub permission_events: u64,
    /// Leases broken so far (a guarded document opened for writing or truncated).
    pub lease_breaks: u64,
    /// How long their writers waited in all, in milliseconds (from the break read to the
    /// lease let go): what a lease break costs the programs it stops.
    pub lease_break_ms: u64,
    /// Opens the kernel refused because it could not give the agent a descriptor for their
    /// event (the agent out of descriptors): should stay 0.
    pub refused_unasked: u64,
    /// Times the kernel's queue of changes overflowed (changes were lost unjudged): should
    /// stay 0.
    pub changes_lost: u64,
    /// Opens the watchdog let through unjudged because the permission side had stopped
    /// answering (a bug, see `permission::watchdog`): should stay 0.
    pub let_through: u64,
    /// Where process creations are read from.
    pub creations: crate::creations::Source,
}

/// A convicted actor, and the plan that restores its files (for `rampart ransomware restore`).
#[derive(Debug, Clone)]
pub struct Convicted {
    /// The incident as sent.
    pub incident: Incident,
    /// What restores its files (as of the incident).
    pub plan: crate::restore::Plan,
    /// Its process groups (what it did since — in audit mode it goes on — is restored too).
    pub groups: Vec<u32>,
}

/// Mask on protected folders in the notification group.
const ON_FOLDER: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_RENAME
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;

/// How long an opener is held at most while its actor's earlier changes are judged.
pub const HOLD_AT_MOST: Duration = Duration::from_millis(300);

/// How long a process seen is known without reading `/proc` again.
const SEEN_LATELY: Duration = Duration::from_millis(100);

/// How many processes [`State::remember`] keeps before it forgets those long gone.
const REMEMBERED: usize = 8192;

/// What the permission side tells the worker, in order with the notifications.
pub(crate) enum Work {
    /// Notifications read, the time the queue was found empty after them, and how many of them
    /// delete or rename a document.
    Changes(Vec<rampart_sys::notify::Change>, Instant, usize),
    /// A document was opened for writing by an actor (its original kept first).
    Opened {
        pid: u32,
        keys: Vec<ActorKey>,
        path: PathBuf,
        dev: u64,
        ino: u64,
        kept: Option<Kept>,
    },
}

/// A document the monitor knows.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub dev: u64,
    pub ino: u64,
}

/// What the actor of a group did (for restoring).
#[derive(Debug, Default)]
pub(crate) struct Journal {
    pub touches: Vec<Touch>,
    /// The documents among `touches` it modified (one touch each: the first keeps the
    /// original), for telling at once whether one is there.
    pub modified: HashSet<(u64, u64)>,
    /// Documents changed (for "changed before conviction").
    pub changed: HashSet<(u64, u64)>,
    /// Files it made, and whether each looks encrypted or is a conversion.
    pub made: MadeFiles,
    /// New files it closed under names no document has, not read yet (see [`Unjudged`]), the
    /// latest [`UNJUDGED_AT_MOST`].
    pub unjudged: std::collections::VecDeque<Unjudged>,
    /// The files it made, by (device, inode), with where it made them: it needs no original of
    /// them (while they are where it made them: a number the filesystem gave again to another
    /// file, elsewhere, is not its).
    pub made_inodes: HashMap<(u64, u64), PathBuf>,
    /// Documents it deleted lately: path → (when, device, inode).
    pub deleted: HashMap<PathBuf, (Instant, u64, u64)>,
    /// Files it made again where it had just deleted a document: path → the old (device, inode).
    pub replaced: HashMap<PathBuf, (u64, u64)>,
    /// Documents whose deletion counted against it, held (pinned) until the journal is
    /// forgotten: a hold ends [`HOLD_FOR`](crate::holds::HOLD_FOR) after the deletion, and a
    /// wiper that deletes one document every few seconds is convicted only at its fortieth —
    /// the first ones must still be there to restore.
    pub evidence_holds: Vec<(u64, u64)>,
    /// The first change.
    pub first: Option<std::time::SystemTime>,
    /// The last change.
    pub last: Option<Instant>,
    /// Open writes not yet closed.
    pub writing: usize,
    /// What the group's leader runs (a script that starts the tools doing the damage; read
    /// when the group is first seen, or the first process seen if the leader was gone), and its
    /// command line.
    pub program: Option<Program>,
    pub cmdline: String,
}

impl Journal {
    /// Notes that the group changed something now.
    pub fn touched(&mut self) {
        self.first.get_or_insert_with(std::time::SystemTime::now);
        self.last = Some(Instant::now());
    }
}

/// How long the journal of a group under no suspicion is kept after its last change: what it
/// did is restored if it is convicted later; a group whose evidence faded away, or that never
/// had any, is forgotten after this, with the copies kept for it (see [`State::forget`]).
pub(crate) const JOURNAL_IDLE: Duration = Duration::from_secs(600);

/// How many touches the journal of a group under no suspicion may list before it is forgotten
/// even while the group is at work (see [`State::forget`]): a process group that makes files
/// all day — a sync client, a build in a long-lived session, the bench's shell — never idles
/// for [`JOURNAL_IDLE`], and its journal grew by every file it made (the agent's memory by
/// ~600 bytes a file made, measured with `rsync`). Past this it is forgotten as an idle one is;
/// what it does next is journaled anew.
pub(crate) const JOURNAL_AT_MOST: usize = 1 << 16;

/// How often the judge forgets what is no longer needed.
pub(crate) const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A new file closed under a name no document has (a temporary file, an object file, a
/// `NAME.locked`) by an actor under no suspicion: not read when it is closed. What such a file
/// is matters only once its actor does something to a document — its content is what a
/// deletion beside it is paired with (`NAME.locked` for `NAME`), and what it wrote counts with
/// the evidence against it then — so it is read then, by its handle wherever it is by then:
/// when evidence first counts against its actor, or when a document beside it is deleted.
/// Programs that make thousands of files and touch no document (rsync's temporary files, a
/// build's objects, git's) have none of them read. Files under a document's name (a note is
/// one: `HOW-TO-DECRYPT.txt`) are read as they are closed.
#[derive(Debug, Clone)]
pub(crate) struct Unjudged {
    /// Where it was closed.
    pub path: PathBuf,
    /// The file.
    pub handle: Handle,
    /// Its filesystem, as the event named it.
    pub fsid: Option<[u8; 8]>,
}

/// How many new files not read yet an actor's journal lists: of a bigger batch before the
/// first evidence against it, the latest are read then (the ones it is working on).
pub(crate) const UNJUDGED_AT_MOST: usize = 1024;

/// A file an actor made, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MadeFile {
    /// The file, by its handle (where the kernel names files in its events): judged late, its
    /// name may be another file's — the next `gzip -r`'s `NAME.gz`, made but not written yet.
    pub handle: Option<rampart_sys::Handle>,
    /// Its (device, inode), as its creation or its close found it: where it is after a rename is
    /// known without looking (rsync, editors and office programs rename every file they make).
    pub inode: Option<(u64, u64)>,
    /// What it was found to be when closed — (looks encrypted, converted) — if it was read: not
    /// before it is closed, nor if it was gone by the time its close was judged.
    pub judged: Option<(bool, bool)>,
    /// Closed, and not read (see [`Unjudged`]): read by its handle when a document beside it is
    /// deleted.
    pub unread: bool,
}

impl MadeFile {
    /// What it is known to be, for pairing a deletion with it: what it was found to be; found
    /// to be nothing known, or not judged, and no longer there (gone, or another file at its
    /// name), nothing is known against its maker — a conversion (a `gunzip -r` right after the
    /// `gzip -r`, read late; a temporary renamed over its document); not judged and there,
    /// nothing at all.
    pub fn known_as(&self, path: &Path) -> (bool, bool) {
        match self.judged {
            Some((false, false)) | None if !self.is_at(path) => (false, true),
            Some(what) => what,
            None => (false, false),
        }
    }

    /// Whether it is the file at `path` now (by name alone where its handle is not known).
    fn is_at(&self, path: &Path) -> bool {
        match &self.handle {
            Some(h) => rampart_sys::name_to_handle(path).is_ok_and(|now| now == *h),
            None => std::fs::symlink_metadata(path).is_ok(),
        }
    }
}

/// Files an actor made, by folder, then name — for pairing a deletion with what was made beside
/// it without looking at everything else it made (`gzip -r` makes thousands).
#[derive(Debug, Default)]
pub(crate) struct MadeFiles {
    by_dir: HashMap<PathBuf, std::collections::BTreeMap<std::ffi::OsString, MadeFile>>,
}

impl MadeFiles {
    fn split(path: &Path) -> (PathBuf, std::ffi::OsString) {
        (
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path.file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default(),
        )
    }

    pub fn insert(&mut self, path: PathBuf, made: MadeFile) {
        let (dir, name) = Self::split(&path);
        self.by_dir.entry(dir).or_default().insert(name, made);
    }

    pub fn remove(&mut self, path: &Path) -> Option<MadeFile> {
        let (dir, name) = Self::split(path);
        self.by_dir.get_mut(&dir)?.remove(&name)
    }

    /// What was made in `path`'s folder under `path`'s name or one that starts with it
    /// (`NAME.gz` beside `NAME`).
    pub fn beside(&self, path: &Path) -> Vec<(PathBuf, MadeFile)> {
        use std::os::unix::ffi::OsStrExt;
        let (dir, name) = Self::split(path);
        let Some(names) = self.by_dir.get(&dir) else {
            return Vec::new();
        };
        names
            .range(name.clone()..)
            .take_while(|(n, _)| n.as_bytes().starts_with(name.as_bytes()))
            .map(|(n, made)| (dir.join(n), made.clone()))
            .collect()
    }

    /// What was made at `path`, if anything.
    pub fn get(&self, path: &Path) -> Option<&MadeFile> {
        let (dir, name) = Self::split(path);
        self.by_dir.get(&dir)?.get(&name)
    }

    /// What was made at `path`, to be changed.
    pub fn get_mut(&mut self, path: &Path) -> Option<&mut MadeFile> {
        let (dir, name) = Self::split(path);
        self.by_dir.get_mut(&dir)?.get_mut(&name)
    }
}

/// The state the threads share (one lock: every step under it is short).
/// The watched folders, by file handle (how the kernel names a change's folder) and by path.
/// A folder deleted is forgotten (its removal read by the judge, or found gone at a settle):
/// kept, every tree a program made and removed again stayed here for the agent's lifetime — 65
/// folders for each of the bench's workload trees, looked at by every settle.
#[derive(Debug, Default)]
pub(crate) struct Folders {
    by_handle: HashMap<Handle, PathBuf>,
    by_path: HashMap<PathBuf, Handle>,
}

impl Folders {
    /// Folder `path`, known by handle `h`, is watched.
    pub fn insert(&mut self, h: Handle, path: PathBuf) {
        if let Some(old) = self.by_path.insert(path.clone(), h.clone()) {
            if old != h {
                self.by_handle.remove(&old);
            }
        }
        if let Some(old) = self.by_handle.insert(h, path.clone()) {
            if old != path {
                self.by_path.remove(&old);
            }
        }
    }

    /// The path of the folder known by handle `h`.
    pub fn get(&self, h: &Handle) -> Option<&PathBuf> {
        self.by_handle.get(h)
    }

    /// Whether the folder known by handle `h` is watched.
    pub fn contains(&self, h: &Handle) -> bool {
        self.by_handle.contains_key(h)
    }

    /// How many folders are watched.
    pub fn len(&self) -> usize {
        self.by_handle.len()
    }

    /// Every watched folder's path.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.by_path.keys()
    }

    /// Folder `path` is gone: forgotten. Returns whether it was watched.
    pub fn forget(&mut self, path: &Path) -> bool {
        match self.by_path.remove(path) {
            Some(h) => {
                self.by_handle.remove(&h);
                true
            }
            None => false,
        }
    }

    /// Folder `from` was renamed to `to`: it and every folder under it are known by their new
    /// paths (every entry is looked at: a folder's rename is rare).
    pub fn moved(&mut self, from: &Path, to: &Path) {
        let inside: Vec<PathBuf> = self
            .by_path
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for p in inside {
            let Some(h) = self.by_path.remove(&p) else {
                continue;
            };
            let rest = p.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.by_handle.insert(h.clone(), new.clone());
            self.by_path.insert(new, h);
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub detector: Detector,
    /// Journals by process group.
    pub journals: HashMap<u32, Journal>,
    /// Groups by program (a program's conviction restores every group it ran in).
    pub groups_of: HashMap<Program, HashSet<u32>>,
    /// A command line each program was seen with (for the incident).
    pub cmdline_of: HashMap<Program, String>,
    /// Copies made per (group, inode): one per actor and document (see [`State::keep`]).
    pub kept: HashMap<(u32, u64, u64), Kept>,
    /// Documents left loose (unguarded, see `calm`) for a writer that broke their lease, by
    /// inode: its process group and the document's path then. Another writer, whose open was
    /// not seen, is given that writer's original.
    pub loosened: HashMap<(u64, u64), (u32, PathBuf)>,
    /// Processes seen, by pid, and when (for notifications from processes already gone); no
    /// keys: a process of a trusted program.
    pub keys_of: HashMap<u32, (Vec<ActorKey>, Instant)>,
    /// How many entries `keys_of` may reach before the next look for processes gone.
    pub forget_at: usize,
    /// Notes: file name → (folders, group).
    pub notes: HashMap<String, (HashSet<PathBuf>, u32)>,
    /// Convicted actors' keys.
    pub convicted: Vec<Vec<ActorKey>>,
    /// Executables blocked from running: (dev, ino) → what the file was (size, mtime), so
    /// that a file that takes a deleted one's inode number is not refused in its stead.
    pub blocked: HashMap<(u64, u64), (u64, (i64, i64))>,
    /// Incidents so far.
    pub incidents: Vec<Convicted>,
    /// The worker has handled every change made before this instant.
    pub drained: Option<Instant>,
    /// Convicted actors whose files are restored once their last changes are in: the
    /// incident so far, its groups, when.
    pub finishing: Vec<(Incident, Vec<u32>, Instant)>,
    /// Emptied documents to be judged again once settled.
    pub pending: Vec<Pending>,
    /// When the file was made that what is written down under an inode number is about (see
    /// [`State::renew`]).
    pub born: HashMap<(u64, u64), (i64, u32)>,
}

/// An emptied document, judged again a moment later.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub keys: Vec<ActorKey>,
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Its content before (the vault copy), and its size.
    pub sha256: String,
    pub size: u64,
    /// When it was found emptied.
    pub since: Instant,
    pub due: Instant,
}

impl State {
    /// The file as (`dev`, `ino`), made at `born` (where known), is about to be written down or
    /// looked up: what is written down under that number for a file made at another time — one
    /// deleted and let go of, whose number the filesystem gave to this one — is no longer about
    /// it: its copies and marks are forgotten (else this file would be taken to have an
    /// original already, and judged against another's), and the journals that touched it are
    /// told ([`Touch::Renewed`]: a restore plan goes by inode number). A few map operations per
    /// process group: rewriting the touches instead cost the bench's long-lived group seconds
    /// of the judge's time per workload (run 0821Z).
    pub fn renew(&mut self, dev: u64, ino: u64, born: Option<(i64, u32)>) {
        let Some(born) = born else {
            return;
        };
        match self.born.insert((dev, ino), born) {
            Some(before) if before != born => {}
            _ => return,
        }
        tracing::debug!(
            dev,
            ino,
            "ransomware: an inode number given to another file"
        );
        let key = (dev, ino);
        self.loosened.remove(&key);
        for (g, j) in self.journals.iter_mut() {
            self.kept.remove(&(*g, dev, ino));
            let modified = j.modified.remove(&key);
            let changed = j.changed.remove(&key);
            let made = j.made_inodes.remove(&key).is_some();
            if modified || changed || made {
                j.touches.push(Touch::Renewed { dev, ino });
            }
        }
    }

    /// Remembers who `pid` is, for its changes announced after it is gone. Bounded: past
    /// [`REMEMBERED`] entries (or twice what the last look kept), those of processes gone for a
    /// minute are forgotten.
    pub fn remember(&mut self, pid: u32, keys: &[ActorKey]) {
        let now = Instant::now();
        if self.keys_of.len() >= self.forget_at.max(REMEMBERED) {
            self.keys_of.retain(|pid, (_, at)| {
                now.duration_since(*at) < Duration::from_secs(60)
                    || Path::new(&format!("/proc/{pid}")).exists()
            });
            // a host starting thousands of processes a minute keeps them all: looked at again
            // once as many more came, not at each (a look is a system call per entry)
            self.forget_at = 2 * self.keys_of.len();
        }
        self.keys_of.insert(pid, (keys.to_vec(), now));
    }

    /// Records that process `p` acts: its group's journal learns who leads the group (once),
    /// its program which groups it ran in.
    pub fn seen(&mut self, p: &crate::actor::Process) {
        let journal = self.journals.entry(p.pgid).or_default();
        journal.last = Some(Instant::now());
        if journal.program.is_none() {
            let leader = (p.pid != p.pgid)
                .then(|| crate::actor::process(p.pgid))
                .flatten();
            let leader = leader.as_ref().unwrap_or(p);
            journal.program = Some(leader.program.clone());
            journal.cmdline = leader.command();
        }
        if !p.program.is_bare_interpreter() {
            self.groups_of
                .entry(p.program.clone())
                .or_default()
                .insert(p.pgid);
            self.cmdline_of
                .entry(p.program.clone())
                .or_insert_with(|| p.command());
        }
    }

    /// Forgets the groups no longer needed: no evidence left against them or a program that
    /// ran in them, not convicted or being restored, nothing changed for [`JOURNAL_IDLE`] (or
    /// more than [`JOURNAL_AT_MOST`] touches listed) — their journals, the copies kept for
    /// them, and the scores that faded away. Without it a long-running agent kept every group
    /// that ever touched a document.
    /// Returns the documents held for the forgotten journals' evidence (see
    /// [`Journal::evidence_holds`]): their holds may end.
    pub fn forget(&mut self, now: Instant) -> Vec<(u64, u64)> {
        self.detector.forget_faded(now);
        let mut needed: HashSet<u32> = self
            .finishing
            .iter()
            .flat_map(|(_, groups, _)| groups.iter().copied())
            .collect();
        for keys in &self.convicted {
            needed.extend(keys.iter().filter_map(|k| match k {
                ActorKey::Group(g) => Some(*g),
                ActorKey::Program(_) => None,
            }));
        }
        for (program, groups) in &self.groups_of {
            if self
                .detector
                .score(&[ActorKey::Program(program.clone())], now)
                > 0.0
            {
                needed.extend(groups.iter().copied());
            }
        }
        for p in &self.pending {
            needed.extend(p.keys.iter().filter_map(|k| match k {
                ActorKey::Group(g) => Some(*g),
                ActorKey::Program(_) => None,
            }));
        }
        let mut gone = HashSet::new();
        let mut unpin = Vec::new();
        let detector = &self.detector;
        self.journals.retain(|g, j| {
            let keep = needed.contains(g)
                || detector.score(&[ActorKey::Group(*g)], now) > 0.0
                || (j.last.is_some_and(|t| now.duration_since(t) < JOURNAL_IDLE)
                    && j.touches.len() <= JOURNAL_AT_MOST);
            if !keep {
                gone.insert(*g);
                unpin.append(&mut j.evidence_holds);
            }
            keep
        });
        if gone.is_empty() {
            return unpin;
        }
        self.kept.retain(|(g, _, _), _| !gone.contains(g));
        self.loosened.retain(|_, (g, _)| !gone.contains(g));
        // birth times of numbers nothing is written down under any more
        let mut live: HashSet<(u64, u64)> = self.kept.keys().map(|(_, d, i)| (*d, *i)).collect();
        live.extend(self.loosened.keys().copied());
        for j in self.journals.values() {
            live.extend(j.modified.iter().chain(&j.changed).copied());
            live.extend(j.made_inodes.keys().copied());
        }
        self.born.retain(|k, _| live.contains(k));
        self.notes.retain(|_, (_, g)| !gone.contains(g));
        self.groups_of.retain(|_, groups| {
            groups.retain(|g| !gone.contains(g));
            !groups.is_empty()
        });
        let programs = &self.groups_of;
        self.cmdline_of.retain(|p, _| programs.contains_key(p));
        unpin
    }

    /// The original of document (`dev`, `ino`) at `path` for group `group`, whose open of it was
    /// not seen: the document was left loose for another writer, and that writer's original is
    /// the document as it was before (none for a document made by the writer, or another file
    /// given the inode number since). `path` is asked for only when a document of that number
    /// was left loose for another writer: spelt as the kernel does (`realpath`, a `readlink` per
    /// component), it was most of the judge's system calls for each file an `rsync` made.
    pub fn loose_original<'p>(
        &self,
        group: u32,
        dev: u64,
        ino: u64,
        path: impl FnOnce() -> &'p Path,
    ) -> Option<Kept> {
        let (writer, at) = self.loosened.get(&(dev, ino))?;
        if *writer == group || at != path() {
            return None;
        }
        self.kept.get(&(*writer, dev, ino)).cloned()
    }

    /// Whether group `group` has the original of document (`dev`, `ino`) at `path`: a copy was
    /// kept for it, or it made the document there.
    pub fn has_original(&self, group: u32, dev: u64, ino: u64, path: &Path) -> bool {
        self.kept.contains_key(&(group, dev, ino))
            || self
                .journals
                .get(&group)
                .and_then(|j| j.made_inodes.get(&(dev, ino)))
                .is_some_and(|made| made == path)
    }

    /// Who `pid` is, if it was seen within [`SEEN_LATELY`]: known without reading `/proc` again
    /// (a process that ran another program since, within that moment, is still known by the
    /// first — its group is the same).
    pub fn seen_lately(&self, pid: u32) -> Option<Vec<ActorKey>> {
        self.keys_of
            .get(&pid)
            .filter(|(_, at)| at.elapsed() < SEEN_LATELY)
            .map(|(k, _)| k.clone())
    }

    /// Forgets who processes `pids` were: new processes were given their pids (pids are given
    /// again: 32,768 of them on many hosts, cycled in minutes by a busy build — a gone process
    /// was named by the keys of another one that had its pid before).
    /// Only what was learnt before `before` goes (the new process may have been named since).
    pub fn forget_pids(&mut self, pids: impl Iterator<Item = u32>, before: Instant) {
        for pid in pids {
            if self.keys_of.get(&pid).is_some_and(|(_, at)| *at < before) {
                self.keys_of.remove(&pid);
            }
        }
    }

    /// Who `pid` was, if it was seen.
    pub fn remembered(&self, pid: u32) -> Option<Vec<ActorKey>> {
        self.keys_of.get(&pid).map(|(k, _)| k.clone())
    }

    /// Whether the next steps of the actor with `keys` wait until its earlier ones are judged:
    /// evidence against it came in lately ([`Detector::pressing`]), or a verdict on it is
    /// pending. `except` as for [`State::suspect`].
    pub fn held_back(&self, keys: &[ActorKey], except: Option<(u64, u64)>) -> bool {
        self.detector.pressing(keys, Instant::now()) || self.pending_for(keys, except)
    }

    /// Whether a verdict on the actor with `keys` is waiting (`except` as for
    /// [`State::suspect`]).
    pub fn pending_for(&self, keys: &[ActorKey], except: Option<(u64, u64)>) -> bool {
        self.pending
            .iter()
            .any(|p| Some((p.dev, p.ino)) != except && p.keys.iter().any(|k| keys.contains(k)))
    }

    /// Whether the actor with `keys` is under suspicion: evidence against it, or a verdict on it
    /// pending. `except`: an inode whose own pending verdict does not count (the actor writing
    /// again what it emptied).
    pub fn suspect(&self, keys: &[ActorKey], except: Option<(u64, u64)>) -> bool {
        self.detector.score(keys, Instant::now()) > 0.0 || self.pending_for(keys, except)
    }
}

/// What the threads share.
pub(crate) struct Shared {
    pub settings: Settings,
    pub vault: Vault,
    /// Documents kept alive while untrusted processes work near them.
    pub holds: crate::holds::Holds,
    /// Folders whose documents were held lately, by (device, inode), and when.
    pub held_folders: Mutex<HashMap<(u64, u64), Instant>>,
    /// The agent and its supervisor: never judged, never held.
    pub spare: RwLock<HashSet<u32>>,
    pub state: Mutex<State>,
    /// Documents by path.
    pub docs: RwLock<HashMap<PathBuf, Doc>>,
    /// Watched folders.
    pub folders: RwLock<Folders>,
    /// Decoys.
    pub canaries: RwLock<HashSet<PathBuf>>,
    pub perm: OwnedFd,
    pub notify: OwnedFd,
    /// A folder open on each filesystem of the folders, by filesystem id (as events name it):
    /// what files are opened by handle on (opened once: an open of a folder is a permission event while it is alert).
    pub handle_roots: Mutex<HashMap<[u8; 8], OwnedFd>>,
    /// The last few new files the judge opened by handle whose names are no documents' (a
    /// temporary name, as rsync gives every file it makes before renaming it): the rename that
    /// names one a document has it guarded through this descriptor (see
    /// `changes::guard_renamed`), not opened again at its path.
    pub judged_files: Mutex<std::collections::VecDeque<(Handle, OwnedFd)>>,
    pub incidents: Mutex<mpsc::Sender<Incident>>,
    pub ready: AtomicBool,
    /// Whether the permission side holds openers (waiting for the queue to be judged).
    pub holding: AtomicBool,
    /// The permission side's call to the reader when it holds an opener: read the queue now
    /// (the reader's own wait would add milliseconds to every hold).
    pub read_now: OwnedFd,
    /// The judge's call to the permission side once what was read is judged (held openers
    /// may go).
    pub judged: OwnedFd,
    /// The judge's call to the lease side, likewise (see `calm::judged_up_to`).
    pub lease_judged: OwnedFd,
    pub incident_count: AtomicUsize,
    /// Programs blocked on this host, by content.
    pub blocklist: Mutex<crate::blocklist::Blocklist>,
    /// Trusted executables' hashes, cached by (dev, ino, mtime).
    pub trusted_cache: Mutex<HashMap<(u64, u64, i64), bool>>,
    /// Who forked whom lately, and whether the kernel tells (process creations are read).
    pub lineage: Mutex<crate::actor::Lineage>,
    pub lineage_live: AtomicBool,
    /// The process-creation reader's tick, which the judge hurries (see `changes::forks`).
    pub forks_tick: crate::creations::Tick,
    /// Where process creations are read from.
    pub creations: Mutex<crate::creations::Source>,
    /// Changes read and not judged yet.
    pub backlog: AtomicUsize,
    /// The lease side waits for the changes queued before a break to be judged (see
    /// `calm::judged_up_to`): the reader hands on even an empty queue, as for held openers.
    pub lease_waiting: AtomicBool,
    /// A deletion was counted against an actor: every folder is made alert once one stands
    /// (not taken back), if an actor still presses (see `changes::alert_if_due`).
    pub alert_due: AtomicBool,
    /// Of them, deletions and renames of documents.
    pub removals: AtomicUsize,
    /// Opens held so far, and their waits in microseconds.
    pub held: AtomicU64,
    pub held_us: AtomicU64,
    /// Calm folders (see [`calm`]).
    pub calm: Mutex<calm::Calm>,
    /// How many folders are calm (kept with the set, read without its lock).
    pub calm_count: AtomicUsize,
    /// Originals kept at a lease break, by (device, inode), until the writer is named.
    pub unclaimed: Mutex<HashMap<(u64, u64), calm::Unclaimed>>,
    /// Leases broken, and permission events answered, so far.
    pub breaks: AtomicU64,
    /// How long the writers of the leases broken so far waited for the agent, in microseconds
    /// (from the break's signal read to the lease let go).
    pub breaks_us: AtomicU64,
    pub permission_events: AtomicU64,
    /// Reads of the permission queue that failed (the kernel refuses the opener then).
    pub refused_unasked: AtomicU64,
    /// Overflows of the change queue (see [`Status::changes_lost`]).
    pub changes_lost: AtomicU64,
    /// The judge's thread id, once it runs.
    pub judge_thread: std::sync::atomic::AtomicU32,
    /// The thread reading process creations, once it runs.
    pub forks_thread: std::sync::atomic::AtomicU32,
    /// The permission side's watchdog (see [`permission::watchdog`]).
    pub watch: permission::Watch,
}

/// The running monitor.
pub struct Monitor {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The permission side stops last, on its own signal (see `Drop`).
    stop_permission: Arc<AtomicBool>,
    permission: Option<JoinHandle<()>>,
    /// Its watchdog stops after it.
    stop_watchdog: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts watching. `spare`: this process and its supervisor. Incidents go to `incidents`.
    pub fn start(
        settings: Settings,
        vault: Vault,
        spare: Vec<u32>,
        incidents: mpsc::Sender<Incident>,
    ) -> std::io::Result<Monitor> {
        let perm = rampart_sys::fanotify_permission_group()?;
        let (notify, naming_files) = rampart_sys::fanotify_notification_group_naming_files()?;
        if !naming_files {
            tracing::warn!(
                "ransomware: this kernel does not name files in change notifications (before 5.17): a change judged late is judged by name, and the name may be another file's by then"
            );
        }
        let shared = Arc::new(Shared {
            settings,
            vault,
            holds: crate::holds::Holds::new(),
            held_folders: Mutex::new(HashMap::new()),
            spare: RwLock::new(spare.into_iter().collect()),
            state: Mutex::new(State::default()),
            docs: RwLock::new(HashMap::new()),
            folders: RwLock::new(Folders::default()),
            canaries: RwLock::new(HashSet::new()),
            perm,
            notify,
            handle_roots: Mutex::new(HashMap::new()),
            judged_files: Mutex::new(std::collections::VecDeque::new()),
            incidents: Mutex::new(incidents),
            ready: AtomicBool::new(false),
            holding: AtomicBool::new(false),
            read_now: rampart_sys::eventfd()?,
            judged: rampart_sys::eventfd()?,
            lease_judged: rampart_sys::eventfd()?,
            incident_count: AtomicUsize::new(0),
            blocklist: Mutex::new(crate::blocklist::Blocklist::default()),
            trusted_cache: Mutex::new(HashMap::new()),
            lineage: Mutex::new(crate::actor::Lineage::default()),
            lineage_live: AtomicBool::new(false),
            forks_tick: crate::creations::Tick::default(),
            creations: Mutex::new(crate::creations::Source::None),
            backlog: AtomicUsize::new(0),
            lease_waiting: AtomicBool::new(false),
            alert_due: AtomicBool::new(false),
            removals: AtomicUsize::new(0),
            held: AtomicU64::new(0),
            held_us: AtomicU64::new(0),
            calm: Mutex::new(calm::Calm::default()),
            calm_count: AtomicUsize::new(0),
            unclaimed: Mutex::new(HashMap::new()),
            breaks: AtomicU64::new(0),
            breaks_us: AtomicU64::new(0),
            permission_events: AtomicU64::new(0),
            refused_unasked: AtomicU64::new(0),
            changes_lost: AtomicU64::new(0),
            judge_thread: std::sync::atomic::AtomicU32::new(0),
            forks_thread: std::sync::atomic::AtomicU32::new(0),
            watch: permission::Watch::default(),
        });
        // programs blocked by an earlier run: refused again where they are, copies looked for
        for b in shared.settings.blocked.clone() {
            let at = Path::new(&b.path);
            if crate::blocklist::blocked_file(at).is_some_and(|f| f.sha256 == b.sha256) {
                changes::refuse(&shared, at);
            }
            shared.blocklist.lock().expect("blocklist lock").add(b);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop_permission = Arc::new(AtomicBool::new(false));
        let (work, queue) = mpsc::channel();
        let mut threads = Vec::new();
        let permission = {
            let (shared, stop, work) = (shared.clone(), stop_permission.clone(), work.clone());
            std::thread::Builder::new()
                .name("ransomware-permission".into())
                .spawn(move || permission::run(&shared, &stop, &work))?
        };
        let stop_watchdog = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (shared, stop) = (shared.clone(), stop_watchdog.clone());
            std::thread::Builder::new()
                .name("ransomware-watchdog".into())
                .spawn(move || permission::watchdog(&shared, &stop))?
        };
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("ransomware-notify".into())
                    .spawn(move || changes::read(&shared, &stop, &work))?,
            );
        }
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("ransomware-judge".into())
                    .spawn(move || changes::judge(&shared, &stop, queue))?,
            );
        }
        // documents guarded by leases, folders made calm while no one is suspect (not in strict
        // mode: only a permission event refuses an open)
        let leases = shared.settings.mode != RansomwareMode::Strict
            && match rampart_sys::lease::LeaseBreaks::get() {
                Ok(breaks) => {
                    let (shared, stop) = (shared.clone(), stop.clone());
                    threads.push(
                        std::thread::Builder::new()
                            .name("ransomware-leases".into())
                            .spawn(move || calm::run(&shared, &stop, breaks))?,
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ransomware: no leases: every open of a document waits on a permission event");
                    false
                }
            };
        {
            // upkeep off the openers' way: vault copies reach the disk here, within a second
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("ransomware-upkeep".into())
                    .spawn(move || {
                        rampart_sys::block_signals_in_this_thread();
                        let tick = Duration::from_millis(50);
                        let mut since = Instant::now();
                        let mut calmed = Instant::now();
                        while !stop.load(Ordering::SeqCst) {
                            std::thread::sleep(tick);
                            if leases && calmed.elapsed() >= Duration::from_millis(500) {
                                calm::settle(&shared);
                                calmed = Instant::now();
                            }
                            // and the holds let go are closed here, off the openers' way
                            shared.holds.close_released();
                            if since.elapsed() >= crate::vault::SYNC_EVERY {
                                shared.vault.sync();
                                since = Instant::now();
                            }
                        }
                        shared.vault.sync();
                    })?,
            );
        }
        let creations = {
            let (ready, source) = mpsc::channel();
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("ransomware-forks".into())
                    .spawn(move || changes::forks(&shared, &stop, ready))?,
            );
            source.recv().unwrap_or(crate::creations::Source::None)
        };
        shared.lineage_live.store(
            creations != crate::creations::Source::None,
            Ordering::SeqCst,
        );
        *shared.creations.lock().expect("creations lock") = creations;
        {
            // the first walk: folders watched, documents held and guarded, decoys placed
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("ransomware-scan".into())
                    .spawn(move || {
                        let started = Instant::now();
                        let folders = shared.settings.folders.clone();
                        for f in folders.iter().filter(|f| f.is_dir()) {
                            if shared.settings.canaries {
                                // in each protected folder and each folder just below (a home)
                                place_canaries(&shared, f);
                                for e in std::fs::read_dir(f).into_iter().flatten().flatten() {
                                    if e.file_type().is_ok_and(|t| t.is_dir())
                                        && !excluded(&shared, &e.path())
                                    {
                                        place_canaries(&shared, &e.path());
                                    }
                                }
                            }
                            watch_tree(&shared, f, false, None);
                        }
                        shared.ready.store(true, Ordering::SeqCst);
                        tracing::info!(
                            documents = shared.docs.read().expect("docs lock").len(),
                            ms = started.elapsed().as_millis() as u64,
                            "ransomware protection: folders watched"
                        );
                    })?,
            );
        }
        Ok(Monitor {
            shared,
            stop,
            threads,
            stop_permission,
            permission: Some(permission),
            stop_watchdog,
            watchdog: Some(watchdog),
        })
    }

    /// The folders it protects (as given: those that exist are watched).
    pub fn folders(&self) -> &[PathBuf] {
        &self.shared.settings.folders
    }

    /// What the monitor is doing.
    pub fn status(&self) -> Status {
        Status {
            folders: self.shared.folders.read().expect("folders lock").len(),
            documents: self.shared.docs.read().expect("docs lock").len(),
            ready: self.shared.ready.load(Ordering::SeqCst),
            incidents: self.shared.incident_count.load(Ordering::SeqCst),
            held: self.shared.held.load(Ordering::Relaxed),
            held_ms: self.shared.held_us.load(Ordering::Relaxed) / 1000,
            backlog: self.shared.backlog.load(Ordering::SeqCst),
            guarded: self.shared.holds.guarded(),
            calm_folders: calm::calm_folders(&self.shared),
            permission_events: self.shared.permission_events.load(Ordering::Relaxed),
            lease_breaks: self.shared.breaks.load(Ordering::Relaxed),
            lease_break_ms: self.shared.breaks_us.load(Ordering::Relaxed) / 1000,
            refused_unasked: self.shared.refused_unasked.load(Ordering::Relaxed),
            changes_lost: self.shared.changes_lost.load(Ordering::Relaxed),
            let_through: self.shared.watch.let_through.load(Ordering::Relaxed),
            creations: *self.shared.creations.lock().expect("creations lock"),
        }
    }

    /// Holds the monitor's state until the answer is dropped: every thread that needs it waits
    /// meanwhile, the permission side at its next event. What a bug that held a lock for ever
    /// would do — for the tests of the watchdog, nothing else.
    #[doc(hidden)]
    pub fn stall(&self) -> Stalled<'_> {
        Stalled {
            _state: self.shared.state.lock().expect("state lock"),
        }
    }

    /// Trusts process `pid` as part of the agent (its supervisor, started again).
    pub fn spare(&self, pid: u32) {
        self.shared.spare.write().expect("spare lock").insert(pid);
    }

    /// The incidents so far, with their plans.
    pub fn incidents(&self) -> Vec<Convicted> {
        self.shared
            .state
            .lock()
            .expect("state lock")
            .incidents
            .clone()
    }

    /// Restores the files of incident `id` (again: it is idempotent), with everything its actor
    /// did up to now. `None`: no such incident.
    pub fn restore(&self, id: &str) -> Option<Incident> {
        let groups = {
            let state = self.shared.state.lock().expect("state lock");
            state
                .incidents
                .iter()
                .find(|c| c.incident.id == id)
                .map(|c| c.groups.clone())?
        };
        let plan = changes::plan_of(&self.shared, &groups);
        let files = plan.restore(
            &self.shared.vault,
            &self.shared.holds,
            &self.shared.settings.quarantine.join(id),
        );
        watch_restored(&self.shared, &files);
        let mut state = self.shared.state.lock().expect("state lock");
        let c = state.incidents.iter_mut().find(|c| c.incident.id == id)?;
        c.incident.files = files;
        c.plan = plan;
        Some(c.incident.clone())
    }

    /// The id of the thread that judges changes (0 before it runs): how long it takes to judge
    /// depends on its share of the CPU (a test starves it to see what late judgement does).
    pub fn judge_thread(&self) -> u32 {
        self.shared.judge_thread.load(Ordering::SeqCst)
    }

    /// The id of the thread that reads process creations (0 before it runs): a process gone
    /// before this thread read its exec is named only from what the kernel announced (a test
    /// starves it).
    pub fn forks_thread(&self) -> u32 {
        self.shared.forks_thread.load(Ordering::SeqCst)
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.shared.vault
    }

    /// Evicts vault copies older than `max_age` or beyond `max_bytes`, except those an
    /// incident or a running actor's journal still needs. Returns how many went.
    pub fn evict(&self, max_bytes: u64, max_age: Duration) -> usize {
        // gathered only if some copy is due to go: the judge and the lease side wait on this lock
        let needed = std::cell::OnceCell::new();
        let gather = || -> HashSet<String> {
            let state = self.shared.state.lock().expect("state lock");
            let from_incidents = state.incidents.iter().flat_map(|c| {
                c.plan.originals.iter().filter_map(|o| match &o.source {
                    crate::restore::Source::Copy(sha) => Some(sha.clone()),
                    _ => None,
                })
            });
            let from_journals = state.journals.values().flat_map(|j| {
                j.touches.iter().filter_map(|t| match t {
                    Touch::Modified {
                        kept: Some(Kept::Copy { sha256, .. }),
                        ..
                    } => Some(sha256.clone()),
                    _ => None,
                })
            });
            from_incidents.chain(from_journals).collect()
        };
        self.shared.vault.evict(max_bytes, max_age, &|sha| {
            needed.get_or_init(gather).contains(sha)
        })
    }
}

impl Drop for Monitor {
    /// Stops in an order that leaves no opener waiting: an event queued and never answered
    /// stops its opener for as long as the group lives — and a child of this process caught
    /// between fork and exec keeps a copy of the group's descriptor, so the group can outlive
    /// every thread that reads it. So the threads that add marks stop first, then every mark
    /// goes (nothing new is queued), then the permission side answers what is left and stops.
    ///
    /// A thread that does not stop within [`STOP_WITHIN`] (stuck: a bug) is left behind, logged,
    /// so that stopping — an unload — always ends; the watchdog, stopped last, answers whatever
    /// opens the permission side still holds.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + STOP_WITHIN;
        for t in self.threads.drain(..) {
            join_within(t, deadline);
        }
        for group in [&self.shared.perm, &self.shared.notify] {
            if let Err(e) = rampart_sys::fanotify_flush_marks(group) {
                tracing::warn!(error = %e, "ransomware: could not remove the marks");
            }
        }
        self.stop_permission.store(true, Ordering::SeqCst);
        if let Some(t) = self.permission.take() {
            join_within(t, Instant::now() + STOP_WITHIN);
        }
        self.stop_watchdog.store(true, Ordering::SeqCst);
        if let Some(t) = self.watchdog.take() {
            let _ = t.join();
        }
    }
}

/// How long stopping waits for the monitor's threads (each group of them) before it leaves the
/// ones still running behind: longer than the watchdog gives an open being decided.
const STOP_WITHIN: Duration = Duration::from_secs(12);

/// Joins thread `t` if it ends by `deadline`; else leaves it behind, logged.
fn join_within(t: JoinHandle<()>, deadline: Instant) {
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if t.is_finished() {
        let _ = t.join();
    } else {
        tracing::error!(
            thread = t.thread().name().unwrap_or_default(),
            "ransomware: a thread did not stop (a bug): left behind, the protection stops without it"
        );
    }
}

/// The monitor's state held (see [`Monitor::stall`]).
#[doc(hidden)]
pub struct Stalled<'a> {
    _state: std::sync::MutexGuard<'a, State>,
}

/// Whether `path` is left alone by the policy's exclusions (or is the vault or quarantine).
pub(crate) fn excluded(shared: &Shared, path: &Path) -> bool {
    // on every change judged, compared as bytes in place (a `String` per component of every
    // path, then `Path`'s own component parsing, were a tenth and a twentieth of the judge's
    // time under an `rsync` making thousands of files)
    let p = path.as_os_str().as_bytes();
    if under(p, shared.vault.dir()) || under(p, &shared.settings.quarantine) {
        return true;
    }
    shared.settings.exclusions.iter().any(|e| {
        if e.starts_with('/') {
            under(p, Path::new(e))
        } else {
            p.split(|b| *b == b'/').any(|c| c == e.as_bytes())
        }
    })
}

/// Whether path `p` is `dir` or inside it (both absolute, as the kernel and the policy name
/// them; a trailing `/` of `dir` does not count).
fn under(p: &[u8], dir: &Path) -> bool {
    let d = dir.as_os_str().as_bytes();
    let d = d.strip_suffix(b"/").unwrap_or(d);
    p.starts_with(d) && (p.len() == d.len() || p[d.len()] == b'/')
}

/// Whether `path` is inside a protected folder.
pub(crate) fn in_scope(shared: &Shared, path: &Path) -> bool {
    let p = path.as_os_str().as_bytes();
    shared.settings.folders.iter().any(|f| under(p, f)) && !excluded(shared, path)
}

/// Watches folder `dir` and everything below it: folders get notification marks, documents
/// are held in the vault and guarded by an inode mark. `made`: the tree was just made (or moved
/// in) while the protection runs — each folder of it is made calm at once where it may be
/// (see [`calm::made_folder`]); `maker`: who made it, if known (a document of it not guarded
/// yet — still being made — is loose for it, see [`calm::guard`]).
pub(crate) fn watch_tree(shared: &Shared, dir: &Path, made: bool, maker: Option<&[ActorKey]>) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if excluded(shared, &d) {
            continue;
        }
        watch_folder(shared, &d);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut docs = Vec::new();
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && watch_document(shared, &p, maker) {
                docs.push(p);
            }
        }
        if made {
            calm::made_folder(shared, &d, &docs);
        }
    }
}

/// Logs a failure to mark `path`: a warning, unless the file is gone already (a temporary file
/// renamed or removed as soon as it was made — `sed -i`'s, cargo's — is no news).
fn gone_or_warn(path: &Path, e: &std::io::Error, what: &str) {
    if e.kind() == std::io::ErrorKind::NotFound {
        tracing::debug!(path = %path.display(), error = %e, "{what}: gone already");
    } else {
        tracing::warn!(path = %path.display(), error = %e, "{what}");
    }
}

/// Marks one folder in the notification group, and its opens in the permission group (an
/// actor under suspicion that moves on to the next folder waits for its judgement).
pub(crate) fn watch_folder(shared: &Shared, dir: &Path) {
    if let Err(e) = rampart_sys::fanotify_mark_inode(&shared.notify, ON_FOLDER, dir) {
        gone_or_warn(dir, &e, "cannot watch a folder");
        return;
    }
    if let Err(e) =
        rampart_sys::fanotify_mark_inode(&shared.perm, libc::FAN_OPEN_PERM | libc::FAN_ONDIR, dir)
    {
        gone_or_warn(dir, &e, "cannot guard a folder");
    }
    if let Ok(h) = rampart_sys::name_to_handle(dir) {
        shared
            .folders
            .write()
            .expect("folders lock")
            .insert(h, dir.to_path_buf());
    }
}

/// Holds and guards `path` if it is a document (by name, or by content for names without an
/// extension). Returns whether it is one. `maker`: who just made it, if known.
pub(crate) fn watch_document(shared: &Shared, path: &Path, maker: Option<&[ActorKey]>) -> bool {
    watch_file(shared, path, maker, false, None)
}

/// [`watch_document`] for the file at `path` that the judge has open already (`file`, opened
/// by the handle the event named — see `changes::open_by_handle`): guarded through that
/// descriptor, no path walked again. A file removed since is looked for at `path`.
pub(crate) fn watch_made_document(
    shared: &Shared,
    path: &Path,
    maker: Option<&[ActorKey]>,
    file: OwnedFd,
) -> bool {
    watch_file(shared, path, maker, false, Some(file))
}

/// [`watch_document`], unless the file at `path` is the document known there already (a
/// document renamed away and back). `file`: the file renamed there, where the judge has it open
/// already (see [`watch_made_document`]).
pub(crate) fn watch_document_unless_guarded(
    shared: &Shared,
    path: &Path,
    file: Option<OwnedFd>,
) -> bool {
    watch_file(shared, path, None, true, file)
}

fn watch_file(
    shared: &Shared,
    path: &Path,
    maker: Option<&[ActorKey]>,
    unless_known: bool,
    file: Option<OwnedFd>,
) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let by_name = shared.settings.types.by_name(&name);
    if !by_name && name.contains('.') || excluded(shared, path) {
        return false;
    }
    // the file open already, if it is still a file with a name (removed since, whatever is at
    // `path` now is looked at there)
    let file = file.and_then(|fd| match rampart_sys::fstat(fd.as_fd()) {
        Ok(m) if m.nlink() > 0 => Some((m, fd)),
        _ => None,
    });
    // opened once: its status, its content type (a name without an extension), its lease and its
    // mark all come from the one descriptor — a path walked once (a program making thousands of
    // documents, as rsync does, made the agent walk each path four times, and the walks wait on
    // the folder's lock the program holds as it makes the next)
    let opened = match file {
        Some(found) => Ok(found),
        None => rampart_sys::lease::open_for_lease(path)
            .and_then(|fd| rampart_sys::fstat(fd.as_fd()).map(|m| (m, fd))),
    };
    let (m, opened) = match opened {
        Ok((m, fd)) => (m, Ok(std::fs::File::from(fd))),
        // gone, or a symbolic link: no document
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ELOOP) =>
        {
            return false;
        }
        // there, not to be opened now (a write lease, no descriptor left): watched unguarded
        Err(e) => match rampart_sys::lstat(path) {
            Ok(m) if by_name => (m, Err(e)),
            _ => return false,
        },
    };
    if !m.is_file() {
        return false;
    }
    if let Ok(file) = &opened {
        if !by_name
            && !crate::vault::read_head_of(file, 64)
                .is_ok_and(|h| shared.settings.types.by_content(&h))
        {
            return false;
        }
    }
    let doc = (m.dev(), m.ino());
    if unless_known
        && shared
            .docs
            .read()
            .expect("docs lock")
            .get(path)
            .is_some_and(|d| (d.dev, d.ino) == doc)
    {
        return true;
    }
    let old = shared.docs.write().expect("docs lock").insert(
        path.to_path_buf(),
        Doc {
            dev: doc.0,
            ino: doc.1,
        },
    );
    // another inode was this document (a save by rename): its guard becomes a hold
    if let Some(old) = old.filter(|o| (o.dev, o.ino) != doc) {
        shared.holds.guard_to_hold(old.dev, old.ino);
    }
    // marked through the descriptor (whose own open was no permission event), then guarded
    let marked = match &opened {
        Ok(fd) => rampart_sys::fanotify_mark_fd(&shared.perm, libc::FAN_OPEN_PERM, fd.as_fd()),
        Err(_) => rampart_sys::fanotify_mark_inode(&shared.perm, libc::FAN_OPEN_PERM, path),
    };
    if let Err(e) = marked {
        gone_or_warn(path, &e, "cannot guard a document");
    }
    calm::guard(
        shared,
        path,
        doc,
        opened.map(|f| (OwnedFd::from(f), &m)),
        maker,
    );
    true
}

/// A minimal but valid document of each kind, as decoys.
const CANARIES: &[(&str, &[u8])] = &[
    (
        ".~rampart-decoy.pdf",
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    ),
    (
        ".~rampart-decoy.txt",
        b"Budget 2027 - draft\n\nRegion    Q1     Q2     Q3     Q4\nNorth     1200   1350   1410   1500\nSouth     980    1010   1100   1230\n",
    ),
];

/// Guards the documents a restore brought back: each is a new inode (written beside and renamed
/// over), which neither carries the old one's mark nor is known by it; a decoy is held again.
pub(crate) fn watch_restored(
    shared: &Shared,
    files: &[rampart_protocol::ransomware::IncidentFile],
) {
    for f in files {
        if f.outcome != rampart_protocol::ransomware::FileOutcome::Restored {
            continue;
        }
        let path = Path::new(&f.path);
        if !watch_document(shared, path, None) {
            continue;
        }
        let canary = shared
            .canaries
            .read()
            .expect("canaries lock")
            .contains(path);
        if canary {
            if let Some((dev, ino)) = shared.holds.hold_path(path) {
                shared.holds.pin(dev, ino);
            }
        }
    }
}

/// Places the decoys in `dir` (and leaves those already there).
fn place_canaries(shared: &Shared, dir: &Path) {
    for (name, content) in CANARIES {
        let path = dir.join(name);
        if !path.exists() {
            if let Err(e) = std::fs::write(&path, content) {
                // a folder closed to writers (the server's data folder, under the server's
                // self-protection) needs no decoy: nobody can change what is in it
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    tracing::debug!(path = %path.display(), "no decoy in a folder closed to writers");
                    break;
                }
                tracing::warn!(path = %path.display(), error = %e, "cannot place a decoy document");
                continue;
            }
        }
        if let Some((dev, ino)) = shared.holds.hold_path(&path) {
            shared.holds.pin(dev, ino);
        }
        shared.canaries.write().expect("canaries lock").insert(path);
    }
}

/// How many folders listed lately [`hold_folder`] remembers before it forgets those listed
/// longer ago than it looks back.
const HELD_FOLDERS: usize = 4096;

/// Holds every document of the folder open as `dir` (an untrusted process lists it: it may
/// delete what it finds), unless they were held a moment ago. Lists it through the event's own
/// descriptor: opening it again would wait for the very event being answered.
pub(crate) fn hold_folder(shared: &Shared, dir: std::os::fd::BorrowedFd<'_>, key: (u64, u64)) {
    let now = Instant::now();
    {
        let mut recent = shared.held_folders.lock().expect("folders lock");
        if recent
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < crate::holds::HOLD_FOR / 2)
        {
            return;
        }
        // those of a moment ago only (else every folder ever listed stayed here)
        if recent.len() >= HELD_FOLDERS {
            recent.retain(|_, t| now.duration_since(*t) < crate::holds::HOLD_FOR / 2);
        }
        recent.insert(key, now);
    }
    let Ok(entries) = rampart_sys::list_dir_fd(dir) else {
        return;
    };
    for (name, is_file) in entries {
        if is_file && shared.settings.types.by_name(&name.to_string_lossy()) {
            // a guarded document is held by its guard already: one `fstatat`, no descriptor (a
            // calm folder's listing, on its lister's way, opened and looked up every document)
            if rampart_sys::stat_at(dir, &name)
                .is_ok_and(|m| shared.holds.is_guarded(m.dev(), m.ino()))
            {
                continue;
            }
            if let Ok(fd) = rampart_sys::open_path_at(dir, &name) {
                if let Ok(m) = rampart_sys::fstat(std::os::fd::AsFd::as_fd(&fd)) {
                    shared.holds.keep(m.dev(), m.ino(), fd);
                }
            }
        }
    }
}

/// Whether the actor with `keys` is convicted.
pub(crate) fn is_convicted(state: &State, keys: &[ActorKey]) -> bool {
    state.detector.is_convicted(keys)
}

/// Whether the policy trusts a program at `exe` (its hash not looked at).
pub(crate) fn names_trusted(shared: &Shared, exe: &Path) -> bool {
    shared.settings.trusted.iter().any(|(p, _)| p == exe)
}

/// Whether `program` is trusted by the policy (path and SHA-256).
pub(crate) fn is_trusted(shared: &Shared, program: &Program, pid: u32) -> bool {
    trust(shared, program, pid).unwrap_or(false)
}

/// Whether `program`, run by `pid`, is trusted by the policy; `None` when that can no longer be
/// told — the process is exiting and its executable cannot be read — for a program the policy
/// names.
pub(crate) fn trust(shared: &Shared, program: &Program, pid: u32) -> Option<bool> {
    if shared.settings.trusted.is_empty() {
        return Some(false);
    }
    let Some((_, want)) = shared
        .settings
        .trusted
        .iter()
        .find(|(p, _)| *p == program.exe)
    else {
        return Some(false);
    };
    verdict(shared, Path::new(&format!("/proc/{pid}/exe")), want)
}

/// Whether the file at `path` — the policy names it — is still the executable (`dev`, `ino`)
/// a process gone now ran, with the policy's hash (see `changes::ran_keys`).
pub(crate) fn trust_file(shared: &Shared, path: &Path, exe: (u64, u64)) -> Option<bool> {
    let (_, want) = shared.settings.trusted.iter().find(|(p, _)| p == path)?;
    let m = std::fs::metadata(path).ok()?;
    if (m.dev(), m.ino()) != exe {
        return Some(false);
    }
    verdict(shared, path, want)
}

/// Whether the executable at `file` has the SHA-256 `want` (kept by device, inode and change
/// time); `None` when it cannot be read (the process exiting: not remembered).
fn verdict(shared: &Shared, file: &Path, want: &str) -> Option<bool> {
    let m = std::fs::metadata(file).ok()?;
    let key = (m.dev(), m.ino(), m.mtime());
    if let Some(v) = shared.trusted_cache.lock().expect("cache lock").get(&key) {
        return Some(*v);
    }
    let ok = sha256_of(file)? == *want;
    shared
        .trusted_cache
        .lock()
        .expect("cache lock")
        .insert(key, ok);
    Some(ok)
}

/// The SHA-256 of a file, in hex.
pub fn sha256_of(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = rampart_sys::open_to_read(path, 0).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

#[cfg(test)]
mod made_files_tests {
    use super::{MadeFile, MadeFiles};
    use std::path::{Path, PathBuf};

    fn judged(encrypted: bool, converted: bool) -> MadeFile {
        MadeFile {
            handle: None,
            inode: None,
            judged: Some((encrypted, converted)),
            unread: false,
        }
    }

    #[test]
    fn what_was_made_beside_a_document_is_found_by_its_name() {
        let mut m = MadeFiles::default();
        m.insert("/d/report.txt.gz".into(), judged(false, true));
        m.insert("/d/report.txt".into(), judged(false, false));
        m.insert("/d/report.txu".into(), judged(true, false));
        m.insert("/e/report.txt.enc".into(), judged(true, false));
        m.insert("/d/zzz".into(), judged(true, false));
        let beside: Vec<PathBuf> = m
            .beside(Path::new("/d/report.txt"))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            beside,
            vec![
                PathBuf::from("/d/report.txt"),
                PathBuf::from("/d/report.txt.gz")
            ]
        );
        assert!(m.get(Path::new("/e/report.txt.enc")).is_some());
        assert_eq!(
            m.remove(Path::new("/d/report.txt.gz")),
            Some(judged(false, true))
        );
        assert_eq!(m.get(Path::new("/d/report.txt.gz")), None);
        assert!(m.beside(Path::new("/nowhere/x")).is_empty());
    }

    /// A file made and not judged is known by its handle: another file at its name later (the
    /// next `gzip -r`'s, made but not written yet) is not it.
    #[test]
    fn a_file_not_judged_is_the_one_its_handle_names() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let gz = dir.path().join("report.txt.gz");
        std::fs::write(&gz, b"").unwrap();
        let made = MadeFile {
            handle: Some(rampart_sys::name_to_handle(&gz).unwrap()),
            inode: None,
            judged: None,
            unread: false,
        };
        assert_eq!(made.known_as(&gz), (false, false), "there: nothing known");
        let first = dir.path().join("first");
        std::fs::rename(&gz, &first).unwrap();
        std::fs::write(&gz, b"").unwrap();
        assert_eq!(
            made.known_as(&gz),
            (false, true),
            "another file at its name"
        );
        std::fs::remove_file(&gz).unwrap();
        assert_eq!(made.known_as(&gz), (false, true), "gone");
        let by_name = MadeFile {
            handle: None,
            inode: None,
            judged: None,
            unread: false,
        };
        assert_eq!(by_name.known_as(&gz), (false, true), "gone, by name");
        assert_eq!(by_name.known_as(&first), (false, false), "there, by name");
        assert_eq!(judged(true, false).known_as(&gz), (true, false));
        assert_eq!(judged(false, false).known_as(&gz), (false, true), "gone");
        assert_eq!(judged(false, false).known_as(&first), (false, false));
    }
}

#[cfg(test)]
mod forget_tests {
    use super::*;
    use crate::detector::Evidence;
    use crate::vault::Kept;

    /// Folders are known by handle and path; a rename moves a folder and those under it, a
    /// removal forgets one, and a path watched again under a new handle (a folder removed and
    /// made again, its removal not read) is known by the new handle only.
    #[test]
    fn folders_follow_renames_and_removals() {
        let h = |n: u8| -> Handle { (1, vec![n]) };
        let mut f = Folders::default();
        f.insert(h(1), "/p/a".into());
        f.insert(h(2), "/p/a/b".into());
        f.insert(h(3), "/p/c".into());
        f.moved(Path::new("/p/a"), Path::new("/p/z"));
        assert_eq!(f.get(&h(1)), Some(&PathBuf::from("/p/z")));
        assert_eq!(f.get(&h(2)), Some(&PathBuf::from("/p/z/b")));
        assert!(f.forget(Path::new("/p/z/b")));
        assert!(!f.forget(Path::new("/p/a/b")));
        assert!(!f.contains(&h(2)));
        f.insert(h(4), "/p/c".into());
        assert!(!f.contains(&h(3)));
        assert_eq!(f.len(), 2);
        let mut paths: Vec<_> = f.paths().cloned().collect();
        paths.sort();
        assert_eq!(paths, vec![PathBuf::from("/p/c"), PathBuf::from("/p/z")]);
    }

    /// What is written down under an inode number is forgotten once the number is another
    /// file's (a later birth), and kept while it is the same file's (or its birth is unknown).
    #[test]
    fn a_number_given_to_another_file_is_written_down_afresh() {
        let mut s = State::default();
        let first = Some((100, 5));
        s.renew(7, 42, first);
        s.kept.insert((1, 7, 42), Kept::TooLarge { size: 1 });
        s.kept.insert((2, 7, 43), Kept::TooLarge { size: 1 });
        let j = s.journals.entry(1).or_default();
        j.modified.insert((7, 42));
        j.changed.insert((7, 42));
        s.journals.entry(2).or_default();
        s.renew(7, 42, first);
        s.renew(7, 42, None);
        assert!(
            s.kept.contains_key(&(1, 7, 42)),
            "the same file: nothing forgotten"
        );
        assert!(s.journals[&1].modified.contains(&(7, 42)));
        s.renew(7, 42, Some((100, 6)));
        assert!(!s.kept.contains_key(&(1, 7, 42)));
        assert!(s.kept.contains_key(&(2, 7, 43)), "another number: kept");
        let j = &s.journals[&1];
        assert!(!j.modified.contains(&(7, 42)) && !j.changed.contains(&(7, 42)));
        assert_eq!(j.touches, vec![Touch::Renewed { dev: 7, ino: 42 }]);
        assert!(
            s.journals[&2].touches.is_empty(),
            "a group that never touched it"
        );
    }

    #[test]
    fn groups_under_no_suspicion_are_forgotten_once_idle() {
        let now = Instant::now();
        let mut s = State::default();
        for g in [1, 2, 3, 4] {
            s.journals.entry(g).or_default().touched();
            s.kept.insert((g, 7, g as u64), Kept::TooLarge { size: 1 });
        }
        // 1: evidence against it (fading, not gone); 4: convicted long ago
        s.detector
            .add(&[ActorKey::Group(1)], Evidence::Encrypted("a".into()), now);
        s.convicted.push(vec![ActorKey::Group(4)]);
        let later = now + JOURNAL_IDLE + Duration::from_secs(1);
        // 3: still at work
        s.journals.get_mut(&3).unwrap().last = Some(later);
        // documents held for each group's deletions
        for g in [1, 2, 3, 4] {
            s.journals
                .get_mut(&g)
                .unwrap()
                .evidence_holds
                .push((7, 100 + g as u64));
        }
        assert_eq!(
            s.forget(later),
            vec![(7, 102)],
            "only the forgotten group's holds end"
        );
        let mut left: Vec<u32> = s.journals.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, vec![1, 3, 4]);
        assert!(!s.kept.keys().any(|(g, _, _)| *g == 2));
        assert_eq!(s.kept.len(), 3);
        // once its score is gone too, 1 goes; a convicted group stays
        let unpin = s.forget(later + Duration::from_secs(24 * 3600));
        assert!(!s.journals.contains_key(&1) && s.journals.contains_key(&4));
        assert!(unpin.contains(&(7, 101)) && !unpin.contains(&(7, 104)));
    }

    #[test]
    fn a_journal_too_long_is_forgotten_while_its_group_works_unless_suspected() {
        let now = Instant::now();
        let mut s = State::default();
        let made = |n: u64| Touch::Created {
            path: format!("/home/u/f{n}").into(),
            dev: 7,
            ino: n,
        };
        for g in [1, 2, 3] {
            let j = s.journals.entry(g).or_default();
            j.touched();
            let n = if g == 3 {
                10
            } else {
                JOURNAL_AT_MOST as u64 + 1
            };
            j.touches.extend((0..n).map(made));
            s.kept.insert((g, 7, 1), Kept::TooLarge { size: 1 });
        }
        // 1: evidence against it — its whole journal is needed for a restore
        s.detector
            .add(&[ActorKey::Group(1)], Evidence::Encrypted("a".into()), now);
        s.forget(now + Duration::from_secs(1));
        let mut left: Vec<u32> = s.journals.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(
            left,
            vec![1, 3],
            "2, at work but under no suspicion, is forgotten"
        );
        assert_eq!(s.journals[&1].touches.len(), JOURNAL_AT_MOST + 1);
        assert!(!s.kept.contains_key(&(2, 7, 1)) && s.kept.contains_key(&(3, 7, 1)));
    }

    #[test]
    fn a_pid_given_to_a_new_process_is_not_named_as_the_old_one() {
        let mut s = State::default();
        s.remember(100, &[ActorKey::Group(100)]);
        let forked_after = Instant::now() + Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(2));
        // named after the fork: the new process's own
        s.remember(200, &[ActorKey::Group(7)]);
        s.forget_pids([100, 200, 300].into_iter(), forked_after);
        assert_eq!(s.remembered(100), None);
        assert_eq!(s.remembered(200), Some(vec![ActorKey::Group(7)]));
    }
}
