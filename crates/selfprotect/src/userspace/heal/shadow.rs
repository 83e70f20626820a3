//! A protected folder's shadow: what every entry in it must be (inode, mode, owner, times,
//! extended attributes), and a hard link to every file, kept in a sibling folder
//! (`.NAME.rampart-shadow`) that carries the immutable attribute. While the shadow holds a
//! link, deleting or renaming a file away loses nothing: the same inode is linked back, so even
//! a database the agent has open goes on where it was.
//!
//! The shadow is written only by the protected process (the folder's immutable attribute is
//! lifted for the moment of each change) and removed by an authorized unload; one found at
//! start means the previous run ended without one, and the folder is first brought back to it.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys;

/// What kind of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A folder (restored by creating it, its entries by their own records).
    Dir,
    /// Anything else: a file, a socket, a symbolic link (restored from its link).
    File,
}

/// What a protected entry must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Folder or not.
    pub kind: Kind,
    /// Whether it is a socket (a process recreates its own socket at start).
    #[serde(default)]
    pub socket: bool,
    /// Inode number (on the folder's filesystem).
    pub ino: u64,
    /// Mode bits, file type included.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Extended attributes, names and values in hex.
    pub xattrs: Vec<(String, String)>,
}

impl Entry {
    fn of(path: &Path) -> std::io::Result<Entry> {
        let m = std::fs::symlink_metadata(path)?;
        use std::os::unix::fs::FileTypeExt;
        let xattrs = sys::xattrs(path)
            .unwrap_or_default()
            .into_iter()
            .map(|(n, v)| (hex::encode(n), hex::encode(v)))
            .collect();
        Ok(Entry {
            kind: if m.is_dir() { Kind::Dir } else { Kind::File },
            socket: m.file_type().is_socket(),
            ino: m.ino(),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
            xattrs,
        })
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// It was gone and is back (the same inode, linked again; a folder created again).
    Relinked,
    /// Something else stood at its place and was replaced by the original.
    Replaced,
    /// Its mode, owner, times or extended attributes were put back.
    Metadata,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    entries: BTreeMap<String, Entry>,
}

/// One protected folder and its shadow.
#[derive(Debug)]
pub struct Shadow {
    /// The protected folder.
    pub tree: PathBuf,
    /// The shadow folder.
    pub dir: PathBuf,
    /// Entries by path relative to the tree (`""` is the tree itself).
    pub entries: BTreeMap<String, Entry>,
}

const MANIFEST: &str = "manifest.json";

/// A relative path as a name in the shadow folder.
fn link_name(rel: &str) -> String {
    format!("f.{}", rel.replace('%', "%25").replace('/', "%2F"))
}

impl Shadow {
    /// Where the shadow of `tree` lives: beside it, on the same filesystem.
    pub fn dir_of(tree: &Path) -> PathBuf {
        let name = tree
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        tree.with_file_name(format!(".{name}.rampart-shadow"))
    }

    /// The shadow of `tree` a previous run left, if any.
    pub fn open(tree: &Path) -> Option<Shadow> {
        let dir = Self::dir_of(tree);
        let text = std::fs::read(dir.join(MANIFEST)).ok()?;
        let manifest: Manifest = serde_json::from_slice(&text).ok()?;
        Some(Shadow {
            tree: tree.to_path_buf(),
            dir,
            entries: manifest.entries,
        })
    }

    /// A fresh shadow of `tree` as it is now (replacing any older one).
    pub fn snapshot(tree: &Path) -> std::io::Result<Shadow> {
        let dir = Self::dir_of(tree);
        if dir.exists() {
            let _ = sys::set_immutable(&dir, false);
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let mut s = Shadow {
            tree: tree.to_path_buf(),
            dir,
            entries: BTreeMap::new(),
        };
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let path = s.path(&rel);
            s.record(&rel)?;
            if std::fs::symlink_metadata(&path)?.is_dir() {
                for e in std::fs::read_dir(&path)? {
                    let name = e?.file_name().to_string_lossy().into_owned();
                    stack.push(if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    });
                }
            }
        }
        s.save()?;
        Ok(s)
    }

