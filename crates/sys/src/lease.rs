//! Read leases (`F_SETLEASE`): a descriptor holding one makes every open of the file for
//! writing, and every truncation, wait until the holder lets go (or the kernel's
//! `lease-break-time`, 45 s by default, runs out) — while opens for reading cost nothing.
//! Ransomware protection guards documents this way when no one is under suspicion, instead of
//! one permission event per open.
//!
//! The kernel tells the holder with a signal naming the descriptor (`F_SETSIG`). The signal is
//! sent to the process, so any thread may take it: a handler installed once
//! ([`LeaseBreaks::get`]) writes the descriptor's number into a pipe, which is read by whoever
//! holds leases in the process.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::{check, cpath};

/// The write end of the pipe the handler writes broken leases' descriptors into.
static BREAK_PIPE: AtomicI32 = AtomicI32::new(-1);
/// Counts the breaks that could not be written down (the pipe full, or the kernel's queue of
/// signals full, when it sends a plain `SIGIO` without the descriptor): every lease must then
/// be looked at.
static OVERFLOWS: AtomicU64 = AtomicU64::new(0);

/// The signal lease breaks arrive with.
pub fn lease_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

/// Offset of `si_fd` in `siginfo_t` for `SIGPOLL`-style signals on 64-bit Linux (after
/// `si_signo`, `si_errno`, `si_code`, padding and the `long si_band`).
#[cfg(target_pointer_width = "64")]
const SI_FD_OFFSET: usize = 24;

