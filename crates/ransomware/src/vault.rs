//! The vault of originals: before a process that is not trusted first opens a document for
//! writing, its content is copied here (`copies/SHA256`; the same content is never stored
//! twice; a reflink where the filesystem has them, so the copy costs no space until the
//! document changes). A file larger than the policy's limit is not copied, and that is recorded. Copies are
//! evicted oldest first past the size limit, and after the age limit, except those an incident
//! still needs. (Deletion and renaming over are covered by [`holds`](crate::holds), which keep
//! the inode itself alive.) The vault lives inside the agent's self-protected state, and only
//! the agent writes it.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// What keeping a document before a change gave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kept {
    /// Its content is in the vault under this SHA-256.
    Copy {
        /// Content hash (the copy's name).
        sha256: String,
        /// Size in bytes.
        size: u64,
    },
    /// Too large for the policy's limit: not preserved.
    TooLarge {
        /// Size in bytes.
        size: u64,
    },
}

/// Why the vault could not do something.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VaultError {
    let path = path.to_path_buf();
    move |source| VaultError::Io { what, path, source }
}

/// How soon a copy is on disk after it was kept (see [`Vault::sync`]).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The vault.
pub struct Vault {
    dir: PathBuf,
    max_file_bytes: u64,
    /// Copies kept since the last [`Vault::sync`].
    unsynced: std::sync::Mutex<Vec<PathBuf>>,
}

impl Vault {
    /// Opens (creating) the vault in `dir`; files larger than `max_file_bytes` are not copied.
    pub fn open(dir: &Path, max_file_bytes: u64) -> Result<Vault, VaultError> {
        let copies = dir.join("copies");
        std::fs::create_dir_all(&copies).map_err(io("creating", &copies))?;
        Ok(Vault {
            dir: dir.to_path_buf(),
            max_file_bytes,
            unsynced: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The vault's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies the content of the open file `fd` (the document at `path`, `size` bytes) into the
    /// vault, unless the same content is there already. Reads through the descriptor: opening
    /// the document again would wait for the very permission event being answered.
    pub fn keep(&self, fd: BorrowedFd<'_>, path: &Path, size: u64) -> Result<Kept, VaultError> {
        if size > self.max_file_bytes {
            return Ok(Kept::TooLarge { size });
        }
        let mut file = std::fs::File::from(fd.try_clone_to_owned().map_err(io("reading", path))?);
        file.seek(SeekFrom::Start(0)).map_err(io("reading", path))?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("copies/.new-{}-{n}", std::process::id()));
        let mut out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        // a reflink where the filesystem has them (the copy shares the blocks until the
        // document is written), hashed from the clone; else a copy, hashed as it is written
        let cloned = rampart_sys::reflink(out.as_fd(), file.as_fd()).is_ok();
        loop {
            let n = if cloned {
                out.read(&mut buf)
            } else {
                file.read(&mut buf)
            }
            .map_err(io("reading", path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if !cloned {
                out.write_all(&buf[..n]).map_err(io("writing", &tmp))?;
            }
            total += n as u64;
        }
        let sha256 = hex::encode(hasher.finalize());
        let copy = self.copy_path(&sha256);
        if copy.exists() {
            let _ = std::fs::remove_file(&tmp);
            // kept again: its age starts again
            let _ = std::fs::File::open(&copy).and_then(|f| f.set_modified(SystemTime::now()));
        } else {
            std::fs::rename(&tmp, &copy).map_err(io("storing", &copy))?;
            self.unsynced.lock().expect("vault lock").push(copy);
        }
        Ok(Kept::Copy {
            sha256,
            size: total,
        })
    }

    /// Puts the copies kept since the last call on disk, and their names. A copy is made on
    /// the opener's way (its open waits for it); waiting for the disk too would make every first
    /// write wait for a journal commit. So it is written to the page cache there, and on disk
    /// within [`SYNC_EVERY`] from here: only a crash of the host in that second, during an
    /// attack, could lose an original. Returns how many copies were synced.
    pub fn sync(&self) -> usize {
        let pending = std::mem::take(&mut *self.unsynced.lock().expect("vault lock"));
        for copy in &pending {
            if let Err(e) = std::fs::File::open(copy).and_then(|f| f.sync_data()) {
                // evicted meanwhile, or the disk failing: the next copies are still tried
                tracing::debug!(copy = %copy.display(), error = %e, "vault: a copy was not synced");
            }
        }
        if !pending.is_empty() {
            let copies = self.dir.join("copies");
            if let Err(e) = std::fs::File::open(&copies).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %copies.display(), error = %e, "vault: its folder was not synced");
            }
        }
        pending.len()
    }

    /// Where the copy with content hash `sha256` is.
    pub fn copy_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("copies").join(sha256)
    }

    /// The first `n` bytes of a copy (for judging a change against it).
    pub fn copy_head(&self, sha256: &str, n: usize) -> std::io::Result<Vec<u8>> {
        read_head(&self.copy_path(sha256), n)
    }

    /// Removes copies older than `max_age`, then the oldest ones until the copies take at most
    /// `max_bytes`. Copies in `keep` (those an open incident still needs) stay, and do not count
    /// towards `max_bytes`. Returns how many were removed. `keep` is asked only when some copy
    /// is due to go (what the caller gathers for it — every copy an incident or a journal needs,
    /// under the monitor's lock — is not gathered when nothing is).
    pub fn evict(&self, max_bytes: u64, max_age: Duration, keep: &dyn Fn(&str) -> bool) -> usize {
        let now = SystemTime::now();
        let mut copies: Vec<(SystemTime, u64, PathBuf, String)> =
            std::fs::read_dir(self.dir.join("copies"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        return None;
                    }
                    let m = e.metadata().ok()?;
                    Some((m.modified().ok()?, m.len(), e.path(), name))
                })
                .collect();
        let old = |time: SystemTime| now.duration_since(time).unwrap_or_default() > max_age;
        let all: u64 = copies.iter().map(|(_, len, _, _)| len).sum();
        if all <= max_bytes && !copies.iter().any(|(time, ..)| old(*time)) {
            return 0;
        }
        copies.retain(|(.., name)| !keep(name));
        copies.sort();
        let mut total: u64 = copies.iter().map(|(_, len, _, _)| len).sum();
        let mut removed = 0;
        for (time, len, path, _) in copies {
            if (old(time) || total > max_bytes) && std::fs::remove_file(&path).is_ok() {
                total -= len;
                removed += 1;
            }
        }
        removed
    }

