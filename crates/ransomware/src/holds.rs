//! Holds: open descriptors on documents an untrusted process is working near, so that deleting
//! them, or renaming something over them, loses nothing — the inode lives on while a descriptor
//! is open, and its content can be read back through `/proc/self/fd`.
//!
//! A hold is taken when an untrusted process opens a document (the permission event's own
//! descriptor is kept), and for every document of a folder when such a process lists it (an
//! `O_PATH` descriptor, which costs no permission event and no link: hard links would make tools
//! that refuse files with several links, gzip among them, skip documents). Holds last a minute
//! after the last such access, longer while an incident needs them.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
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
}

impl Default for Holds {
    fn default() -> Self {
        Holds::new()
    }
}

impl Holds {
    /// No holds; at most half of this process's descriptors (and 65,536) will be used for them.
    pub fn new() -> Holds {
        let limit = rampart_sys::open_files_limit() / 2;
        Holds::with_max(limit.clamp(256, 1 << 16) as usize)
    }

    /// No holds; at most `max` at once.
    pub fn with_max(max: usize) -> Holds {
        Holds {
            held: Mutex::new(HashMap::new()),
            max,
            released: Mutex::new(Vec::new()),
        }
    }

    /// How many holds there may be at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Holds inode (`dev`, `ino`) through `fd` (or extends the hold it has). At the limit, the
    /// expired holds go, and if that is not enough an eighth of the rest, those closest to their
    /// end that no incident needs (at once, so that a host with more documents than holds pays
    /// for the sorting once per thousands of opens, not on each); if every hold is needed, the
    /// new one is not taken.
    pub fn keep(&self, dev: u64, ino: u64, fd: OwnedFd) {
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
                for (k, _) in free.iter().take((self.max / 8).max(1)) {
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
        match self.held.lock().expect("holds lock").get_mut(&(dev, ino)) {
            Some(h) => {
                h.pinned = true;
                true
            }
            None => false,
        }
    }

    /// Lets a pinned hold expire again.
    pub fn unpin(&self, dev: u64, ino: u64) {
        if let Some(h) = self.held.lock().expect("holds lock").get_mut(&(dev, ino)) {
            h.pinned = false;
        }
    }

    /// A path through which the held inode's content can be read (also once it is deleted).
    pub fn reader(&self, dev: u64, ino: u64) -> Option<PathBuf> {
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