extern "C" fn on_break(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let pipe = BREAK_PIPE.load(Ordering::Relaxed);
    if signal != lease_signal() || info.is_null() || pipe < 0 {
        OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler; si_fd is an int at
    // SI_FD_OFFSET for signals set with F_SETSIG. write(2) is async-signal-safe.
    unsafe {
        let fd = *((info as *const u8).add(SI_FD_OFFSET) as *const i32);
        let n = libc::write(pipe, &fd as *const i32 as *const libc::c_void, 4);
        if n != 4 {
            OVERFLOWS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where lease breaks are read.
pub struct LeaseBreaks {
    read: OwnedFd,
}

impl LeaseBreaks {
    /// The process's reader of lease breaks: the handler (for [`lease_signal`] and `SIGIO`) is
    /// installed at the first call.
    pub fn get() -> Result<&'static LeaseBreaks, String> {
        static BREAKS: OnceLock<Result<LeaseBreaks, String>> = OnceLock::new();
        BREAKS
            .get_or_init(|| LeaseBreaks::listen().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone())
    }

    fn listen() -> io::Result<LeaseBreaks> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: both are fresh descriptors this function owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // room for many breaks at once (a program opening thousands of documents for writing)
        // SAFETY: F_SETPIPE_SZ takes an int; failure leaves the default size.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        if BREAK_PIPE
            .compare_exchange(-1, write.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "lease breaks are already listened to in this process",
            ));
        }
        // the write end lives as long as the process (the handler may run at any time)
        std::mem::forget(write);
        for signal in [lease_signal(), libc::SIGIO] {
            // SAFETY: a zeroed sigaction is valid; we set a handler with the SA_SIGINFO
            // signature, restart interrupted calls and block nothing else.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_break as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            // SAFETY: the struct is initialised above.
            check(unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) })?;
        }
        Ok(LeaseBreaks { read })
    }

    /// How many breaks were not written down so far (when it grows, every lease must be looked
    /// at with [`lease_is_breaking`]).
    pub fn overflows(&self) -> u64 {
        OVERFLOWS.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout_ms` for breaks: the descriptors whose leases are being broken.
    pub fn wait(&self, timeout_ms: i32) -> Vec<i32> {
        self.wait_also(None, timeout_ms)
    }

    /// As [`LeaseBreaks::wait`], returning early also when descriptor `also` (open for the
    /// call's duration) is readable: another way breaks are announced.
    pub fn wait_also(&self, also: Option<RawFd>, timeout_ms: i32) -> Vec<i32> {
        let mut out = Vec::new();
        let fd = &self.read;
        let mut p = [fd.as_raw_fd(), also.unwrap_or(-1)].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two pollfds for the duration of the call (a negative descriptor is skipped).
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, timeout_ms) };
        {
            if n > 0 && p[0].revents & libc::POLLIN != 0 {
                let mut buf = [0u8; 4096];
                while let Ok(n) = crate::read_fd(fd, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.extend(
                        buf[..n - n % 4]
                            .chunks_exact(4)
                            .map(|c| i32::from_ne_bytes(c.try_into().expect("4"))),
                    );
                    if n < buf.len() {
                        break;
                    }
                }
            }
        }
        out
    }
}

/// Opens `path` (not following a symbolic link) for reading, to hold a lease on it: without
/// updating its access time where the kernel allows it.
pub fn open_for_lease(path: &Path) -> io::Result<OwnedFd> {
    crate::open_to_read(path, libc::O_NOFOLLOW | libc::O_NONBLOCK).map(OwnedFd::from)
}

/// Takes a read lease on `fd`, whose break arrives as [`lease_signal`] naming `fd`. Fails with
/// `EAGAIN` while anyone has the file open for writing.
pub fn take_read_lease(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETSIG and F_SETLEASE take an int argument on a descriptor we hold.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), F_SETSIG, lease_signal()) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) })?;
    // the lease names the thread that took it as the one to tell, and a thread that has ended
    // is told nothing (the writer would wait out the whole break time): the process is told
    // SAFETY: F_SETOWN takes a process id.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETOWN, libc::getpid()) })
}

/// Lets the lease on `fd` go, keeping the descriptor open: a writer waiting on it goes on.
pub fn let_go(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETLEASE takes an int argument on a descriptor we hold.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) })
}

/// Whether the lease on `fd` is being broken (or gone).
pub fn lease_is_breaking(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETLEASE takes no argument.
    let l = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLEASE) };
    l != libc::F_RDLCK
}

/// `F_SETSIG` (fcntl.h; not in the libc crate).
const F_SETSIG: libc::c_int = 10;

/// `FAN_MARK_IGNORE` (Linux 6.0): an ignore mask that honours `FAN_EVENT_ON_CHILD`.
const FAN_MARK_IGNORE: libc::c_uint = 0x0000_0400;

/// Makes `group` ignore (`on`) or heed again the events in `mask` on the children of the folder
/// open as `dir` — also those its children's own marks ask for — but not on the folder itself.
pub fn fanotify_ignore_children(
    group: &OwnedFd,
    mask: u64,
    dir: BorrowedFd<'_>,
    on: bool,
) -> io::Result<()> {
    let how = if on {
        libc::FAN_MARK_ADD
    } else {
        libc::FAN_MARK_REMOVE
    };
    // SAFETY: group is a live fanotify descriptor; a null path marks what `dir` is open as.
    check(unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            how | FAN_MARK_IGNORE | libc::FAN_MARK_IGNORED_SURV_MODIFY,
            mask | libc::FAN_EVENT_ON_CHILD,
            dir.as_raw_fd(),
            std::ptr::null(),
        )
    })
}

/// Opens folder `path` (for marking it by descriptor: its path may change).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    // SAFETY: p is a valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    check(fd)?;
    // SAFETY: fd is a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The processes with a thread waiting for a lease to break now — whoever is opening for
/// writing, or truncating, a file someone holds a lease on: (process id, thread id). Reads
/// every thread's `wchan` (a millisecond for a few hundred threads).
pub fn waiting_breakers() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let wchan = std::fs::read(format!("/proc/{pid}/task/{tid}/wchan")).unwrap_or_default();
            if wchan.starts_with(b"__break_lease") {
                out.push((pid, tid));
            }
        }
    }
    out
}

/// The file a thread found by [`waiting_breakers`] waits to open for writing or to truncate,
/// as (device, inode) — read from what it asked the kernel (its `/proc/TID/syscall`, and the
/// path in its memory), resolved as that process sees paths (its root, working folder or
/// folder descriptor). None if that cannot be told (a system call not named here, a process
/// gone): then it may be waiting on any lease.
pub fn breaking_file(pid: u32, tid: u32) -> Option<(u64, u64)> {
    file_of_call(pid, tid, &crate::open::syscall_of(tid))
}

/// The processes whose main thread is in a system call that opens for writing or truncates one
/// of `files` (device, inode), with that file — a writer waiting on one of their leases, found without reading
/// every thread's `wchan` (each a symbol lookup in the kernel: 0.4 ms for the 120 threads of an
/// idle machine, most of the agent's time under a program that writes one document per
/// process). Each process's `/proc/PID/syscall` is read once: a thread running now is passed
/// over (look again).
pub fn main_threads_opening(files: &[(u64, u64)]) -> Vec<(u32, (u64, u64))> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    opening_among(
        procs
            .flatten()
            .filter_map(|p| p.file_name().to_str().and_then(|n| n.parse::<u32>().ok())),
        files,
    )
}

/// As [`main_threads_opening`], among processes `pids` only (the likely writers: a few reads).
pub fn opening_among(
    pids: impl IntoIterator<Item = u32>,
    files: &[(u64, u64)],
) -> Vec<(u32, (u64, u64))> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    for pid in pids {
        let Ok(line) = crate::open::read_small(&format!("/proc/{pid}/syscall"), &mut buf) else {
            continue;
        };
        let nr = line.split(|&b| b == b' ').next().unwrap_or_default();
        if !matches!(nr, b"2" | b"85" | b"76" | b"257" | b"437" | b"77") {
            continue;
        }
        let line = String::from_utf8_lossy(line);
        if let Some(f) = file_of_call(pid, pid, &line).filter(|f| files.contains(f)) {
            out.push((pid, f));
        }
    }
    out
}

/// The children of process `pid` (`/proc/PID/task/TID/children` of each of its threads).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let mut path = t.path();
        path.push("children");
        let children = std::fs::read_to_string(path).unwrap_or_default();
        out.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}

/// The file the system call in `line` (a `/proc/TID/syscall` line of thread `tid` of process
/// `pid`) opens or truncates.
fn file_of_call(pid: u32, tid: u32, line: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut parts = line.split_whitespace();
    let nr: i64 = parts.next()?.parse().ok()?;
    let args: Vec<u64> = parts
        .take(6)
        .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect();
    let arg = |i: usize| args.get(i).copied();
    let at_cwd = -100i32 as u32 as u64;
    // (folder descriptor or the working folder, path address)
    let (dirfd, addr) = match nr {
        2 | 85 | 76 => (at_cwd, arg(0)?), // open, creat, truncate
        257 | 437 => (arg(0)? & 0xffff_ffff, arg(1)?), // openat, openat2
        77 => {
            // ftruncate
            let fd = arg(0)? & 0xffff_ffff;
            let m = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
            return Some((m.dev(), m.ino()));
        }
        _ => return None,
    };
    let path = path_in_memory(tid, addr)?;
    let full = if path.starts_with('/') {
        format!("/proc/{pid}/root{path}")
    } else if dirfd == at_cwd {
        format!("/proc/{pid}/cwd/{path}")
    } else {
        format!("/proc/{pid}/fd/{dirfd}/{path}")
    };
    let m = std::fs::metadata(full).ok()?;
    Some((m.dev(), m.ino()))
}

/// The NUL-ended path at `addr` in thread `tid`'s memory (read page by page: the string may end
/// just before an unmapped one).
fn path_in_memory(tid: u32, addr: u64) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{tid}/mem")).ok()?;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let mut page = [0u8; 4096];
        let room = 4096 - (at % 4096) as usize;
        let n = mem.read_at(&mut page[..room], at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = page[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&page[..end]);
            return String::from_utf8(out).ok();
        }
        out.extend_from_slice(&page[..n]);
        at += n as u64;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn root_or_skip(what: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and not root: {what} needs root"
        );
        eprintln!("skipped: {what} needs root");
        false
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rampart-lease-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reading_a_document_through_a_guard_or_open_to_read_leaves_its_access_time() {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let d = scratch("atime");
        let doc = d.join("report.txt");
        std::fs::write(&doc, b"the original").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // read long ago, written since: an ordinary read updates the access time (relatime)
        let age = || {
            crate::set_times(&doc, (now - 1000, 0), (now - 10, 0)).unwrap();
        };
        let atime = || std::fs::symlink_metadata(&doc).unwrap().atime();
        let read_all = |mut f: std::fs::File| {
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            assert_eq!(v, b"the original");
        };
        age();
        read_all(std::fs::File::open(&doc).unwrap());
        if atime() == now - 1000 {
            // a folder mounted noatime: nothing to tell apart
            eprintln!("skipped: {} does not record access times", d.display());
            return;
        }
        age();
        read_all(crate::open_to_read(&doc, libc::O_NOFOLLOW).unwrap());
        assert_eq!(atime(), now - 1000, "open_to_read changed the access time");
        read_all(std::fs::File::from(open_for_lease(&doc).unwrap()));
        assert_eq!(
            atime(),
            now - 1000,
            "a guard's read changed the access time"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A writer waits on the lease until its holder lets go, the break names the holder's
    /// descriptor — also when the thread that took the lease has ended — and readers never wait.
    #[test]
    fn a_writer_waits_for_the_lease_and_the_break_names_it() {
        if !root_or_skip("taking a lease on a file of any owner") {
            return;
        }
        let dir = scratch("break");
        let doc = dir.join("doc.txt");
        std::fs::write(&doc, b"the original").unwrap();
        let breaks = LeaseBreaks::get().unwrap();
        let lease = {
            let doc = doc.clone();
            std::thread::spawn(move || {
                let fd = open_for_lease(&doc).unwrap();
                take_read_lease(fd.as_fd()).unwrap();
                fd
            })
            .join()
            .unwrap()
        };
        // reading does not break it
        assert_eq!(std::fs::read(&doc).unwrap(), b"the original");
        assert!(!lease_is_breaking(lease.as_fd()));
        let opened = Arc::new(AtomicBool::new(false));
        let writer = {
            let (doc, opened) = (doc.clone(), opened.clone());
            std::thread::spawn(move || {
                std::fs::write(&doc, b"changed").unwrap();
                opened.store(true, Ordering::SeqCst);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut named = Vec::new();
        while !named.contains(&lease.as_raw_fd()) {
            assert!(Instant::now() < deadline, "no break was announced");
            named.extend(breaks.wait(100));
        }
        assert!(lease_is_breaking(lease.as_fd()));
        // the writer is found waiting, and the file it waits for is told
        let doc_id = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&doc).unwrap();
            (m.dev(), m.ino())
        };
        let me = std::process::id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let waiting = loop {
            let mine: Vec<(u32, u32)> = waiting_breakers()
                .into_iter()
                .filter(|(pid, _)| *pid == me)
                .collect();
            if !mine.is_empty() {
                break mine;
            }
            assert!(Instant::now() < deadline, "the writer is not found waiting");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        assert_eq!(breaking_file(waiting[0].0, waiting[0].1), Some(doc_id));
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !opened.load(Ordering::SeqCst),
            "the writer did not wait for the lease"
        );
        // what the holder reads now is still the original
        let mut held = std::fs::File::from(lease.try_clone().unwrap());
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut held, &mut content).unwrap();
        assert_eq!(content, b"the original");
        drop(held);
        drop(lease);
        writer.join().unwrap();
        assert_eq!(std::fs::read(&doc).unwrap(), b"changed");
        // a process waiting to write is found by the file, from its main thread's system call;
        // and is not taken for a writer of another file
        let lease = open_for_lease(&doc).unwrap();
        take_read_lease(lease.as_fd()).unwrap();
        let mut writer = std::process::Command::new("sh")
            .args(["-c", "echo again >\"$0\""])
            .arg(&doc)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !main_threads_opening(&[doc_id]).contains(&(writer.id(), doc_id)) {
            assert!(
                Instant::now() < deadline,
                "the writing process was not found"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(opening_among([writer.id()], &[doc_id]).contains(&(writer.id(), doc_id)));
        assert!(children_of(std::process::id()).contains(&writer.id()));
        let other = (doc_id.0, doc_id.1 + 1_000_003);
        assert!(main_threads_opening(&[other])
            .iter()
            .all(|(pid, _)| *pid != writer.id()));
        // let go without closing: the writer goes on, the descriptor stays open (a hold)
        let_go(lease.as_fd()).unwrap();
        assert!(writer.wait().unwrap().success());
        assert_eq!(std::fs::read(&doc).unwrap(), b"again\n");
        assert!(crate::fstat(lease.as_fd()).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A folder's ignore mark silences the permission events its documents' own marks ask for,
    /// but not the folder's own; taken off, they come again.
    #[test]
    fn a_folders_ignore_mark_silences_its_documents_but_not_itself() {
        if !root_or_skip("a fanotify permission group") {
            return;
        }
        let dir = scratch("ignore");
        let doc = dir.join("doc.txt");
        std::fs::write(&doc, b"text").unwrap();
        // opened before it is marked (opening it after would wait for this thread's answer)
        let folder = open_dir(&dir).unwrap();
        let group = crate::fanotify_permission_group().unwrap();
        crate::fanotify_mark_inode(&group, libc::FAN_OPEN_PERM, &doc).unwrap();
        crate::fanotify_mark_inode(&group, libc::FAN_OPEN_PERM | libc::FAN_ONDIR, &dir).unwrap();
        let answer_all = |group: &OwnedFd, timeout: i32| -> usize {
            let mut n = 0;
            let mut buf = [0u8; 4096];
            while crate::poll_readable(group, timeout) {
                let len = crate::read_fd(group, &mut buf).unwrap_or(0);
                let mut at = 0;
                while at + 24 <= len {
                    let l = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                    let fd = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap());
                    if fd >= 0 {
                        crate::fanotify_answer(group, fd, true).unwrap();
                        crate::close_raw(fd);
                        n += 1;
                    }
                    at += l.max(24);
                }
                if n > 0 {
                    break;
                }
            }
            n
        };
        let opener =
            |path: std::path::PathBuf| std::thread::spawn(move || drop(std::fs::File::open(path)));
        let t = opener(dir.clone());
        assert_eq!(answer_all(&group, 2000), 1);
        t.join().unwrap();
        fanotify_ignore_children(&group, libc::FAN_OPEN_PERM, folder.as_fd(), true).unwrap();
        // the document: no event at all
        opener(doc.clone()).join().unwrap();
        assert_eq!(
            answer_all(&group, 100),
            0,
            "the document's open was not silenced"
        );
        // the folder itself: still seen
        let t = opener(dir.clone());
        assert_eq!(
            answer_all(&group, 2000),
            1,
            "the folder's own open was silenced"
        );
        t.join().unwrap();
        fanotify_ignore_children(&group, libc::FAN_OPEN_PERM, folder.as_fd(), false).unwrap();
        let t = opener(doc.clone());
        assert_eq!(
            answer_all(&group, 2000),
            1,
            "the document's open is not seen again"
        );
        t.join().unwrap();
        crate::fanotify_flush_marks(&group).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
