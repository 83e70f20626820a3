//! Calm folders: while no actor is under suspicion, documents cost their readers nothing.
//!
//! The permission side sees every open of a guarded document — one round trip to the agent per
//! open, 46–64 µs on our machines, which a program that reads thousands of small documents
//! (rsync, `gzip -r`, git, a backup) pays thousands of times. Yet while nothing is suspect, only
//! an open that may *change* a document matters, and the kernel can single those out itself: a
//! read lease ([`rampart_sys::lease`]) makes every open for writing and every truncation wait
//! for the holder, and lets reads through untouched.
//!
//! So every document also has a **guard** (a descriptor with a read lease, see
//! [`holds`](crate::holds)), and a folder whose documents are all guarded is made **calm**: an
//! ignore mark on the folder silences the permission events of the documents in it, and of the
//! folder's own opens where a process gone before it is read is named from its exec
//! ([`crate::creations`]). In a calm folder:
//! - a read costs an ignore-mask test in the kernel (about 1 µs);
//! - an open for writing, or a truncation, breaks the lease: the writer waits while the lease
//!   thread names it, keeps the document's content in the vault (unless the writer has its
//!   original already) and lets the lease go; whoever then closes the document after writing is
//!   given that kept original. If the writer may be an attacker — under suspicion, or not
//!   found — **every** folder is made alert first (the permission side sees and holds every
//!   open from then on). A writer opening a document it has no original of while changes wait
//!   to be read waits on its lease until they are judged (as the permission side would hold
//!   it), and every folder is made alert if that puts it under suspicion.
//!   Otherwise the folders stay calm and the document **loose**: unguarded but held, until the
//!   next settle guards it again (once no one has it open for writing). A database written by
//!   one process after another meets no permission event at each process's opens;
//! - a deletion or a rename over the document loses nothing: the guard keeps the inode.
//!
//! A loose document is not seen being opened: another program that changes it meanwhile is
//! judged, and undone, against the original of the writer it was left loose for — the content
//! before that writer's first write (see `State::loosened`), not what it wrote since.
//!
//! Folders become calm again once no actor has had evidence against it for
//! [`CALM_AFTER`], nothing waits to be judged and nothing is held. Never calm: folders in
//! `strict` mode (only a permission event can refuse an open), folders with a document that
//! could not be guarded and is not loose (open for writing by someone unknown, or no descriptor
//! left), folders holding a blocked program.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rampart_protocol::policy::RansomwareMode;

use super::Shared;
use crate::actor::ActorKey;
use crate::vault::Kept;

/// How long after the last evidence or lease break folders stay alert.
pub const CALM_AFTER: Duration = Duration::from_secs(2);

/// How long an original kept at a lease break waits for the writer to be named.
const UNCLAIMED_FOR: Duration = Duration::from_secs(120);

/// The calm folders and what the lease side kept.
pub(crate) struct Calm {
    /// Folders with an ignore mark now, by (device, inode), through their descriptor (a folder's
    /// path may change under a mark).
    ignoring: HashMap<(u64, u64), OwnedFd>,
    /// Whether a folder was forgotten since the last settle (see [`forget_folder`]).
    forgot: bool,
    /// Folders never made calm (a blocked program is in them).
    never: HashSet<PathBuf>,
    /// When the last evidence or lease break came.
    alerted: Instant,
    /// What the last look found: documents and folders known, documents guarded, folders made
    /// alert since (nothing changed: nothing to look at again).
    looked: Option<(usize, usize, usize, u64)>,
    /// Folders made alert one by one, so far.
    alerted_folders: u64,
    /// Documents left unguarded in calm folders: being written by an actor under no suspicion
    /// that has their original (or made them) — by (device, inode), with its process group.
    /// Guarded again by the next settle that can (once no one has them open for writing).
    loose: HashMap<(u64, u64), u32>,
}

impl Default for Calm {
    fn default() -> Self {
        Calm {
            ignoring: HashMap::new(),
            forgot: false,
            never: HashSet::new(),
            alerted: Instant::now(),
            looked: None,
            alerted_folders: 0,
            loose: HashMap::new(),
        }
    }
}

/// An original kept at a lease break, not yet given to the actor that changed the document.
#[derive(Debug, Clone)]
pub(crate) struct Unclaimed {
    pub path: PathBuf,
    pub kept: Kept,
    pub at: Instant,
}