    /// Bytes the copies take, and how many there are.
    pub fn usage(&self) -> (u64, usize) {
        std::fs::read_dir(self.dir.join("copies"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .fold((0, 0), |(b, n), m| (b + m.len(), n + 1))
    }
}

/// A file opened once, to be judged: which file it is, its size then, and its first bytes read
/// through that one descriptor. Judged late (the queue read seconds after the fact, under load),
/// a path may be another file's a moment later: what is judged must be one file.
pub struct Opened {
    /// Its device.
    pub dev: u64,
    /// Its inode.
    pub ino: u64,
    /// Its size when opened.
    pub len: u64,
    /// When it was made (seconds, nanoseconds), where the filesystem records it.
    pub born: Option<(i64, u32)>,
    file: std::fs::File,
}

impl Opened {
    /// Opens the regular file at `path` for reading (`follow`: through a last link, as
    /// `/proc/self/fd/N` needs).
    pub fn open(path: &Path, follow: bool) -> Option<Opened> {
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        // its access time left as it was (see `rampart_sys::open_to_read`)
        Opened::of(rampart_sys::open_to_read(path, nofollow | libc::O_NONBLOCK).ok()?)
    }

    /// The regular file open at `file` (`None` if it is none).
    pub fn of(file: std::fs::File) -> Option<Opened> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok().filter(|m| m.is_file())?;
        Some(Opened {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            born: born_of(&m),
            file,
        })
    }

    /// Its first `n` bytes (fewer if it is shorter) — none if its size changed meanwhile: it
    /// is being written again (and its next close is judged).
    pub fn head(&self, n: usize) -> Option<Vec<u8>> {
        let len = self.len as usize;
        if len < n {
            // the whole file and one byte past it asked for at once: exactly `len` read, its
            // end was where it was when opened (a regular file's read stops short only at its
            // end) — no second look at its size, no second read (this ran for every file a
            // program made)
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; len + 1];
            let got = self.file.read_at(&mut buf, 0).ok()?;
            buf.truncate(got);
            return (got == len).then_some(buf);
        }
        let buf = read_head_of(&self.file, n).ok()?;
        let still = self.file.metadata().is_ok_and(|m| m.len() == self.len);
        (buf.len() == n && still).then_some(buf)
    }

    /// Another descriptor of the file (for its guard, see `monitor::watch_made_document`).
    pub fn descriptor(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.file.try_clone().map(Into::into)
    }

    /// Its descriptor, once it is judged.
    pub fn into_descriptor(self) -> std::os::fd::OwnedFd {
        self.file.into()
    }
}

/// When the file `m` describes was made (seconds, nanoseconds), where the filesystem records it.
pub fn born_of(m: &std::fs::Metadata) -> Option<(i64, u32)> {
    let d = m
        .created()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((d.as_secs() as i64, d.subsec_nanos()))
}

