//! Programs blocked on this host, by content: a convicted program's file (its executable, or the
//! script an interpreter ran) is refused at open by inode, and any copy of it — another path,
//! another inode, the same bytes — is recognised here when it starts.
//!
//! Every exec on the host is announced (the proc connector); what runs is looked up by size
//! first, so only a file of a blocked program's exact size is ever hashed, and each file is
//! hashed once (verdicts are kept by device, inode, change time and size). The agent keeps the
//! list across restarts (in its incident records).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rampart_protocol::ransomware::BlockedFile;

/// Verdicts kept at most before they are forgotten (all at once: they are cheap to make again).
const VERDICTS: usize = 4096;

/// The blocked programs, and what was found of the files that ran.
#[derive(Debug, Default)]
pub struct Blocklist {
    by_size: HashMap<u64, Vec<BlockedFile>>,
    /// (dev, ino, ctime ns, size) → the blocked program it is a copy of, if any.
    verdicts: HashMap<(u64, u64, i64, u64), Option<BlockedFile>>,
}

impl Blocklist {
    /// Adds a blocked program (once per content).
    pub fn add(&mut self, file: BlockedFile) {
        let same = self.by_size.entry(file.size).or_default();
        if !same.iter().any(|f| f.sha256 == file.sha256) {
            same.push(file);
            // a file judged harmless before may be a copy of this one
            self.verdicts.clear();
        }
    }

    /// Whether nothing is blocked (then no exec needs a look).
    pub fn is_empty(&self) -> bool {
        self.by_size.is_empty()
    }

    /// Every blocked program.
    pub fn all(&self) -> Vec<BlockedFile> {
        self.by_size.values().flatten().cloned().collect()
    }

    /// What is known of the file at `path` without reading it (`path` may be `/proc/PID/exe`:
    /// what a process runs, even deleted or renamed since).
    pub fn known(&self, path: &Path) -> Known {
        let Ok(m) = std::fs::metadata(path) else {
            return Known::NotBlocked;
        };
        if !self.by_size.contains_key(&m.len()) {
            return Known::NotBlocked;
        }
        match self.verdicts.get(&id(&m)) {
            Some(Some(b)) => Known::CopyOf(b.clone()),
            Some(None) => Known::NotBlocked,
            None => Known::Unread,
        }
    }

    /// The blocked program the file at `path` is a copy of, reading it if need be.
    pub fn copy_of(&mut self, path: &Path) -> Option<BlockedFile> {
        let m = std::fs::metadata(path).ok()?;
        let same = self.by_size.get(&m.len())?;
        let id = id(&m);
        if let Some(v) = self.verdicts.get(&id) {
            return v.clone();
        }
        let sha256 = crate::monitor::sha256_of(path)?;
        let found = same.iter().find(|f| f.sha256 == sha256).cloned();
        if self.verdicts.len() >= VERDICTS {
            self.verdicts.clear();
        }
        self.verdicts.insert(id, found.clone());
        found
    }
}

/// What [`Blocklist::known`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Not a blocked program (its size is none of theirs, or its content was read before).
    NotBlocked,
    /// A copy of this blocked program (read before).
    CopyOf(BlockedFile),
    /// Of a blocked program's size, not read yet.
    Unread,
}

fn id(m: &std::fs::Metadata) -> (u64, u64, i64, u64) {
    (
        m.dev(),
        m.ino(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        m.len(),
    )
}

/// The file at `path` as a blocked program.
pub fn blocked_file(path: &Path) -> Option<BlockedFile> {
    let size = std::fs::metadata(path).ok()?.len();
    Some(BlockedFile {
        path: path.display().to_string(),
        sha256: crate::monitor::sha256_of(path)?,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_found_and_another_file_of_the_same_size_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("locker");
        std::fs::write(&tool, b"\x7fELF the locker's code").unwrap();
        let mut list = Blocklist::default();
        assert!(list.is_empty());
        list.add(blocked_file(&tool).unwrap());
        list.add(blocked_file(&tool).unwrap());
        assert_eq!(list.all().len(), 1);

        let copy = dir.path().join("renamed-copy");
        std::fs::copy(&tool, &copy).unwrap();
        assert_eq!(list.known(&copy), Known::Unread);
        assert_eq!(
            list.copy_of(&copy).unwrap().path,
            tool.display().to_string()
        );
        assert!(matches!(list.known(&copy), Known::CopyOf(_)));
        // the same size, other bytes
        let other = dir.path().join("other");
        std::fs::write(&other, b"\x7fELF the editor's code").unwrap();
        assert_eq!(list.copy_of(&other), None);
        assert_eq!(list.known(&other), Known::NotBlocked);
        // another size: not even read
        std::fs::write(&other, b"short").unwrap();
        assert_eq!(list.known(&other), Known::NotBlocked);
        assert_eq!(list.copy_of(&other), None);
        assert_eq!(list.copy_of(&dir.path().join("gone")), None);
    }

    #[test]
    fn a_file_changed_into_a_copy_is_judged_again() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("locker");
        std::fs::write(&tool, b"AAAA").unwrap();
        let mut list = Blocklist::default();
        list.add(blocked_file(&tool).unwrap());
        let other = dir.path().join("other");
        std::fs::write(&other, b"BBBB").unwrap();
        assert_eq!(list.copy_of(&other), None);
        // rewritten in place (same inode, same size): its change time moves on
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&other, b"AAAA").unwrap();
        assert!(list.copy_of(&other).is_some());
    }
}