/// The mask a calm folder ignores: the opens of its documents, and its own opens where a process
/// gone before it is read can be named from its exec (process creations come from the
/// tracepoints, see [`crate::creations`]). Otherwise a calm folder's own open is a permission
/// event: the lister is named before it can vanish (a script's `rm -rf` takes microseconds),
/// one round trip per open of the folder — measured, 3–7 % of a `sqlite3`-per-row loop, which
/// opens its folder to sync it.
fn silenced(shared: &Shared) -> u64 {
    if *shared.creations.lock().expect("creations lock") == crate::creations::Source::Tracepoints {
        libc::FAN_OPEN_PERM | libc::FAN_ONDIR
    } else {
        libc::FAN_OPEN_PERM
    }
}

/// Takes a calm folder's ignore mark away: its opens are permission events again.
fn heed(shared: &Shared, dir: &OwnedFd) {
    let _ = rampart_sys::lease::fanotify_ignore_children(
        &shared.perm,
        silenced(shared),
        dir.as_fd(),
        false,
    );
}

/// Makes every folder alert (permission events for every document again), before anything that
/// may need them: evidence came, or a document is being opened for writing.
pub(crate) fn alert(shared: &Shared) {
    let mut calm = shared.calm.lock().expect("calm lock");
    calm.alerted = Instant::now();
    // whoever wrote them may be suspect now: a folder is calm again only once they are guarded
    calm.loose.clear();
    if !calm.ignoring.is_empty() {
        tracing::debug!(folders = calm.ignoring.len(), "ransomware: folders alert");
    }
    for (_, fd) in calm.ignoring.drain() {
        heed(shared, &fd);
    }
    count(shared, &calm);
}

/// Makes folder `dir` alert (one of its documents could not be guarded).
pub(crate) fn alert_folder(shared: &Shared, dir: &Path) {
    let Ok(m) = std::fs::symlink_metadata(dir) else {
        return;
    };
    let mut calm = shared.calm.lock().expect("calm lock");
    calm.alerted_folders += 1;
    if let Some(fd) = calm.ignoring.remove(&(m.dev(), m.ino())) {
        heed(shared, &fd);
    }
    count(shared, &calm);
}

/// The document (`dev`, `ino`) is being written by the actor with `keys`, which has its
/// original (or made it): unless the actor is held back (fresh evidence against it, or a verdict
/// on it pending), the document may stay unguarded without making its folder alert, until the
/// next settle guards it again. Returns whether it is loose.
pub(crate) fn loosen(shared: &Shared, doc: (u64, u64), keys: &[ActorKey]) -> bool {
    if shared
        .state
        .lock()
        .expect("state lock")
        .held_back(keys, None)
    {
        return false;
    }
    shared
        .calm
        .lock()
        .expect("calm lock")
        .loose
        .insert(doc, group_of(keys));
    true
}

/// Folder `dir` was removed: no longer watched, and its ignore mark let go at the next settle
/// (its inode number is not known any more: each calm folder is looked at then, once).
pub(crate) fn forget_folder(shared: &Shared, dir: &Path) {
    let mut calm = shared.calm.lock().expect("calm lock");
    forget_in(shared, &mut calm, dir);
}

fn forget_in(shared: &Shared, calm: &mut Calm, dir: &Path) {
    if shared.folders.write().expect("folders lock").forget(dir) {
        calm.forgot = true;
        calm.never.remove(dir);
    }
}

/// Folder `dir` is never made calm (a blocked program is in it); made alert now.
pub(crate) fn never_calm(shared: &Shared, dir: &Path) {
    shared
        .calm
        .lock()
        .expect("calm lock")
        .never
        .insert(dir.to_path_buf());
    alert_folder(shared, dir);
}

/// Whether folders may be calm now: no actor under fresh suspicion, nothing held or waiting for
/// a verdict, and — with `backlog` — nothing read and not judged yet.
fn may_calm(shared: &Shared, now: Instant, backlog: bool) -> bool {
    if shared.settings.mode == RansomwareMode::Strict
        || !shared.ready.load(Ordering::SeqCst)
        || shared.holding.load(Ordering::SeqCst)
        || (backlog && shared.backlog.load(Ordering::SeqCst) > 0)
    {
        return false;
    }
    let state = shared.state.lock().expect("state lock");
    !state.detector.any_pressing(now) && state.pending.is_empty() && state.finishing.is_empty()
}

