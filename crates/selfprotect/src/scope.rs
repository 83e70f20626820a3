//! What self-protection covers: an explicit set of folders, files and processes, resolved to
//! the inodes and process ids the enforcement works on. Nothing outside it is ever touched, so a
//! bug cannot spread to the rest of the system.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Refuse changes to the object itself (write, truncate, delete, rename, link, attributes).
pub const OBJECT: u32 = 0x1;
/// A folder: refuse creating, removing or renaming entries in it.
pub const CONTENTS: u32 = 0x2;
/// Refuse mounting anything onto it or renaming it (protected folders and their ancestors).
pub const MOUNT_GUARD: u32 = 0x4;

/// What to protect, by path and process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Folders protected with everything below them: install folder, configuration store,
    /// state folder.
    pub trees: Vec<PathBuf>,
    /// Single files outside those folders (service unit files).
    pub files: Vec<PathBuf>,
}

/// A file or folder's identity as the kernel sees it: the superblock's device number (kernel
/// encoding, `MAJOR << 20 | MINOR`) and the inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeKey {
    /// Kernel device number of the filesystem.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl InodeKey {
    /// The key of what `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> InodeKey {
        InodeKey {
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        }
    }
}

/// Converts a device number as `stat` reports it to the kernel's internal encoding.
pub fn kernel_dev(user_dev: u64) -> u64 {
    let major = libc::major(user_dev) as u64;
    let minor = libc::minor(user_dev) as u64;
    (major << 20) | minor
}

/// A scope resolved to inodes.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Inodes and what is refused on each.
    pub inodes: BTreeMap<InodeKey, u32>,
    /// The path each inode was found at (for reports).
    pub paths: BTreeMap<InodeKey, PathBuf>,
    /// Kernel device numbers of the filesystems holding protected files (unmounting them is
    /// refused).
    pub devices: BTreeSet<u64>,
}

impl Resolved {
    /// The path of a protected inode, if it is one.
    pub fn path_of(&self, key: &InodeKey) -> Option<&Path> {
        self.paths.get(key).map(PathBuf::as_path)
    }

    fn add(&mut self, path: &Path, flags: u32) -> std::io::Result<std::fs::Metadata> {
        let meta = std::fs::symlink_metadata(path)?;
        let key = InodeKey::of(&meta);
        *self.inodes.entry(key).or_default() |= flags;
        self.paths.entry(key).or_insert_with(|| path.to_path_buf());
        Ok(meta)
    }
}

impl Scope {
    /// Walks the scope: every folder of a tree gets OBJECT, CONTENTS and MOUNT_GUARD, every file
    /// OBJECT, and every ancestor of a tree MOUNT_GUARD (mounting over `/etc` would hide
    /// `/etc/rampart`). Symbolic links inside trees are protected as links, never followed.
    pub fn resolve(&self) -> std::io::Result<Resolved> {
        let mut r = Resolved::default();
        for tree in &self.trees {
            let tree = std::path::absolute(tree)?;
            let mut ancestor = tree.parent();
            while let Some(a) = ancestor {
                r.add(a, MOUNT_GUARD)?;
                ancestor = a.parent();
            }
            let mut stack = vec![tree];
            while let Some(dir) = stack.pop() {
                let meta = r.add(&dir, OBJECT | CONTENTS | MOUNT_GUARD)?;
                r.devices.insert(kernel_dev(meta.dev()));
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    let path = entry.path();
                    if entry.file_type()?.is_dir() {
                        stack.push(path);
                    } else {
                        r.add(&path, OBJECT)?;
                    }
                }
            }
        }
        for file in &self.files {
            let meta = r.add(file, OBJECT)?;
            r.devices.insert(kernel_dev(meta.dev()));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_trees_files_and_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("opt/rampart");
        std::fs::create_dir_all(tree.join("bin")).unwrap();
        std::fs::write(tree.join("bin/rampart"), b"x").unwrap();
        let unit = dir.path().join("rampart.service");
        std::fs::write(&unit, b"[Unit]").unwrap();
        let r = Scope {
            trees: vec![tree.clone()],
            files: vec![unit.clone()],
        }
        .resolve()
        .unwrap();
        let flags = |p: &Path| r.inodes[&InodeKey::of(&std::fs::metadata(p).unwrap())];
        assert_eq!(flags(&tree), OBJECT | CONTENTS | MOUNT_GUARD);
        assert_eq!(flags(&tree.join("bin")), OBJECT | CONTENTS | MOUNT_GUARD);
        assert_eq!(flags(&tree.join("bin/rampart")), OBJECT);
        assert_eq!(flags(&unit), OBJECT);
        assert_eq!(flags(&dir.path().join("opt")), MOUNT_GUARD);
        assert_eq!(flags(Path::new("/")) & MOUNT_GUARD, MOUNT_GUARD);
        assert!(!r.devices.is_empty());
        // another name for the same file is the same key
        let link = dir.path().join("hard");
        std::fs::hard_link(tree.join("bin/rampart"), &link).unwrap();
        assert_eq!(flags(&link), OBJECT);
    }

    #[test]
    fn kernel_device_encoding() {
        // 8:1 (sda1) is 0x801 for stat and (8 << 20) | 1 inside the kernel
        assert_eq!(kernel_dev(0x801), (8 << 20) | 1);
        // minor numbers above 255 are split in the user encoding
        assert_eq!(kernel_dev(libc::makedev(259, 300)), (259 << 20) | 300);
    }
}
