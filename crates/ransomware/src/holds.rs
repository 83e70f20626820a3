//! Holds: open descriptors on documents an untrusted process is working near, so that deleting
//! them, or renaming something over them, loses nothing — the inode lives on while a descriptor
//! is open, and its content can be read back through `/proc/self/fd`.
//!
//! A hold is taken when an untrusted process opens a document (the permission event's own
//! descriptor is kept), and for every document of a folder when such a process lists it (an
//! `O_PATH` descriptor, which costs no permission event and no link: hard links would make tools
//! that refuse files with several links, gzip among them, skip documents). Holds last a minute
//! after the last such access, longer while an incident needs them.
//!
//! Guards are holds of another kind: a descriptor on every document, open for reading, with a
//! read lease on it ([`rampart_sys::lease`]). They last as long as the document is one; while
//! its folder is calm (see the monitor) they are what keeps its original before it changes:
//! an open for writing waits on the lease until the agent has the content.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a hold lasts after the last access that asked for it.
pub const HOLD_FOR: Duration = Duration::from_secs(60);

struct Hold {
    fd: OwnedFd,
    until: Instant,
    pinned: bool,
}

struct Guard {
    fd: OwnedFd,
    pinned: bool,
}

#[derive(Default)]
struct Guards {
    by_inode: HashMap<(u64, u64), Guard>,
    by_fd: HashMap<i32, (u64, u64)>,
}

/// The holds, by (device, inode), at most [`Holds::max`] of them: each is a descriptor, and a
/// process out of descriptors cannot read its fanotify events (which would leave every opener
/// of a guarded file waiting).
pub struct Holds {
    held: Mutex<HashMap<(u64, u64), Hold>>,
    max: usize,
    /// Holds let go, closed by [`Holds::close_released`]: the last descriptor of a deleted
    /// document frees its inode, work the filesystem does in the closing thread — which must not
    /// be the one answering openers.
    released: Mutex<Vec<OwnedFd>>,
    guards: Mutex<Guards>,
    /// At most this many guards (each a descriptor).
    guard_max: usize,
    /// Whether running out of guards was logged (once: a settle tries every unguarded document
    /// again).
    out_of_guards: std::sync::atomic::AtomicBool,
}

/// How long an empty file is taken to be possibly still being made. Its maker's open is not
/// done when the file appears (the kernel makes the file, announces it, then opens it — and
/// breaks any lease at that open): a lease taken in between makes a non-blocking open fail with
/// `EAGAIN`, and GNU tar opens every file it extracts `O_NONBLOCK` (the bench's `tar -x` of its
/// corpus failed so once, its file guarded by the judge as its creation was read). An empty
/// file has nothing to keep; it is guarded at a later settle.
pub const BEING_MADE_FOR: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether the file open as `fd`, `len` bytes long, may still be being made: empty, and born
/// within [`BEING_MADE_FOR`] (where the filesystem records birth times; elsewhere an empty file
/// is guarded as any other).
fn being_made(fd: std::os::fd::BorrowedFd<'_>, len: u64) -> bool {
    if len != 0 {
        return false;
    }
    let Some((secs, nanos)) = rampart_sys::birth_time(fd) else {
        return false;
    };
    let born = std::time::UNIX_EPOCH + std::time::Duration::new(secs.max(0) as u64, nanos);
    // a birth in the future (a clock set back) counts as just now
    std::time::SystemTime::now()
        .duration_since(born)
        .map_or(true, |age| age < BEING_MADE_FOR)
}

/// How many let-go descriptors may wait to be closed off the openers' way.
const RELEASED_AT_MOST: usize = 1024;

impl Default for Holds {
    fn default() -> Self {
        Holds::new()
    }
}

impl Holds {
    /// No holds. Of this process's descriptors, 8,192 are left for everything else — the
    /// permission events being answered or held (a batch is read at once), listings, the vault:
    /// a permission event the agent cannot take a descriptor for is refused by the kernel, so
    /// the opener gets `EPERM` — a quarter of the rest (at most 65,536) may be holds, and what
    /// remains guards.
    pub fn new() -> Holds {
        let usable = rampart_sys::open_files_limit().saturating_sub(8192);
        let max = (usable / 4).clamp(256, 1 << 16);
        let mut holds = Holds::with_max(max as usize);
        holds.guard_max = usable.saturating_sub(max) as usize;
        holds
    }