/// Makes calm every folder whose documents are all guarded, if the time is right. Returns how
/// many folders are calm.
pub(crate) fn settle(shared: &Shared) -> usize {
    let now = Instant::now();
    if !may_calm(shared, now, true) {
        return shared.calm.lock().expect("calm lock").ignoring.len();
    }
    // under the lock throughout: a document that cannot be guarded makes its folder alert under
    // it too, so no folder is made calm past one of its documents
    let mut calm = shared.calm.lock().expect("calm lock");
    if now.duration_since(calm.alerted) < CALM_AFTER {
        return calm.ignoring.len();
    }
    let seen = (
        shared.docs.read().expect("docs lock").len(),
        shared.folders.read().expect("folders lock").len(),
        shared.holds.guarded(),
        calm.alerted_folders,
    );
    // (the same counts may be another state: a tree made calm by `made_folder`, then removed)
    if !calm.ignoring.is_empty() && calm.looked == Some(seen) && !calm.forgot {
        return calm.ignoring.len();
    }
    let mut again = false;
    let mut unguarded: HashSet<PathBuf> = HashSet::new();
    let docs: Vec<(PathBuf, u64, u64)> = shared
        .docs
        .read()
        .expect("docs lock")
        .iter()
        .map(|(p, d)| (p.clone(), d.dev, d.ino))
        .collect();
    let known: HashSet<(u64, u64)> = docs.iter().map(|(_, dev, ino)| (*dev, *ino)).collect();
    calm.loose.retain(|doc, _| known.contains(doc));
    for (path, dev, ino) in docs {
        let Some(dir) = path.parent() else { continue };
        // documents written since the last calm are guarded again here, not as each is closed:
        // a program that opens the same document for writing again and again (a database)
        // would otherwise break a lease, and have its document copied, every time
        let now_guarded = shared.holds.is_guarded(dev, ino)
            || (!calm.never.contains(dir)
                && match shared.holds.guard(&path) {
                    Ok(_) => {
                        calm.loose.remove(&(dev, ino));
                        true
                    }
                    Err(e) => {
                        // open for writing now (`EAGAIN`): worth another look, though nothing
                        // else changes, once it is closed
                        again |= e.raw_os_error() == Some(libc::EAGAIN);
                        // written by an actor under no suspicion: no reason to alert its folder
                        calm.loose.contains_key(&(dev, ino))
                    }
                });
        if !now_guarded {
            unguarded.insert(dir.to_path_buf());
        }
    }
    // every folder whose documents are all guarded or loose — a folder without any too (one just
    // made, where a program is about to make its own)
    let folders: Vec<PathBuf> = shared
        .folders
        .read()
        .expect("folders lock")
        .paths()
        .cloned()
        .collect();
    for dir in folders {
        if unguarded.contains(&dir) || calm.never.contains(&dir) {
            continue;
        }
        // calm already (a stat, not an open: an open is a permission event)
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if calm.ignoring.contains_key(&(m.dev(), m.ino())) => continue,
            // removed, and its removal not read (or lost): forgotten here
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                forget_in(shared, &mut calm, &dir);
                continue;
            }
            _ => {}
        }
        make_calm(shared, &mut calm, &dir);
    }
    if calm.forgot {
        // the ignore marks of folders removed since: their descriptors kept them (and their
        // inodes) alive
        calm.ignoring
            .retain(|_, fd| rampart_sys::fstat(fd.as_fd()).is_ok_and(|m| m.nlink() > 0));
        calm.forgot = false;
        count(shared, &calm);
    }
    // a folder left alert for a document open for writing at the time is looked at again at the
    // next settle, not only when something else changes
    calm.looked = (!again).then_some(seen);
    calm.ignoring.len()
}

/// Puts the ignore mark on folder `dir` (its documents all guarded or loose).
fn make_calm(shared: &Shared, calm: &mut Calm, dir: &Path) {
    let Ok(fd) = rampart_sys::lease::open_dir(dir) else {
        return;
    };
    let Ok(m) = rampart_sys::fstat(fd.as_fd()) else {
        return;
    };
    let key = (m.dev(), m.ino());
    if calm.ignoring.contains_key(&key) {
        return;
    }
    match rampart_sys::lease::fanotify_ignore_children(
        &shared.perm,
        silenced(shared),
        fd.as_fd(),
        true,
    ) {
        Ok(()) => {
            calm.ignoring.insert(key, fd);
            count(shared, calm);
        }
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "ransomware: a folder cannot be calm");
        }
    }
}