    /// The absolute path of `rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.tree.clone()
        } else {
            self.tree.join(rel)
        }
    }

    /// `path` relative to the tree, if it is in it.
    pub fn rel_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.tree).ok()?;
        Some(rel.to_string_lossy().into_owned())
    }

    /// Runs `f` with the shadow folder writable (its immutable attribute lifted).
    fn writable<T>(&self, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        let _ = sys::set_immutable(&self.dir, false);
        let r = f();
        let sealed = sys::set_immutable(&self.dir, true);
        let r = r?;
        sealed?;
        Ok(r)
    }

    /// Records `rel` as it is now (a change by the protected process itself); its link in the
    /// shadow now points at the current inode.
    pub fn record(&mut self, rel: &str) -> std::io::Result<()> {
        let path = self.path(rel);
        let is_dir = match std::fs::symlink_metadata(&path) {
            Ok(m) => m.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(rel);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match self.link_and_note(rel, &path, is_dir) {
            // gone since (a temporary of the process itself, renamed a moment later)
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => {
                self.forget(rel);
                Ok(())
            }
            other => other,
        }
    }

    fn link_and_note(&mut self, rel: &str, path: &Path, is_dir: bool) -> std::io::Result<()> {
        let link = self.dir.join(link_name(rel));
        let linked = std::fs::symlink_metadata(&link)
            .ok()
            .zip(std::fs::symlink_metadata(path).ok())
            .is_some_and(|(l, p)| l.ino() == p.ino());
        if !is_dir && !linked {
            let tmp = self.dir.join(".new");
            self.writable(|| {
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(path, &tmp)?;
                std::fs::rename(&tmp, &link)
            })?;
        }
        let entry = Entry::of(path)?;
        self.entries.insert(rel.to_owned(), entry);
        Ok(())
    }

    /// Forgets `rel` and everything below it (removed by the protected process itself).
    pub fn forget(&mut self, rel: &str) {
        let below = format!("{rel}/");
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|k| k.as_str() == rel || k.starts_with(&below))
            .cloned()
            .collect();
        for k in gone {
            self.entries.remove(&k);
            let link = self.dir.join(link_name(&k));
            let _ = self.writable(|| std::fs::remove_file(&link));
        }
    }

    /// Writes the manifest (a later run finds it).
    pub fn save(&self) -> std::io::Result<()> {
        let text = serde_json::to_vec(&Manifest {
            entries: self.entries.clone(),
        })
        .expect("manifests serialize");
        let tmp = self.dir.join(".manifest.new");
        self.writable(|| {
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, self.dir.join(MANIFEST))
        })
    }

    /// Brings `rel` back to its record: linked again if gone, the original put back if
    /// something else stands there, metadata put back (times too with `times`). `None`: it was
    /// as recorded.
    pub fn restore(&self, rel: &str, times: bool) -> std::io::Result<Option<Repair>> {
        let Some(entry) = self.entries.get(rel) else {
            return Ok(None);
        };
        let path = self.path(rel);
        let mut repair = None;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.ino() == entry.ino => {}
            Ok(m) if entry.kind == Kind::Dir && m.is_dir() => {}
            Ok(_) if entry.kind == Kind::File => {
                let tmp = path.with_file_name(format!(
                    ".{}.rampart-restore",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(self.dir.join(link_name(rel)), &tmp)?;
                std::fs::rename(&tmp, &path)?;
                repair = Some(Repair::Replaced);
            }
            Ok(_) => {
                // a file where a folder belongs
                std::fs::remove_file(&path)?;
                std::fs::create_dir(&path)?;
                repair = Some(Repair::Replaced);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match entry.kind {
                    Kind::Dir => std::fs::create_dir(&path)?,
                    Kind::File => std::fs::hard_link(self.dir.join(link_name(rel)), &path)?,
                }
                repair = Some(Repair::Relinked);
            }
            Err(e) => return Err(e),
        }
        if self.restore_metadata(rel, entry, times)? {
            repair = repair.or(Some(Repair::Metadata));
        }
        Ok(repair)
    }

    /// Puts back mode, owner, extended attributes (and times); true if anything differed.
    fn restore_metadata(&self, rel: &str, want: &Entry, times: bool) -> std::io::Result<bool> {
        let path = self.path(rel);
        let now = Entry::of(&path)?;
        let mut changed = false;
        if now.uid != want.uid || now.gid != want.gid {
            std::os::unix::fs::lchown(&path, Some(want.uid), Some(want.gid))?;
            changed = true;
        }
        let is_link = now.mode & 0o170000 == 0o120000;
        if now.mode & 0o7777 != want.mode & 0o7777 && !is_link {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want.mode & 0o7777))?;
            changed = true;
        }
        if now.xattrs != want.xattrs {
            for (name, _) in &now.xattrs {
                if !want.xattrs.iter().any(|(n, _)| n == name) {
                    let _ = sys::remove_xattr(&path, &hex::decode(name).unwrap_or_default());
                }
            }
            for (name, value) in &want.xattrs {
                let _ = sys::set_xattr(
                    &path,
                    &hex::decode(name).unwrap_or_default(),
                    &hex::decode(value).unwrap_or_default(),
                );
            }
            changed = true;
        }
        if times && now.mtime != want.mtime {
            sys::set_times(&path, want.atime, want.mtime)?;
            changed = true;
        }
        Ok(changed)
    }

    /// Restores every entry (folders before what is in them). At a start after an unclean
    /// end (`at_start`), sockets are left alone: their process binds them anew.
    pub fn restore_all(&self, at_start: bool) -> Vec<(String, Repair)> {
        let mut done = Vec::new();
        for (rel, entry) in &self.entries {
            if at_start && entry.socket {
                continue;
            }
            match self.restore(rel, false) {
                Ok(Some(r)) => done.push((rel.clone(), r)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %self.path(rel).display(), error = %e, "could not restore a protected file")
                }
            }
        }
        done
    }

    /// Entries in the tree that the shadow does not know, shallowest first.
    pub fn unknown(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let Ok(dir) = std::fs::read_dir(self.path(&rel)) else {
                continue;
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                if !self.entries.contains_key(&child) {
                    out.push(self.path(&child));
                } else if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(child);
                }
            }
        }
        out
    }

    /// Removes the shadow (an authorized unload: nothing is held any more).
    pub fn remove(self) {
        let _ = sys::set_immutable(&self.dir, false);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove a shadow folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_flat_and_distinct() {
        assert_eq!(link_name("agent.toml"), "f.agent.toml");
        assert_eq!(link_name("a/b"), "f.a%2Fb");
        assert_ne!(link_name("a%2Fb"), link_name("a/b"));
        assert_eq!(
            Shadow::dir_of(Path::new("/etc/rampart")),
            PathBuf::from("/etc/.rampart.rampart-shadow")
        );
    }

    #[test]
    fn restores_what_was_deleted_replaced_or_changed() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let tree = dir.path().join("state");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("a"), b"original").unwrap();
        std::fs::set_permissions(tree.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = match Shadow::snapshot(&tree) {
            Ok(s) => s,
            // the immutable attribute needs root and a filesystem that has it
            Err(e) => return eprintln!("skipping: {e}"),
        };
        let ino = std::fs::metadata(tree.join("a")).unwrap().ino();
        std::fs::remove_file(tree.join("a")).unwrap();
        assert_eq!(s.restore("a", false).unwrap(), Some(Repair::Relinked));
        assert_eq!(std::fs::metadata(tree.join("a")).unwrap().ino(), ino);
        std::fs::write(tree.join("b"), b"evil").unwrap();
        std::fs::rename(tree.join("b"), tree.join("a")).unwrap();
        assert_eq!(s.restore("a", false).unwrap(), Some(Repair::Replaced));
        assert_eq!(std::fs::read(tree.join("a")).unwrap(), b"original");
        std::fs::set_permissions(tree.join("a"), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(s.restore("a", false).unwrap(), Some(Repair::Metadata));
        assert_eq!(
            std::fs::metadata(tree.join("a")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(s.restore("a", false).unwrap(), None);
        // a later run finds it
        assert_eq!(Shadow::open(&tree).unwrap().entries, s.entries);
        s.remove();
        assert!(!Shadow::dir_of(&tree).exists());
    }
}
