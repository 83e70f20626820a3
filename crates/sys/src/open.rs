//! What an open blocked in a fanotify permission event is about to do. fanotify does not say
//! how a file is being opened; the blocked thread's `/proc/TID/syscall` does (for `openat2`, its
//! `struct open_how` is read from the thread's memory).

/// What an open will do, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenKind {
    /// Read only.
    Read,
    /// Write, read-write, or truncate.
    Write,
    /// Read-only with O_NONBLOCK and O_NOFOLLOW: how chattr opens a file to change its flags.
    FlagChange,
    /// Could not be told (io_uring, an unknown system call): treated as a write.
    Unknown,
}

const O_ACCMODE: u64 = 0o3;
const O_TRUNC: u64 = 0o1000;
const O_NONBLOCK: u64 = 0o4000;
const O_NOFOLLOW: u64 = 0o400000;
const O_DIRECTORY: u64 = 0o200000;

fn classify_flags(flags: u64) -> OpenKind {
    if flags & O_ACCMODE != 0 || flags & O_TRUNC != 0 {
        OpenKind::Write
    } else if flags & O_NONBLOCK != 0 && flags & O_NOFOLLOW != 0 && flags & O_DIRECTORY == 0 {
        // how chattr opens; a folder walk (find, du, tar, rm -r) opens the same way but asks
        // for a folder, and must not be refused
        OpenKind::FlagChange
    } else {
        OpenKind::Read
    }
}

/// Classifies the open a thread is blocked in, from its `/proc/TID/syscall` line (x86-64
/// numbers). `read_open_how` reads the flags of an `openat2` from the thread's memory.
pub fn classify(syscall_line: &str, read_open_how: impl FnOnce(u64) -> Option<u64>) -> OpenKind {
    let mut parts = syscall_line.split_whitespace();
    let nr: i64 = match parts.next().and_then(|n| n.parse().ok()) {
        Some(n) => n,
        None => return OpenKind::Unknown,
    };
    let args: Vec<u64> = parts
        .take(6)
        .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect();
    let arg = |i: usize| args.get(i).copied();
    match nr {
        2 => arg(1).map(classify_flags).unwrap_or(OpenKind::Unknown), // open
        257 => arg(2).map(classify_flags).unwrap_or(OpenKind::Unknown), // openat
        85 => OpenKind::Write,                                        // creat
        437 => arg(2)
            .and_then(read_open_how)
            .map(classify_flags)
            .unwrap_or(OpenKind::Unknown), // openat2
        59 | 322 => OpenKind::Read, // execve, execveat: the kernel opens for execution
        _ => OpenKind::Unknown,
    }
}

/// Thread `tid`'s process id.
pub fn tgid_of(tid: u32) -> Option<u32> {
    // most openers are their process's main thread, which one system call tells: a null signal
    // to thread `tid` of process `tid` reaches it only if it leads its process (a pidfd took
    // 12–19 µs on an opener's way, the `status` file five system calls and forty lines)
    // SAFETY: tgkill with signal 0 sends nothing; it only checks that the thread exists.
    if unsafe { libc::syscall(libc::SYS_tgkill, tid as libc::pid_t, tid as libc::pid_t, 0) } == 0 {
        return Some(tid);
    }
    // else, most often, a thread of this very process (the agent's own writes to the vault and
    // its state, each an open its self-protection is asked about): one more such call (the
    // `status` file read for each was 4 % of the agent's CPU while the bench's `rsync` workload
    // had originals kept)
    let me = std::process::id();
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_tgkill, me as libc::pid_t, tid as libc::pid_t, 0) } == 0 {
        return Some(me);
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the flags of the `struct open_how` at `addr` in thread `tid`'s memory.
fn open_how_flags(tid: u32, addr: u64) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut mem = std::fs::File::open(format!("/proc/{tid}/mem")).ok()?;
    mem.seek(SeekFrom::Start(addr)).ok()?;
    let mut b = [0u8; 8];
    mem.read_exact(&mut b).ok()?;
    Some(u64::from_ne_bytes(b))
}