/// Folder `dir` was just made (or moved in) and watched by the judge, with `docs` the documents
/// found in it: made calm now, if folders may be calm — nothing held back, pending or held,
/// quiet for [`CALM_AFTER`] — and each of them is guarded or loose, rather than at the next
/// settle. A program that makes a tree (`tar -x`, `git clone`, `rsync`, a package) works in it
/// at once; left alert until the next settle, up to half a second later, its every open of a
/// folder or document there was a permission event (about 330 for each `rsync` of the bench's
/// corpus into a new folder, 7,800 for a round of its `tar` workload). The changes still to be
/// judged are not waited for, unlike at a settle (the judge is judging them, this folder's
/// creation among them): what they hold against an actor makes every folder alert as it is
/// judged, and meanwhile a write to a guarded document here is a lease break, which keeps the
/// document and, for a document its writer has no original of, waits for those judgements.
pub(crate) fn made_folder(shared: &Shared, dir: &Path, docs: &[PathBuf]) {
    let now = Instant::now();
    if !may_calm(shared, now, false) {
        return;
    }
    // under the lock throughout, as at a settle
    let mut calm = shared.calm.lock().expect("calm lock");
    if now.duration_since(calm.alerted) < CALM_AFTER || calm.never.contains(dir) {
        return;
    }
    let all_guarded = {
        let known = shared.docs.read().expect("docs lock");
        docs.iter().all(|p| {
            known.get(p).is_some_and(|d| {
                shared.holds.is_guarded(d.dev, d.ino) || calm.loose.contains_key(&(d.dev, d.ino))
            })
        })
    };
    if all_guarded {
        make_calm(shared, &mut calm, dir);
    }
}

/// Publishes how many folders are calm, after a change to the set (see [`calm_folders`]).
fn count(shared: &Shared, calm: &Calm) {
    shared
        .calm_count
        .store(calm.ignoring.len(), Ordering::SeqCst);
}

/// How many folders are calm.
pub(crate) fn calm_folders(shared: &Shared) -> usize {
    // a count kept beside the set, not the set under its lock: settle holds that lock while it
    // opens documents, and a status (the agent's unload answer carries one) must never wait on
    // an open
    shared.calm_count.load(Ordering::SeqCst)
}

/// Guards the document (`dev`, `ino`) at `path`, `opened` (its descriptor and status, or why it
/// could not be opened; see [`crate::holds::Holds::guard_opened`]). When it cannot be — open for
/// writing, or still being made — by the actor with `maker`'s keys, under no suspicion, that
/// just made it, it is loose; else its folder is made alert, so that no calm folder has a
/// document that is neither guarded nor loose.
pub(crate) fn guard(
    shared: &Shared,
    path: &Path,
    doc: (u64, u64),
    opened: std::io::Result<(OwnedFd, &rampart_sys::Stat)>,
    maker: Option<&[ActorKey]>,
) {
    if shared.settings.mode == RansomwareMode::Strict {
        return;
    }
    match opened.and_then(|(fd, m)| shared.holds.guard_opened(fd, m)) {
        Ok(_) => {
            shared.calm.lock().expect("calm lock").loose.remove(&doc);
        }
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "ransomware: a document is not guarded");
            let loose = match maker {
                Some(keys) if e.raw_os_error() == Some(libc::EAGAIN) => loosen(shared, doc, keys),
                _ => false,
            };
            if !loose {
                if let Some(dir) = path.parent() {
                    alert_folder(shared, dir);
                }
            }
        }
    }
}

/// Breaks read from the process's pipe that no monitor has taken yet (several monitors may run
/// in one process, as in tests): descriptor and when it was read.
static PENDING: std::sync::Mutex<Vec<(i32, Instant)>> = std::sync::Mutex::new(Vec::new());

/// How often the host is searched for a writer waiting on a lease whose break was never read.
const MISSED_BREAKS_EVERY: Duration = Duration::from_secs(5);