/// The first `n` bytes of the file at `path`.
pub fn read_head(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    // as much as is there, up to `n`: no buffer of `n` zeroes for a file of a few KiB
    let f = rampart_sys::open_to_read(path, 0)?;
    let len = f.metadata()?.len().min(n as u64) as usize;
    let mut buf = Vec::with_capacity(len + 1);
    f.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The first `n` bytes (or fewer) of the open `file`, read from its start whatever its offset.
pub fn read_head_of(file: &std::fs::File, n: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match file.read_at(&mut buf[got..], got as u64)? {
            0 => break,
            k => got += k,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn copies_are_kept_once_and_evicted_unless_needed() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let vault = Vault::open(&dir.path().join("vault"), 1 << 20).unwrap();
        let doc = dir.path().join("report.txt");
        std::fs::write(&doc, b"version one").unwrap();
        let f = std::fs::File::open(&doc).unwrap();
        let a = vault.keep(f.as_fd(), &doc, 11).unwrap();
        let b = vault.keep(f.as_fd(), &doc, 11).unwrap();
        assert_eq!(a, b);
        let Kept::Copy { sha256, size } = a else {
            panic!()
        };
        assert_eq!(size, 11);
        assert_eq!(
            std::fs::read(vault.copy_path(&sha256)).unwrap(),
            b"version one"
        );
        assert_eq!(vault.usage(), (11, 1));
        // the copy is put on disk later, once (stored once, synced once)
        assert_eq!(vault.sync(), 1);
        assert_eq!(vault.sync(), 0);
        assert_eq!(
            vault.keep(f.as_fd(), &doc, 2 << 20).unwrap(),
            Kept::TooLarge { size: 2 << 20 }
        );
        // nothing is old yet, nothing past the limit: what incidents need is not even asked
        assert_eq!(
            vault.evict(1 << 30, Duration::from_secs(3600), &|_| panic!("asked")),
            0
        );
        // a copy an incident needs stays even past the size limit
        assert_eq!(
            vault.evict(1 << 30, Duration::from_secs(3600), &|_| false),
            0
        );
        assert_eq!(
            vault.evict(0, Duration::from_secs(3600), &|s| s == sha256),
            0
        );
        assert_eq!(vault.evict(0, Duration::from_secs(3600), &|_| false), 1);
    }

    /// An XFS filesystem in a file of the test's own, mounted below its temporary folder and
    /// unmounted when dropped.
    struct Xfs {
        dir: tempfile::TempDir,
    }

    impl Drop for Xfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path().join("mnt"))
                .status();
        }
    }

    fn run(cmd: &str, args: &[&str]) -> bool {
        std::process::Command::new(cmd)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    #[test]
    fn on_a_filesystem_with_reflinks_the_copy_shares_the_documents_blocks() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (img, mnt) = (dir.path().join("xfs.img"), dir.path().join("mnt"));
        std::fs::create_dir(&mnt).unwrap();
        let made = std::fs::File::create(&img)
            .and_then(|f| f.set_len(320 << 20))
            .is_ok()
            && run("mkfs.xfs", &["-q", img.to_str().unwrap()])
            && run(
                "mount",
                &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()],
            );
        if !made {
            let why =
                "needs root, loop devices and mkfs.xfs (scripts/install-deps.sh installs xfsprogs)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {why}"
            );
            eprintln!("skipping: {why}");
            return;
        }
        let fs = Xfs { dir };
        let mnt = fs.dir.path().join("mnt");
        let vault = Vault::open(&mnt.join("vault"), 64 << 20).unwrap();
        let doc = mnt.join("thesis.pdf");
        let content: Vec<u8> = (0..(4u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&doc, &content).unwrap();
        let f = std::fs::File::open(&doc).unwrap();
        let Kept::Copy { sha256, size } =
            vault.keep(f.as_fd(), &doc, content.len() as u64).unwrap()
        else {
            panic!("not kept")
        };
        assert_eq!(size, content.len() as u64);
        let copy = vault.copy_path(&sha256);
        assert_eq!(std::fs::read(&copy).unwrap(), content);
        let extents = std::process::Command::new("filefrag")
            .arg("-v")
            .arg(&copy)
            .output()
            .unwrap();
        let extents = String::from_utf8_lossy(&extents.stdout);
        assert!(
            extents.contains("shared"),
            "the copy was written, not reflinked:\n{extents}"
        );
        // the document changes; the copy does not
        std::fs::write(&doc, b"encrypted").unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), content);
        drop(f);
        drop(vault);
        drop(fs);
    }

    /// A head is of the file as it was opened: the whole of a short file, nothing once it grew
    /// or shrank since (it is being written again, and judged at its next close).
    #[test]
    fn a_head_is_of_the_file_as_it_was_opened() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let doc = dir.path().join("notes.txt");
        std::fs::write(&doc, b"0123456789").unwrap();
        let opened = Opened::open(&doc, false).unwrap();
        assert_eq!(opened.len, 10);
        assert_eq!(opened.head(16).as_deref(), Some(&b"0123456789"[..]));
        assert_eq!(opened.head(4).as_deref(), Some(&b"0123"[..]));
        let mut more = std::fs::OpenOptions::new().append(true).open(&doc).unwrap();
        more.write_all(b"ab").unwrap();
        assert_eq!(opened.head(16), None, "grown since it was opened");
        assert_eq!(opened.head(4), None, "grown since it was opened");
        std::fs::File::options()
            .write(true)
            .open(&doc)
            .unwrap()
            .set_len(5)
            .unwrap();
        assert_eq!(opened.head(16), None, "shrunk since it was opened");
        // a second descriptor of the very file, for its guard
        let again = std::fs::File::from(opened.descriptor().unwrap());
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&again.metadata().unwrap()),
            opened.ino
        );
    }
}
