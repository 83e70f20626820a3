//! Putting back what an actor did: every document it modified, truncated, renamed or deleted
//! returns to its original path, name and content; every file it created goes to quarantine.
//!
//! What the actor did is a list of [`Touch`]es in the order they happened. From them a
//! [`Plan`] is made per inode: where the document was first (its original path), and where its
//! original content is — a copy in the vault (kept before the first write), or the inode itself
//! (renamed, or deleted while held, without being written). Carrying the plan out is
//! idempotent: a restore can be repeated, and says `unchanged` for what is already back.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rampart_protocol::ransomware::{FileAction, FileOutcome, IncidentFile};
use serde::{Deserialize, Serialize};

use crate::holds::Holds;
use crate::vault::{Kept, Vault};

/// One thing the actor did, as seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    /// Opened document (`dev`, `ino`) at `path` for writing; its content before was `kept`.
    Modified {
        /// Where.
        path: PathBuf,
        /// Device.
        dev: u64,
        /// Inode.
        ino: u64,
        /// The copy made first, if one could be.
        kept: Option<Kept>,
    },
    /// Renamed document (`dev`, `ino`) from `from` to `to`.
    Renamed {
        /// Old path.
        from: PathBuf,
        /// New path.
        to: PathBuf,
        /// Device.
        dev: u64,
        /// Inode.
        ino: u64,
    },
    /// Deleted document (`dev`, `ino`) at `path` (or replaced it by renaming over it).
    Deleted {
        /// Where.
        path: PathBuf,
        /// Device.
        dev: u64,
        /// Inode.
        ino: u64,
    },
    /// Created a file at `path`.
    Created {
        /// Where.
        path: PathBuf,
        /// Device.
        dev: u64,
        /// Inode.
        ino: u64,
    },
    /// From here on (`dev`, `ino`) is another file: the filesystem gave the number of the one
    /// touched before to a new one (see `State::renew`).
    Renewed {
        /// Device.
        dev: u64,
        /// Inode.
        ino: u64,
    },
}

/// Where an original's content is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A copy in the vault.
    Copy(String),
    /// The inode itself: renamed away, or deleted while held (never written by the actor).
    Hold,
    /// Written by the actor, and too large to have been copied.
    NotPreserved,
}

/// An original document of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// Where it was before the actor.
    pub path: PathBuf,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Where its content is.
    pub source: Source,
    /// Where the actor left it (after renames), if elsewhere.
    pub now_at: Option<PathBuf>,
    /// What the actor did first to it.
    pub action: FileAction,
}

/// A file the actor made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made {
    /// Where it was made.
    pub path: PathBuf,
    /// Where it is now (after renames).
    pub now_at: PathBuf,
}

/// What to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Plan {
    /// The originals, in the order the actor reached them.
    pub originals: Vec<Original>,
    /// Files it made.
    pub made: Vec<Made>,
}