/// The lease side: a document guarded by a lease is being opened for writing or truncated. Its
/// content goes to the vault, every folder is made alert if the writer may be an attacker, and
/// the lease is let go — the writer goes on.
pub(crate) fn run(shared: &Shared, stop: &AtomicBool, breaks: &rampart_sys::lease::LeaseBreaks) {
    rampart_sys::block_signals_in_this_thread();
    // a writer waits on its lease while this thread works, as an opener waits on the permission
    // thread: the same weight (under ImageMagick, one process per image, a break of a document
    // whose original had to be kept took 1.25 ms in the bench against 0.2 ms on an idle host)
    if let Err(e) = rampart_sys::favour_this_thread(-10) {
        tracing::warn!(error = %e, "the lease thread keeps the usual scheduling weight");
    }
    let mut overflows = breaks.overflows();
    let mut looked = Instant::now();
    let mut likely = LikelyWriters::default();
    // the writers the kernel names as they begin to wait (see `crate::breakers`)
    let mut object = std::mem::MaybeUninit::uninit();
    let mut announcer = match crate::breakers::Announcer::load(&mut object) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "ransomware: the kernel did not load the lease-break tracepoints: a writer waiting on a lease is looked for in /proc (it waits longer)");
            None
        }
    };
    let mut told = Told::default();
    while !stop.load(Ordering::SeqCst) {
        let others = !PENDING.lock().expect("pending lock").is_empty();
        let fds = breaks.wait_also(
            announcer.as_ref().map(|a| a.fd()),
            if others { 5 } else { 100 },
        );
        let now = Instant::now();
        let announced = announcer.as_mut().map(|a| a.take()).unwrap_or_default();
        told.learn(&announced, now);
        // the documents whose leases are being broken, and since when (their signal was read)
        let mut mine: Vec<((u64, u64), Instant)> = {
            let mut pending = PENDING.lock().expect("pending lock");
            pending.extend(fds.into_iter().map(|fd| (fd, now)));
            // signals of breaks handled already, as the kernel announced them
            pending.retain(|(fd, _)| !told.signalled(*fd));
            let fds: Vec<i32> = pending.iter().map(|(fd, _)| *fd).collect();
            let mine = shared.holds.breaking(Some(&fds));
            let taken: HashSet<i32> = shared.holds.fds_of(&mine);
            let since = |doc: &(u64, u64)| {
                let fd = shared.holds.fds_of(std::slice::from_ref(doc));
                pending
                    .iter()
                    .filter(|(f, _)| fd.contains(f))
                    .map(|(_, at)| *at)
                    .min()
                    .unwrap_or(now)
            };
            let mine = mine.into_iter().map(|d| (d, since(&d))).collect();
            // another monitor's, or a guard let go since: a second is long enough
            pending.retain(|(fd, at)| {
                !taken.contains(fd) && now.duration_since(*at) < Duration::from_secs(1)
            });
            mine
        };
        // the breaks announced by the kernel whose signal is not read yet (most: the
        // announcement wakes this thread first): handled now, their signal passed over later
        for b in &announced {
            if mine.iter().all(|(d, _)| *d != b.file) {
                if let Some(fd) = shared.holds.breaking_guard(b.file.0, b.file.1) {
                    mine.push((b.file, now));
                    told.handling(fd, now);
                }
            }
        }
        let mut broken = mine;
        let o = breaks.overflows();
        // a break missed (not written down, or its signal lost): someone waits on a lease while
        // no break is pending — then every guard is looked at. A net under the counted
        // overflows, cast every few seconds: it reads every thread's `wchan` on the host (2 ms a
        // second here at once a second, more on a host of thousands of threads)
        let missed = broken.is_empty()
            && looked.elapsed() >= MISSED_BREAKS_EVERY
            && shared.holds.guarded() > 0
            && {
                looked = Instant::now();
                !rampart_sys::lease::waiting_breakers().is_empty()
            };
        if o != overflows || missed {
            overflows = o;
            broken.extend(shared.holds.breaking(None).into_iter().map(|d| (d, now)));
        }
        // each through its guard (a copy of its descriptor: the lease lasts until it is closed)
        let broken: Vec<Broken> = broken
            .into_iter()
            .filter_map(|((dev, ino), since)| {
                let fd = shared.holds.guard_fd(dev, ino)?;
                let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .unwrap_or_default();
                Some(Broken {
                    dev,
                    ino,
                    fd,
                    path,
                    since,
                })
            })
            .collect();
        if broken.is_empty() {
            continue;
        }
        let writers = name_writers(shared, &broken, &mut likely, &mut told);
        // before any lease goes: a writer that may be an attacker has its next opens seen (and
        // held while it is judged)
        let alert_now = match must_alert(shared, writers.as_deref(), &broken) {
            Alert::Now => true,
            Alert::No => false,
            // the writers wait on their leases meanwhile, as the permission side holds them
            Alert::UnlessJudgedClean => {
                let since = broken
                    .iter()
                    .map(|b| b.since)
                    .min()
                    .unwrap_or_else(Instant::now);
                // not judged in time counts as held back
                !judged_up_to(shared, since)
                    || held_back(shared, writers.as_deref().unwrap_or_default(), &broken)
            }
        };
        if alert_now {
            alert(shared);
        } else if let Some(writers) = &writers {
            for b in &broken {
                for keys in writers_of(writers, b) {
                    if loosen(shared, (b.dev, b.ino), keys) {
                        shared
                            .state
                            .lock()
                            .expect("state lock")
                            .loosened
                            .insert((b.dev, b.ino), (group_of(keys), b.path.clone()));
                    }
                }
            }
        }
        for b in broken {
            let of = writers_of(writers.as_deref().unwrap_or_default(), &b);
            let since = b.since;
            broke(shared, b, &of);
            shared
                .breaks_us
                .fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }
}

