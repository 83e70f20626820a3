//! The immutable attribute on the files that do not change while the agent runs: the install
//! folder (its files and folders) and the service units. With it, unlink, rename, chmod, link and
//! writes fail even for root until it is cleared; clearing it needs an open the file guard
//! refuses. It is cleared again on an authorized unload, so upgrades and uninstalls work.

use std::path::{Path, PathBuf};

use crate::sys;

/// Sets the attribute on `tree` (every file and folder in it) and on `files`. Returns the paths
/// it was set on, folders last, for [`clear`].
pub fn set(trees: &[PathBuf], files: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut done = Vec::new();
    for tree in trees {
        let mut dirs = Vec::new();
        let mut stack = vec![tree.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let ty = entry.file_type()?;
                if ty.is_dir() {
                    stack.push(entry.path());
                } else if ty.is_file() {
                    sys::set_immutable(&entry.path(), true)?;
                    done.push(entry.path());
                }
            }
            dirs.push(dir);
        }
        // folders after their files: an immutable folder refuses new entries, not changes to
        // the files already in it
        for dir in dirs.into_iter().rev() {
            sys::set_immutable(&dir, true)?;
            done.push(dir);
        }
    }
    for f in files {
        sys::set_immutable(f, true)?;
        done.push(f.clone());
    }
    Ok(done)
}

/// Clears the attribute from `paths` (folders first, so their files can be reached).
pub fn clear(paths: &[PathBuf]) {
    for p in paths.iter().rev() {
        if let Err(e) = sys::set_immutable(p, false) {
            tracing::warn!(path = %p.display(), error = %e, "could not clear the immutable attribute");
        }
    }
}

/// Whether `path` carries the attribute.
pub fn is_set(path: &Path) -> bool {
    sys::is_immutable(path).unwrap_or(false)
}