impl Plan {
    /// The plan for `touches` (in the order they happened).
    pub fn from_touches(touches: &[Touch]) -> Plan {
        let mut originals: Vec<Original> = Vec::new();
        let mut made: BTreeMap<(u64, u64), Made> = BTreeMap::new();
        let find = |o: &mut Vec<Original>, dev: u64, ino: u64| {
            o.iter().position(|x| x.dev == dev && x.ino == ino)
        };
        // numbers given to another file since: what was touched under them before is kept
        // apart under a number no file has (the device's all ones, a count)
        let mut retired = 0;
        for t in touches {
            match t {
                Touch::Renewed { dev, ino } => {
                    retired += 1;
                    let apart = (u64::MAX, retired);
                    if let Some(m) = made.remove(&(*dev, *ino)) {
                        made.insert(apart, m);
                    }
                    for o in originals
                        .iter_mut()
                        .filter(|o| (o.dev, o.ino) == (*dev, *ino))
                    {
                        (o.dev, o.ino) = apart;
                    }
                }
                Touch::Created { path, dev, ino } => {
                    // made again under another name: the first is gone (its deletion is not
                    // written down: it was no document) and the filesystem gave its number to
                    // the new one (ext4 does at once — a temporary file per document)
                    if made.get(&(*dev, *ino)).is_none_or(|m| m.path != *path) {
                        made.insert(
                            (*dev, *ino),
                            Made {
                                path: path.clone(),
                                now_at: path.clone(),
                            },
                        );
                    }
                }
                Touch::Modified {
                    path,
                    dev,
                    ino,
                    kept,
                } => {
                    if made.contains_key(&(*dev, *ino)) {
                        continue;
                    }
                    let source = match kept {
                        Some(Kept::Copy { sha256, .. }) => Source::Copy(sha256.clone()),
                        Some(Kept::TooLarge { .. }) | None => Source::NotPreserved,
                    };
                    match find(&mut originals, *dev, *ino) {
                        // renamed first, then written: the content before the write is the
                        // original (the hold still had it until then)
                        Some(i) => {
                            if originals[i].source == Source::Hold {
                                originals[i].source = source;
                            }
                        }
                        None => originals.push(Original {
                            path: path.clone(),
                            dev: *dev,
                            ino: *ino,
                            source,
                            now_at: None,
                            action: FileAction::Modified,
                        }),
                    }
                }
                Touch::Renamed { from, to, dev, ino } => {
                    if let Some(m) = made.get_mut(&(*dev, *ino)) {
                        m.now_at = to.clone();
                        continue;
                    }
                    match find(&mut originals, *dev, *ino) {
                        Some(i) => originals[i].now_at = Some(to.clone()),
                        None => originals.push(Original {
                            path: from.clone(),
                            dev: *dev,
                            ino: *ino,
                            source: Source::Hold,
                            now_at: Some(to.clone()),
                            action: FileAction::Renamed,
                        }),
                    }
                }
                Touch::Deleted { path, dev, ino } => {
                    if made.remove(&(*dev, *ino)).is_some() {
                        continue;
                    }
                    match find(&mut originals, *dev, *ino) {
                        Some(i) => originals[i].now_at = None,
                        None => originals.push(Original {
                            path: path.clone(),
                            dev: *dev,
                            ino: *ino,
                            source: Source::Hold,
                            now_at: None,
                            action: FileAction::Deleted,
                        }),
                    }
                }
            }
        }
        Plan {
            originals,
            made: made.into_values().collect(),
        }
    }

    /// The incident's file list before any restore (outcome `pending`).
    pub fn files(&self) -> Vec<IncidentFile> {
        let mut files: Vec<IncidentFile> = self
            .originals
            .iter()
            .map(|o| IncidentFile {
                path: o.path.display().to_string(),
                action: o.action,
                renamed_to: o.now_at.as_ref().map(|p| p.display().to_string()),
                outcome: if o.source == Source::NotPreserved {
                    FileOutcome::NotPreserved
                } else {
                    FileOutcome::Pending
                },
            })
            .collect();
        files.extend(self.made.iter().map(|m| IncidentFile {
            path: m.path.display().to_string(),
            action: FileAction::Created,
            renamed_to: (m.now_at != m.path).then(|| m.now_at.display().to_string()),
            outcome: FileOutcome::Pending,
        }));
        files
    }

    /// Carries the plan out: files the actor made go to `quarantine` (first, so that none
    /// stands where an original belongs), then every original comes back. Returns the files with
    /// their outcomes.
    pub fn restore(&self, vault: &Vault, holds: &Holds, quarantine: &Path) -> Vec<IncidentFile> {
        let mut files = self.files();
        let made_at = self.originals.len();
        for (i, m) in self.made.iter().enumerate() {
            files[made_at + i].outcome = quarantine_file(&m.now_at, quarantine);
        }
        for (i, o) in self.originals.iter().enumerate() {
            files[i].outcome = match restore_one(o, vault, holds) {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::error!(path = %o.path.display(), error = %e, "could not restore a document");
                    FileOutcome::Failed
                }
            };
        }
        files
    }
}

fn quarantine_file(at: &Path, quarantine: &Path) -> FileOutcome {
    if std::fs::symlink_metadata(at).is_err() {
        return FileOutcome::Unchanged;
    }
    let name = at
        .display()
        .to_string()
        .trim_start_matches('/')
        .replace('/', "%2F");
    let to = quarantine.join(name);
    let moved = std::fs::create_dir_all(quarantine).and_then(|()| {
        std::fs::rename(at, &to).or_else(|_| {
            // another filesystem: copy, then remove
            std::fs::copy(at, &to).and_then(|_| std::fs::remove_file(at))
        })
    });
    match moved {
        Ok(()) => FileOutcome::Quarantined,
        Err(e) => {
            tracing::error!(path = %at.display(), error = %e, "could not quarantine a file");
            FileOutcome::Failed
        }
    }
}