/// A document whose lease is being broken.
struct Broken {
    dev: u64,
    ino: u64,
    /// A copy of its guard's descriptor.
    fd: OwnedFd,
    path: PathBuf,
    /// When its break was read.
    since: Instant,
}

/// Whether a lease break makes every folder alert.
enum Alert {
    /// At once: a writer is held back (fresh evidence against it, or a verdict on it pending:
    /// its next opens must wait for their judgement), or it was not found.
    Now,
    /// Once what was changed before the break is judged, if that holds a writer back: a writer
    /// opens a document it has no original of while changes wait to be read or judged — an
    /// attacker's next document while its last one is not judged yet, or a script appending to
    /// one document after another (the bench's `rsync` workload). Made alert at once, every
    /// folder's opens were permission events for [`CALM_AFTER`] after each such break: 12,450 a
    /// round of that workload, a second `rsync` reading every document included (1.67–1.75×
    /// on a journaled ext4).
    UnlessJudgedClean,
    /// No: a known writer that is not held back, writing again a document whose original it
    /// has (a database written by one process after another), or writing a document while
    /// nothing waits to be judged.
    No,
}

/// Whether a lease break makes every folder alert (see [`Alert`]). A writer that does not is
/// left the document unguarded (held) until the next settle guards it again. Evidence long past
/// does not alert (a user's script that encrypted one file with `gpg` an hour ago): it still
/// counts towards a conviction, and new evidence alerts every folder by itself.
fn must_alert(shared: &Shared, writers: Option<&[Writer]>, broken: &[Broken]) -> Alert {
    let Some(writers) = writers else {
        return Alert::Now;
    };
    let unjudged =
        shared.backlog.load(Ordering::SeqCst) > 0 || rampart_sys::poll_readable(&shared.notify, 0);
    if held_back(shared, writers, broken) {
        return Alert::Now;
    }
    let state = shared.state.lock().expect("state lock");
    let new_document = broken.iter().any(|b| {
        writers_of(writers, b)
            .iter()
            .any(|keys| !state.has_original(group_of(keys), b.dev, b.ino, &b.path))
    });
    if new_document && unjudged {
        Alert::UnlessJudgedClean
    } else {
        Alert::No
    }
}

/// Whether any writer of the `broken` documents is held back now.
fn held_back(shared: &Shared, writers: &[Writer], broken: &[Broken]) -> bool {
    let state = shared.state.lock().expect("state lock");
    broken.iter().any(|b| {
        writers_of(writers, b)
            .iter()
            .any(|keys| state.held_back(keys, None))
    })
}

/// How long the lease side waits for the changes made before a break to be judged, at most
/// (then every folder is made alert, as if they had held the writer back).
const JUDGED_WITHIN: Duration = Duration::from_millis(250);

/// Waits until every change queued before `since` is read and judged (the reader is asked to
/// read now, and hands on even an empty queue while this waits). Returns whether it was within
/// [`JUDGED_WITHIN`].
fn judged_up_to(shared: &Shared, since: Instant) -> bool {
    let judged = || {
        shared
            .state
            .lock()
            .expect("state lock")
            .drained
            .is_some_and(|d| d >= since)
    };
    shared.lease_waiting.store(true, Ordering::SeqCst);
    rampart_sys::eventfd_post(&shared.read_now);
    let deadline = since + JUDGED_WITHIN;
    let mut done = judged();
    while !done && Instant::now() < deadline {
        // woken by the judge as each batch is judged
        if rampart_sys::poll_readable(&shared.lease_judged, 1) {
            rampart_sys::eventfd_take(&shared.lease_judged);
        }
        done = judged();
    }
    shared.lease_waiting.store(false, Ordering::SeqCst);
    done
}