    /// No holds; at most `max` at once (and as many guards).
    pub fn with_max(max: usize) -> Holds {
        Holds {
            held: Mutex::new(HashMap::new()),
            max,
            released: Mutex::new(Vec::new()),
            guards: Mutex::new(Guards::default()),
            guard_max: max,
            out_of_guards: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Guards the document at `path`: a descriptor open for reading with a read lease on it.
    /// Returns its (device, inode), or why not (`EAGAIN`: it is open for writing now, or may be
    /// being made — see [`BEING_MADE_FOR`]; `EMFILE`: no guard left).
    pub fn guard(&self, path: &Path) -> std::io::Result<(u64, u64)> {
        self.bound_released();
        // no open past the budget (documents beyond it are tried again and again)
        if self.guards.lock().expect("guards lock").by_inode.len() >= self.guard_max {
            return Err(self.out_of_guards());
        }
        let fd = rampart_sys::lease::open_for_lease(path)?;
        let m = rampart_sys::fstat(fd.as_fd())?;
        self.guard_opened(fd, &m)
    }

    /// [`Holds::guard`] of a document already open (`fd`, from
    /// [`rampart_sys::lease::open_for_lease`]) whose status is `m`.
    pub fn guard_opened(&self, fd: OwnedFd, m: &rampart_sys::Stat) -> std::io::Result<(u64, u64)> {
        self.bound_released();
        if !m.is_file() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        if being_made(fd.as_fd(), m.len()) {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let key = (m.dev(), m.ino());
        let mut guards = self.guards.lock().expect("guards lock");
        if guards.by_inode.contains_key(&key) {
            return Ok(key);
        }
        if guards.by_inode.len() >= self.guard_max {
            drop(guards);
            return Err(self.out_of_guards());
        }
        rampart_sys::lease::take_read_lease(fd.as_fd())?;
        guards.by_fd.insert(fd.as_raw_fd(), key);
        // a plain hold on it is not needed any more
        let pinned = match self.held.lock().expect("holds lock").remove(&key) {
            Some(h) => {
                self.released.lock().expect("holds lock").push(h.fd);
                h.pinned
            }
            None => false,
        };
        guards.by_inode.insert(key, Guard { fd, pinned });
        Ok(key)
    }

    /// `EMFILE`, the first time logged: the documents past the budget leave their folders alert
    /// (every open in them a permission event, 46–64 µs each). The bench met it on this VM,
    /// whose hard limit of 20,000 descriptors root may not raise (12,250 documents, 8,856
    /// guards); the systemd unit raises the limit to 1,048,576.
    fn out_of_guards(&self) -> std::io::Error {
        if !self
            .out_of_guards
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                guards = self.guard_max,
                open_files_limit = rampart_sys::open_files_limit(),
                "ransomware: no descriptor left to guard more documents; the folders of the others stay alert (each open in them waits for the agent). Raise the agent's limit of open files (LimitNOFILE)"
            );
        }
        std::io::Error::from_raw_os_error(libc::EMFILE)
    }

    /// Whether (`dev`, `ino`) is guarded.
    pub fn is_guarded(&self, dev: u64, ino: u64) -> bool {
        self.guards
            .lock()
            .expect("guards lock")
            .by_inode
            .contains_key(&(dev, ino))
    }

    /// The guards whose descriptor is one of `fds` (their leases are being broken), or every
    /// guard whose lease is being broken when `fds` is `None`.
    pub fn breaking(&self, fds: Option<&[i32]>) -> Vec<(u64, u64)> {
        let guards = self.guards.lock().expect("guards lock");
        match fds {
            // a descriptor named by a signal may be another guard's since (a break handled as
            // the kernel announced it, its guard let go and its number taken again)
            Some(fds) => fds
                .iter()
                .filter_map(|fd| guards.by_fd.get(fd).copied())
                .filter(|k| {
                    guards
                        .by_inode
                        .get(k)
                        .is_some_and(|g| rampart_sys::lease::lease_is_breaking(g.fd.as_fd()))
                })
                .collect(),
            None => guards
                .by_inode
                .iter()
                .filter(|(_, g)| rampart_sys::lease::lease_is_breaking(g.fd.as_fd()))
                .map(|(k, _)| *k)
                .collect(),
        }
    }

    /// The descriptor of the guard of (`dev`, `ino`), if its lease is being broken now.
    pub fn breaking_guard(&self, dev: u64, ino: u64) -> Option<i32> {
        let guards = self.guards.lock().expect("guards lock");
        guards
            .by_inode
            .get(&(dev, ino))
            .filter(|g| rampart_sys::lease::lease_is_breaking(g.fd.as_fd()))
            .map(|g| g.fd.as_raw_fd())
    }

    /// A copy of the guard's descriptor (to read the document through it; the lease ends only
    /// once every copy is closed).
    pub fn guard_fd(&self, dev: u64, ino: u64) -> Option<OwnedFd> {
        let guards = self.guards.lock().expect("guards lock");
        guards
            .by_inode
            .get(&(dev, ino))
            .and_then(|g| g.fd.try_clone().ok())
    }

    /// Lets the lease on (`dev`, `ino`) go at once (the writer waiting on it goes on), keeping
    /// the inode held an ordinary way. Returns whether it was guarded.
    pub fn unguard(&self, dev: u64, ino: u64) -> bool {
        let Some(g) = self.take_guard(dev, ino) else {
            return false;
        };
        // the lease let go, the descriptor kept as the hold (a writer waits on the lease until
        // then: one system call, not an open and a close)
        if rampart_sys::lease::let_go(g.fd.as_fd()).is_ok() {
            self.hold_again(dev, ino, g.fd, g.pinned);
            return true;
        }
        if let Ok(fd) = rampart_sys::reopen_path(g.fd.as_fd()) {
            self.hold_again(dev, ino, fd, g.pinned);
        }
        // closing the descriptor ends the lease
        drop(g.fd);
        true
    }

    /// The document guarded as (`dev`, `ino`) is gone from its place (deleted, or replaced by
    /// another file): its guard becomes an ordinary hold.
    pub fn guard_to_hold(&self, dev: u64, ino: u64) {
        if let Some(g) = self.take_guard(dev, ino) {
            self.hold_again(dev, ino, g.fd, g.pinned);
        }
    }

    /// The document guarded as (`dev`, `ino`) is gone, and nothing needs it: its guard is let
    /// go (closed off the openers' way, like released holds).
    pub fn drop_guard(&self, dev: u64, ino: u64) {
        self.bound_released();
        if let Some(g) = self.take_guard(dev, ino) {
            if g.pinned {
                self.hold_again(dev, ino, g.fd, true);
            } else {
                self.released.lock().expect("holds lock").push(g.fd);
            }
        }
    }

    /// Holds (`dev`, `ino`) through `fd`, pinned as its guard was.
    fn hold_again(&self, dev: u64, ino: u64, fd: OwnedFd, pinned: bool) {
        self.keep(dev, ino, fd);
        if pinned {
            self.pin(dev, ino);
        }
    }

    fn take_guard(&self, dev: u64, ino: u64) -> Option<Guard> {
        let mut guards = self.guards.lock().expect("guards lock");
        let g = guards.by_inode.remove(&(dev, ino))?;
        guards.by_fd.remove(&g.fd.as_raw_fd());
        Some(g)
    }

    /// The descriptors of the guards of `keys`.
    pub fn fds_of(&self, keys: &[(u64, u64)]) -> std::collections::HashSet<i32> {
        let guards = self.guards.lock().expect("guards lock");
        keys.iter()
            .filter_map(|k| guards.by_inode.get(k).map(|g| g.fd.as_raw_fd()))
            .collect()
    }

    /// How many documents are guarded.
    pub fn guarded(&self) -> usize {
        self.guards.lock().expect("guards lock").by_inode.len()
    }

    /// How many holds there may be at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Holds inode (`dev`, `ino`) through a duplicate of `fd` — or extends the hold it has,
    /// without duplicating (an open of a held document costs no descriptor).
    pub fn keep_from(&self, dev: u64, ino: u64, fd: BorrowedFd<'_>) {
        if let Some(h) = self.held.lock().expect("holds lock").get_mut(&(dev, ino)) {
            h.until = h.until.max(Instant::now() + HOLD_FOR);
            return;
        }
        if let Ok(dup) = fd.try_clone_to_owned() {
            self.keep(dev, ino, dup);
        }
    }

    /// Holds inode (`dev`, `ino`) through `fd` (or extends the hold it has). At the limit, the
    /// expired holds go, and if that is not enough an eighth of the rest, those closest to their
    /// end that no incident needs (at once, so that a host with more documents than holds pays
    /// for the sorting once per thousands of opens, not on each); if every hold is needed, the
    /// new one is not taken. (A guarded inode needs no hold: callers look first.)
    pub fn keep(&self, dev: u64, ino: u64, fd: OwnedFd) {
        self.bound_released();
        let now = Instant::now();
        let until = now + HOLD_FOR;
        let mut held = self.held.lock().expect("holds lock");
        if held.len() >= self.max && !held.contains_key(&(dev, ino)) {
            self.release_expired(&mut held, now);
            if held.len() >= self.max {
                let mut free: Vec<((u64, u64), Instant)> = held
                    .iter()
                    .filter(|(_, h)| !h.pinned)
                    .map(|(k, h)| (*k, h.until))
                    .collect();
                if free.is_empty() {
                    return;
                }
                free.sort_unstable_by_key(|(_, until)| *until);
                let mut released = self.released.lock().expect("holds lock");
                for (k, _) in free.iter().take((self.max / 8).clamp(1, RELEASED_AT_MOST)) {
                    if let Some(h) = held.remove(k) {
                        released.push(h.fd);
                    }
                }
            }
        }
        match held.get_mut(&(dev, ino)) {
            Some(h) => h.until = h.until.max(until),
            None => {
                held.insert(
                    (dev, ino),
                    Hold {
                        fd,
                        until,
                        pinned: false,
                    },
                );
            }
        }
    }

    /// Holds the document at `path` (an `O_PATH` descriptor). Returns its (device, inode).
    pub fn hold_path(&self, path: &Path) -> Option<(u64, u64)> {
        {
            // already held: extend
            let m = std::fs::symlink_metadata(path).ok()?;
            let key = (m.dev(), m.ino());
            if self.is_guarded(key.0, key.1) {
                return Some(key);
            }
            let mut held = self.held.lock().expect("holds lock");
            if let Some(h) = held.get_mut(&key) {
                h.until = h.until.max(Instant::now() + HOLD_FOR);
                return Some(key);
            }
        }
        let fd = rampart_sys::open_path(path).ok()?;
        let m = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        self.keep(m.dev(), m.ino(), fd);
        Some((m.dev(), m.ino()))
    }

    /// Keeps the hold on (`dev`, `ino`) until [`Holds::unpin`] (an incident needs it).
    pub fn pin(&self, dev: u64, ino: u64) -> bool {
        self.set_pinned(dev, ino, true)
    }

    /// Lets a pinned hold expire again.
    pub fn unpin(&self, dev: u64, ino: u64) {
        self.set_pinned(dev, ino, false);
    }

    /// Marks the guard or the hold on (`dev`, `ino`) pinned or not; whether there is one.
    fn set_pinned(&self, dev: u64, ino: u64, pinned: bool) -> bool {
        if let Some(g) = self
            .guards
            .lock()
            .expect("guards lock")
            .by_inode
            .get_mut(&(dev, ino))
        {
            g.pinned = pinned;
            return true;
        }
        match self.held.lock().expect("holds lock").get_mut(&(dev, ino)) {
            Some(h) => {
                h.pinned = pinned;
                true
            }
            None => false,
        }
    }

    /// A path through which the held inode's content can be read (also once it is deleted).
    pub fn reader(&self, dev: u64, ino: u64) -> Option<PathBuf> {
        if let Some(g) = self
            .guards
            .lock()
            .expect("guards lock")
            .by_inode
            .get(&(dev, ino))
        {
            return Some(PathBuf::from(format!("/proc/self/fd/{}", g.fd.as_raw_fd())));
        }
        self.held
            .lock()
            .expect("holds lock")
            .get(&(dev, ino))
            .map(|h| PathBuf::from(format!("/proc/self/fd/{}", h.fd.as_raw_fd())))
    }

    /// Closes holds whose time is up. Returns how many are left.
    pub fn expire(&self, now: Instant) -> usize {
        let mut held = self.held.lock().expect("holds lock");
        self.release_expired(&mut held, now);
        held.len()
    }

    fn release_expired(&self, held: &mut HashMap<(u64, u64), Hold>, now: Instant) {
        let gone: Vec<(u64, u64)> = held
            .iter()
            .filter(|(_, h)| !h.pinned && h.until <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut released = self.released.lock().expect("holds lock");
        for k in gone {
            if let Some(h) = held.remove(&k) {
                released.push(h.fd);
            }
        }
    }

    /// Closes the released descriptors here and now once more than [`RELEASED_AT_MOST`] wait:
    /// a burst of evictions (a folder walk at the hold limit) must not take the descriptors
    /// the kernel needs for permission events — without one it refuses the opener itself.
    fn bound_released(&self) {
        let over = {
            let mut r = self.released.lock().expect("holds lock");
            if r.len() > RELEASED_AT_MOST {
                std::mem::take(&mut *r)
            } else {
                Vec::new()
            }
        };
        drop(over);
    }

    /// Closes the descriptors of holds let go since the last call. Returns how many.
    pub fn close_released(&self) -> usize {
        let released = std::mem::take(&mut *self.released.lock().expect("holds lock"));
        released.len()
    }

    /// How many inodes are held.
    pub fn len(&self) -> usize {
        self.held.lock().expect("holds lock").len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty file just made may still be being opened by its maker: no lease on it yet (a
    /// non-blocking open of its maker would fail); once it has content, or is old enough, it is
    /// guarded.
    #[test]
    fn an_empty_file_just_made_is_not_guarded_yet() {
        let dir = tempfile::tempdir().unwrap();
        let holds = Holds::with_max(8);
        let empty = dir.path().join("new.txt");
        std::fs::write(&empty, b"").unwrap();
        let Some(_) = rampart_sys::birth_time(std::fs::File::open(&empty).unwrap().as_fd()) else {
            eprintln!("skipped: this filesystem records no birth times");
            return;
        };
        assert_eq!(
            holds.guard(&empty).map_err(|e| e.raw_os_error()),
            Err(Some(libc::EAGAIN))
        );
        let written = dir.path().join("written.txt");
        std::fs::write(&written, b"content").unwrap();
        assert!(
            holds.guard(&written).is_ok(),
            "a file with content is guarded"
        );
        std::thread::sleep(BEING_MADE_FOR);
        assert!(
            holds.guard(&empty).is_ok(),
            "an empty file made a while ago is guarded"
        );
    }

    #[test]
    fn holds_stay_within_their_limit_and_pinned_ones_are_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let holds = Holds::with_max(4);
        let docs: Vec<PathBuf> = (0..6)
            .map(|i| {
                let p = dir.path().join(format!("doc-{i}.txt"));
                std::fs::write(&p, format!("document {i}")).unwrap();
                p
            })
            .collect();
        let keys: Vec<(u64, u64)> = docs[..4]
            .iter()
            .map(|d| holds.hold_path(d).unwrap())
            .collect();
        assert!(holds.pin(keys[0].0, keys[0].1));
        for d in &docs[4..] {
            holds.hold_path(d);
        }
        assert_eq!(holds.len(), 4, "never more than the limit");
        assert!(
            holds.reader(keys[0].0, keys[0].1).is_some(),
            "a pinned hold stays"
        );
        assert!(
            holds.reader(keys[1].0, keys[1].1).is_none(),
            "the oldest unpinned made room"
        );
        // every hold pinned: a new one is not taken
        let all = Holds::with_max(1);
        let k = all.hold_path(&docs[0]).unwrap();
        all.pin(k.0, k.1);
        all.hold_path(&docs[1]);
        assert_eq!(all.len(), 1);
        assert!(all.reader(k.0, k.1).is_some());
    }

    #[test]
    fn a_held_document_outlives_its_deletion_and_holds_expire() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("report.txt");
        std::fs::write(&doc, b"the original").unwrap();
        let holds = Holds::new();
        let (dev, ino) = holds.hold_path(&doc).unwrap();
        assert_eq!(holds.hold_path(&doc), Some((dev, ino)), "held once");
        assert_eq!(
            std::fs::metadata(&doc).unwrap().nlink(),
            1,
            "no link is added"
        );
        std::fs::remove_file(&doc).unwrap();
        let reader = holds.reader(dev, ino).unwrap();
        assert_eq!(std::fs::read(&reader).unwrap(), b"the original");
        assert!(holds.pin(dev, ino));
        assert_eq!(
            holds.expire(Instant::now() + 2 * HOLD_FOR),
            1,
            "pinned stays"
        );
        holds.unpin(dev, ino);
        assert_eq!(holds.expire(Instant::now() + 2 * HOLD_FOR), 0);
        assert!(holds.reader(dev, ino).is_none());
    }
}