/// Brings one original back to its path: the inode itself if it still has a name (renamed
/// away), else its content — from the vault copy, or through its hold.
fn restore_one(o: &Original, vault: &Vault, holds: &Holds) -> std::io::Result<FileOutcome> {
    let held = holds.reader(o.dev, o.ino);
    if !matches!(o.source, Source::NotPreserved) {
        // a folder removed whole (`rm -rf`) is made again, for its documents to go back into
        if let Some(folder) = o.path.parent().filter(|f| !f.exists()) {
            std::fs::create_dir_all(folder)?;
        }
    }
    match &o.source {
        Source::NotPreserved => Ok(FileOutcome::NotPreserved),
        Source::Hold => {
            if same_inode(&o.path, o.dev, o.ino) {
                remove_other_name(o);
                return Ok(FileOutcome::Unchanged);
            }
            if let Some(at) = o.now_at.as_ref().filter(|at| same_inode(at, o.dev, o.ino)) {
                std::fs::rename(at, &o.path)?;
                return Ok(FileOutcome::Restored);
            }
            let Some(reader) = held else {
                // deleted without a hold: gone
                return Ok(FileOutcome::NotPreserved);
            };
            if same_content(&o.path, &reader)? {
                return Ok(FileOutcome::Unchanged);
            }
            put(&reader, &o.path, Some(&reader))?;
            Ok(FileOutcome::Restored)
        }
        Source::Copy(sha256) => {
            let copy = vault.copy_path(sha256);
            if same_content(&o.path, &copy)? {
                remove_other_name(o);
                return Ok(FileOutcome::Unchanged);
            }
            // a copy is used only if it still is what was kept
            if crate::monitor::sha256_of(&copy).as_deref() != Some(sha256.as_str()) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the vault copy {} is missing or damaged", copy.display()),
                ));
            }
            put(&copy, &o.path, held.as_deref())?;
            remove_other_name(o);
            Ok(FileOutcome::Restored)
        }
    }
}