/// The process group among `keys`.
fn group_of(keys: &[ActorKey]) -> u32 {
    keys.iter()
        .find_map(|k| match k {
            ActorKey::Group(g) => Some(*g),
            ActorKey::Program(_) => None,
        })
        .unwrap_or(0)
}

/// The processes most likely to break the next lease: the last writers, and their parents'
/// children (a loop that starts a program per document).
#[derive(Default)]
struct LikelyWriters {
    writers: std::collections::VecDeque<u32>,
    parents: std::collections::VecDeque<u32>,
}

impl LikelyWriters {
    const KEPT: usize = 4;

    fn wrote(&mut self, pid: u32, parent: u32) {
        for (list, p) in [(&mut self.writers, pid), (&mut self.parents, parent)] {
            if p > 1 && !list.contains(&p) {
                if list.len() == Self::KEPT {
                    list.pop_back();
                }
                list.push_front(p);
            }
        }
    }

    fn candidates(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.writers.iter().copied().collect();
        for parent in &self.parents {
            out.extend(rampart_sys::lease::children_of(*parent));
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A process waiting on a lease: its keys, and the document it waits for (none if that could
/// not be told — then it may be any of them).
struct Writer {
    keys: Vec<ActorKey>,
    doc: Option<(u64, u64)>,
}

/// The keys of the writers waiting on document `b`'s lease.
fn writers_of<'a>(writers: &'a [Writer], b: &Broken) -> Vec<&'a [ActorKey]> {
    writers
        .iter()
        .filter(|w| w.doc.is_none_or(|d| d == (b.dev, b.ino)))
        .map(|w| w.keys.as_slice())
        .collect()
}

/// Remembers who waits on the leases being broken (a process that writes one document and is
/// gone before its change is read is still known by the change), as the permission side does
/// for the openers it sees. Processes waiting on other leases (another program's, or another
/// monitor's in the same process) are left out: each writer's file is read from its system
/// call. The writer may not be waiting yet when the break is announced: a few looks, a
/// millisecond apart. Returns the writers that are not trusted, or none if no writer of these
/// documents was found waiting.
fn name_writers(
    shared: &Shared,
    broken: &[Broken],
    likely: &mut LikelyWriters,
    told: &mut Told,
) -> Option<Vec<Writer>> {
    let docs: Vec<(u64, u64)> = broken.iter().map(|b| (b.dev, b.ino)).collect();
    let all_found = |waiting: &[(u32, Option<(u64, u64)>)]| {
        docs.iter()
            .all(|d| waiting.iter().any(|(_, w)| *w == Some(*d)))
    };
    // named by the kernel as they began to wait: nothing to look for
    let announced = told.writers_of(&docs);
    if !announced.is_empty() && all_found(&announced) {
        return Some(named(shared, announced, likely));
    }
    let found = |w: Vec<(u32, (u64, u64))>| -> Vec<(u32, Option<(u64, u64)>)> {
        w.into_iter()
            .map(|(pid, doc)| (pid, Some(doc)))
            .chain(announced.iter().copied())
            .collect()
    };
    for _ in 0..5 {
        // most writers open from their main thread, and are found by its system call: first
        // among the likely ones (the last writers, and the processes their parents started
        // since — a shell loop's next program), a few reads; then among every process, a read
        // each; every thread's `wchan` (a kernel symbol lookup each: 0.4 ms on an idle
        // machine, most of the agent's time under ImageMagick converting one image per
        // process) only if a document's writer is still not found
        let mut waiting = found(rampart_sys::lease::opening_among(
            likely.candidates(),
            &docs,
        ));
        if !all_found(&waiting) {
            waiting = found(rampart_sys::lease::main_threads_opening(&docs));
        }
        if !all_found(&waiting) {
            waiting = rampart_sys::lease::waiting_breakers()
                .into_iter()
                .map(|(pid, tid)| (pid, rampart_sys::lease::breaking_file(pid, tid)))
                .filter(|(_, doc)| doc.is_none_or(|d| docs.contains(&d)))
                .collect();
        }
        if waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        return Some(named(shared, waiting, likely));
    }
    None
}

/// The writers `waiting` (process, and the document it waits for if known), as actors: the
/// agent's own and trusted programs left out; each remembered (its change may be read after
/// it is gone).
fn named(
    shared: &Shared,
    waiting: Vec<(u32, Option<(u64, u64)>)>,
    likely: &mut LikelyWriters,
) -> Vec<Writer> {
    let mut named = Vec::new();
    for (pid, doc) in waiting {
        if shared.spare.read().expect("spare lock").contains(&pid) {
            continue;
        }
        let Some(p) = crate::actor::process(pid) else {
            continue;
        };
        if super::is_trusted(shared, &p.program, pid) {
            continue;
        }
        likely.wrote(pid, p.ppid);
        let keys = p.keys();
        let mut state = shared.state.lock().expect("state lock");
        state.remember(pid, &keys);
        state.seen(&p);
        named.push(Writer { keys, doc });
    }
    named
}

/// What the kernel's lease tracepoints told of lately ([`crate::breakers`]): the writers of
/// each document, and the breaks handled from that alone, whose signal is still to come.
#[derive(Default)]
struct Told {
    /// Writers announced, by document: process, and when it was read.
    writers: HashMap<(u64, u64), Vec<(u32, Instant)>>,
    /// Guards' descriptors whose break was handled from its announcement: the signal of that
    /// break (one each) is passed over when it is read.
    handled: HashMap<i32, Instant>,
}

impl Told {
    /// How long what was told is kept: a writer not asked for by then broke no lease of ours
    /// (another program's lease), a signal not read by then is not coming.
    const KEPT: Duration = Duration::from_secs(1);

    fn learn(&mut self, announced: &[crate::breakers::Breaker], now: Instant) {
        for b in announced {
            let w = self.writers.entry(b.file).or_default();
            if !w.iter().any(|(pid, _)| *pid == b.pid) {
                w.push((b.pid, now));
            }
        }
        if !self.writers.is_empty() || !self.handled.is_empty() {
            self.writers.retain(|_, w| {
                w.retain(|(_, at)| now.duration_since(*at) < Self::KEPT);
                !w.is_empty()
            });
            self.handled
                .retain(|_, at| now.duration_since(*at) < Self::KEPT);
        }
    }

    /// The break of the lease held through `fd` is handled before its signal was read.
    fn handling(&mut self, fd: i32, now: Instant) {
        self.handled.insert(fd, now);
    }

    /// Whether the signal naming `fd` is that of a break handled already (then forgotten: the
    /// next signal naming it is another break's).
    fn signalled(&mut self, fd: i32) -> bool {
        self.handled.remove(&fd).is_some()
    }

    /// The writers announced for `docs` (taken: each break is named once).
    fn writers_of(&mut self, docs: &[(u64, u64)]) -> Vec<(u32, Option<(u64, u64)>)> {
        docs.iter()
            .flat_map(|d| {
                self.writers
                    .remove(d)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |(pid, _)| (pid, Some(*d)))
            })
            .collect()
    }
}

/// The lease on document `b` is being broken by `writers`: its content is kept, unless every
/// writer has its original already, and the lease let go.
fn broke(shared: &Shared, b: Broken, writers: &[&[ActorKey]]) {
    let Broken {
        dev, ino, fd, path, ..
    } = b;
    tracing::debug!(dev, ino, "ransomware: lease broken");
    shared.breaks.fetch_add(1, Ordering::Relaxed);
    let born = rampart_sys::birth_time(fd.as_fd());
    let kept_before = {
        let mut state = shared.state.lock().expect("state lock");
        state.renew(dev, ino, born);
        !writers.is_empty()
            && writers
                .iter()
                .all(|keys| state.has_original(group_of(keys), dev, ino, &path))
    };
    if kept_before {
        drop(fd);
        shared.holds.unguard(dev, ino);
        return;
    }
    let size = rampart_sys::fstat(fd.as_fd()).map(|m| m.len()).unwrap_or(0);
    let kept = shared.vault.keep(fd.as_fd(), &path, size);
    drop(fd);
    // written down before the writer goes on: its close may be judged at once
    match kept {
        Ok(kept) => {
            let mut unclaimed = shared.unclaimed.lock().expect("unclaimed lock");
            let now = Instant::now();
            unclaimed.retain(|_, u| now.duration_since(u.at) < UNCLAIMED_FOR);
            unclaimed.insert(
                (dev, ino),
                Unclaimed {
                    path,
                    kept,
                    at: now,
                },
            );
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "could not keep a document before it changes");
        }
    }
    shared.holds.unguard(dev, ino);
}