/// The system call thread `tid` is blocked in (`/proc/TID/syscall`). Openers waiting for an
/// answer share one wait queue, so any answer wakes them all for a moment, and a thread caught
/// awake reads `running`: it is looked at again until it sleeps (a few milliseconds at most).
pub(crate) fn syscall_of(tid: u32) -> String {
    let path = format!("/proc/{tid}/syscall");
    let mut buf = [0u8; 256];
    for attempt in 0..400 {
        match read_small(&path, &mut buf) {
            Ok(line) if line.starts_with(b"running") => {
                if attempt < 20 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(10));
                }
            }
            Ok(line) => return String::from_utf8_lossy(line).into_owned(),
            Err(_) => return String::new(),
        }
    }
    String::new()
}

/// The content of a small file (a `/proc` line), read with one `read` into `buf`: three system
/// calls where `read_to_string` takes five, on an opener's way.
pub fn read_small<'a>(path: &str, buf: &'a mut [u8]) -> std::io::Result<&'a [u8]> {
    use std::io::Read;
    let n = std::fs::File::open(path)?.read(buf)?;
    Ok(&buf[..n])
}

/// What the open thread `tid` is blocked in will do.
pub fn open_kind(tid: u32) -> OpenKind {
    classify(&syscall_of(tid), |addr| open_how_flags(tid, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_known_by_its_process() {
        let me = std::process::id();
        assert_eq!(tgid_of(me), Some(me));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        assert_eq!(tgid_of(tid), Some(me), "thread {tid}");
        drop(done_tx);
        t.join().unwrap();
    }

    #[test]
    fn classifies_opens_from_the_syscall_line() {
        let no_mem = |_| None;
        // openat(AT_FDCWD, path, O_RDONLY|O_CLOEXEC)
        assert_eq!(
            classify(
                "257 0xffffff9c 0x7ffd1 0x80000 0x0 0x0 0x0 0x7ffd 0x7f",
                no_mem
            ),
            OpenKind::Read
        );
        // openat(…, O_WRONLY|O_CREAT|O_TRUNC)
        assert_eq!(
            classify(
                "257 0xffffff9c 0x7ffd1 0x241 0x1b6 0x0 0x0 0x7ffd 0x7f",
                no_mem
            ),
            OpenKind::Write
        );
        // openat(…, O_RDWR)
        assert_eq!(
            classify("257 0xffffff9c 0x7ffd1 0x2 0x0 0x0 0x0 0x7ffd 0x7f", no_mem),
            OpenKind::Write
        );
        // open(path, O_RDONLY|O_TRUNC)
        assert_eq!(
            classify("2 0x7ffd1 0x200 0x0 0x0 0x0 0x0 0x7ffd 0x7f", no_mem),
            OpenKind::Write
        );
        // a folder walk: O_RDONLY|O_NONBLOCK|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC
        assert_eq!(
            classify(
                "257 0xffffff9c 0x7ffd1 0xb0800 0x0 0x0 0x0 0x7ffd 0x7f",
                no_mem
            ),
            OpenKind::Read
        );
        // chattr: O_RDONLY|O_NONBLOCK|O_LARGEFILE|O_NOFOLLOW
        assert_eq!(
            classify(
                "257 0xffffff9c 0x7ffd1 0x28800 0x0 0x0 0x0 0x7ffd 0x7f",
                no_mem
            ),
            OpenKind::FlagChange
        );
        // openat2 reads its flags from memory
        assert_eq!(
            classify(
                "437 0xffffff9c 0x7ffd1 0x7ffd2 0x18 0x0 0x0 0x7ffd 0x7f",
                |_| Some(1)
            ),
            OpenKind::Write
        );
        assert_eq!(
            classify(
                "437 0xffffff9c 0x7ffd1 0x7ffd2 0x18 0x0 0x0 0x7ffd 0x7f",
                |_| Some(0)
            ),
            OpenKind::Read
        );
        assert_eq!(
            classify(
                "437 0xffffff9c 0x7ffd1 0x7ffd2 0x18 0x0 0x0 0x7ffd 0x7f",
                no_mem
            ),
            OpenKind::Unknown
        );
        // execve, and lines that tell nothing
        assert_eq!(
            classify("59 0x1 0x2 0x3 0x0 0x0 0x0 0x7ffd 0x7f", no_mem),
            OpenKind::Read
        );
        assert_eq!(classify("running", no_mem), OpenKind::Unknown);
        assert_eq!(
            classify("426 0x3 0x1 0x0 0x0 0x0 0x0 0x7ffd 0x7f", no_mem),
            OpenKind::Unknown
        );
    }
}