/// Writes the content of `from` to `path` (through a temporary beside it, renamed over), with
/// the mode and owner of `like` when there is one.
fn put(from: &Path, path: &Path, like: Option<&Path>) -> std::io::Result<()> {
    let tmp = sibling(path, ".rampart-restore");
    std::fs::copy(from, &tmp)?;
    if let Some(m) = like.and_then(|l| std::fs::metadata(l).ok()) {
        let _ = std::fs::set_permissions(&tmp, m.permissions());
        let _ = std::os::unix::fs::chown(&tmp, Some(m.uid()), Some(m.gid()));
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Removes the name the actor gave the original (after a rename), once the original is back.
fn remove_other_name(o: &Original) {
    if let Some(at) = &o.now_at {
        if at != &o.path && same_inode(at, o.dev, o.ino) {
            let _ = std::fs::remove_file(at);
        }
    }
}

fn same_inode(path: &Path, dev: u64, ino: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) else {
        return Ok(false);
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn ino(p: &Path) -> (u64, u64) {
        let m = std::fs::metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    #[test]
    fn a_file_made_under_a_number_an_earlier_made_file_had_is_the_one_quarantined() {
        // the actor made `x.tmp`, deleted it (not written down: no document), and the next file
        // it made, `y.tmp`, was given the same inode number
        let touches = [
            Touch::Created {
                path: PathBuf::from("/d/x.tmp"),
                dev: 1,
                ino: 7,
            },
            Touch::Created {
                path: PathBuf::from("/d/y.tmp"),
                dev: 1,
                ino: 7,
            },
        ];
        let plan = Plan::from_touches(&touches);
        assert_eq!(
            plan.made,
            vec![Made {
                path: PathBuf::from("/d/y.tmp"),
                now_at: PathBuf::from("/d/y.tmp"),
            }]
        );
    }

    /// A number the filesystem gave to another file (`Touch::Renewed`) starts afresh: each file
    /// keeps its own path and original.
    #[test]
    fn a_renewed_number_is_another_document_in_the_plan() {
        let copy = |sha: &str| {
            Some(Kept::Copy {
                sha256: sha.into(),
                size: 1,
            })
        };
        let touches = vec![
            Touch::Modified {
                path: "/d/a.txt".into(),
                dev: 7,
                ino: 42,
                kept: copy("aaaa"),
            },
            Touch::Renewed { dev: 7, ino: 42 },
            Touch::Modified {
                path: "/d/c.txt".into(),
                dev: 7,
                ino: 42,
                kept: copy("cccc"),
            },
        ];
        let plan = Plan::from_touches(&touches);
        let originals: Vec<(&Path, &Source)> = plan
            .originals
            .iter()
            .map(|o| (o.path.as_path(), &o.source))
            .collect();
        assert_eq!(
            originals,
            vec![
                (Path::new("/d/a.txt"), &Source::Copy("aaaa".into())),
                (Path::new("/d/c.txt"), &Source::Copy("cccc".into())),
            ]
        );
    }

    #[test]
    fn every_kind_of_damage_is_undone_and_again_is_harmless() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let vault = Vault::open(&dir.path().join("vault"), 1 << 20).unwrap();
        let holds = Holds::new();
        let docs = dir.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        let names = ["a.txt", "b.txt", "c.txt", "d.txt"];
        for n in names {
            std::fs::write(docs.join(n), format!("original {n}")).unwrap();
            holds.hold_path(&docs.join(n)).unwrap();
        }
        let mut touches = Vec::new();
        // a: encrypted in place
        let a = docs.join("a.txt");
        let (dev, ia) = ino(&a);
        let f = std::fs::File::open(&a).unwrap();
        let kept = vault.keep(f.as_fd(), &a, 14).unwrap();
        touches.push(Touch::Modified {
            path: a.clone(),
            dev,
            ino: ia,
            kept: Some(kept),
        });
        std::fs::write(&a, b"\x93\x11garbage").unwrap();
        // b: encrypted then renamed
        let b = docs.join("b.txt");
        let (_, ib) = ino(&b);
        let f = std::fs::File::open(&b).unwrap();
        let kept = vault.keep(f.as_fd(), &b, 14).unwrap();
        touches.push(Touch::Modified {
            path: b.clone(),
            dev,
            ino: ib,
            kept: Some(kept),
        });
        std::fs::write(&b, b"\x01\x02\x03").unwrap();
        let locked = docs.join("b.txt.locked");
        std::fs::rename(&b, &locked).unwrap();
        touches.push(Touch::Renamed {
            from: b.clone(),
            to: locked.clone(),
            dev,
            ino: ib,
        });
        // c: an encrypted copy written, the original deleted
        let c = docs.join("c.txt");
        let (_, ic) = ino(&c);
        let enc = docs.join("c.txt.enc");
        std::fs::write(&enc, b"\xff\xfe").unwrap();
        touches.push(Touch::Created {
            path: enc.clone(),
            dev,
            ino: ino(&enc).1,
        });
        std::fs::remove_file(&c).unwrap();
        touches.push(Touch::Deleted {
            path: c.clone(),
            dev,
            ino: ic,
        });
        // d: only renamed
        let d = docs.join("d.txt");
        let (_, id) = ino(&d);
        let moved = docs.join("d.crypt");
        std::fs::rename(&d, &moved).unwrap();
        touches.push(Touch::Renamed {
            from: d.clone(),
            to: moved.clone(),
            dev,
            ino: id,
        });
        // a ransom note
        let note = docs.join("README-DECRYPT.txt");
        std::fs::write(&note, b"pay").unwrap();
        touches.push(Touch::Created {
            path: note.clone(),
            dev,
            ino: ino(&note).1,
        });

        let plan = Plan::from_touches(&touches);
        assert_eq!(plan.originals.len(), 4);
        assert_eq!(plan.made.len(), 2);
        let quarantine = dir.path().join("quarantine");
        let files = plan.restore(&vault, &holds, &quarantine);
        for n in names {
            assert_eq!(
                std::fs::read_to_string(docs.join(n)).unwrap(),
                format!("original {n}")
            );
        }
        let mut left: Vec<String> = std::fs::read_dir(&docs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left, names,
            "nothing the actor made is left beside the originals"
        );
        assert!(
            files
                .iter()
                .all(|f| matches!(f.outcome, FileOutcome::Restored | FileOutcome::Quarantined)),
            "{files:?}"
        );
        assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 2);
        // again: nothing to do
        let again = plan.restore(&vault, &holds, &quarantine);
        assert!(
            again.iter().all(|f| f.outcome == FileOutcome::Unchanged),
            "{again:?}"
        );
    }
}
