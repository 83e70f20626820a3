//! Every system call Rampart makes directly, in one place, each with its safety argument:
//! fanotify (permission, notification and mount groups), processes (ptrace, wait, pidfds,
//! signals, spawning with inherited descriptors, their creation announced by the proc connector:
//! [`forks`]), inode flags, file handles, extended attributes, times, mounts. The capability
//! crates (`selfprotect`, `ransomware`) are safe code above this seam; what a blocked open is
//! doing is read from `/proc` here too ([`open`]).
#![allow(unsafe_code)]

pub mod forks;
pub mod lease;
pub mod notify;
pub mod open;

use std::ffi::CString;
use std::io;

pub(crate) fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Mounts securityfs at /sys/kernel/security (to read the active LSMs).
pub fn mount_securityfs() -> io::Result<()> {
    let src = CString::new("securityfs").expect("no NUL");
    let target = CString::new("/sys/kernel/security").expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call;
    // data is null, which mount(2) accepts for securityfs.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    })
}

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

/// Report the thread id, not the process id, in events (`FAN_REPORT_TID`).
pub const FAN_REPORT_TID: libc::c_uint = 0x0000_0100;

/// A fanotify group for permission decisions (`FAN_CLASS_CONTENT`), non-blocking reads.
pub fn fanotify_permission_group() -> io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | FAN_REPORT_TID;
    // each event's descriptor reads the file without changing its access time (see
    // [`open_to_read`]); the process is root, so the kernel allows it for every file
    let event_flags = libc::O_RDONLY | libc::O_LARGEFILE | libc::O_NOATIME;
    // SAFETY: fanotify_init takes two integer flag sets and returns a new descriptor or -1.
    let fd = unsafe { libc::fanotify_init(flags, event_flags as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `mask` to the marks of the inode at `path` (a symbolic link is marked itself, never
/// followed).
pub fn fanotify_mark_inode(group: &OwnedFd, mask: u64, path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: group is a live fanotify descriptor; p is a valid NUL-terminated path.
    check(unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | libc::FAN_MARK_DONT_FOLLOW,
            mask,
            libc::AT_FDCWD,
            p.as_ptr(),
        )
    })
}

/// Marks the inode `fd` is open on, as [`fanotify_mark_inode`] does by path: no path walked
/// again (a document just opened is marked through its descriptor).
pub fn fanotify_mark_fd(group: &OwnedFd, mask: u64, fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: group and fd are live descriptors; a null path marks the object dirfd is open on.
    check(unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD,
            mask,
            fd.as_raw_fd(),
            std::ptr::null(),
        )
    })
}

/// Removes every inode mark of `group`: from then on no new event is queued for them.
pub fn fanotify_flush_marks(group: &OwnedFd) -> io::Result<()> {
    // SAFETY: group is a live fanotify descriptor; FAN_MARK_FLUSH takes no path (null).
    check(unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_FLUSH,
            0,
            libc::AT_FDCWD,
            std::ptr::null(),
        )
    })
}

/// Answers permission event `event_fd`: allow or deny.
pub fn fanotify_answer(group: &OwnedFd, event_fd: i32, allow: bool) -> io::Result<()> {
    let response = libc::fanotify_response {
        fd: event_fd,
        response: if allow {
            libc::FAN_ALLOW
        } else {
            libc::FAN_DENY
        },
    };
    // SAFETY: writes exactly one fanotify_response from a live local value to the group fd.
    let n = unsafe {
        libc::write(
            group.as_raw_fd(),
            (&response as *const libc::fanotify_response).cast(),
            std::mem::size_of::<libc::fanotify_response>(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Denies the permission events another reader of `group` read but never answered (it died
/// between reading and answering): an answer names its event by descriptor number, so every
/// number up to `max_fd` is tried. Call only when no other process reads the group. Returns how
/// many were answered.
pub fn fanotify_deny_leftovers(group: &OwnedFd, max_fd: i32) -> usize {
    (0..=max_fd)
        .filter(|fd| fanotify_answer(group, *fd, false).is_ok())
        .count()
}

/// Reads pending events into `buf`; Ok(0) when none are pending.
pub fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// Waits until `fd` is readable or `timeout_ms` passes; true if readable.
pub fn poll_readable(fd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n > 0 && (p.revents & libc::POLLIN) != 0
}

/// Whether descriptor `fd` (open for the call's duration) is readable, waiting up to
/// `timeout_ms` (for a descriptor another library owns, like a ring buffer's epoll).
pub fn poll_readable_raw(fd: RawFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd for the duration of the call; a closed descriptor gives POLLNVAL.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n > 0 && (p.revents & libc::POLLIN) != 0
}

/// Whether `a` and `b` are readable, waiting up to `timeout_ms` for either.
pub fn poll_readable_either(a: &OwnedFd, b: &OwnedFd, timeout_ms: i32) -> (bool, bool) {
    let mut p = [a, b].map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: two valid pollfds for the duration of the call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), 2, timeout_ms) };
    let ready = |i: usize| n > 0 && (p[i].revents & libc::POLLIN) != 0;
    (ready(0), ready(1))
}

/// An eventfd (non-blocking): one thread's way to wake another that polls it.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the eventfd `fd` readable.
pub fn eventfd_post(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local; a full counter (EAGAIN) is readable already.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Clears the eventfd `fd` (readable again at the next post).
pub fn eventfd_take(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a local; nothing posted (EAGAIN) leaves it as it is.
    unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// Takes ownership of the descriptor a fanotify event carries (closed when dropped).
pub fn own_event_fd(fd: i32) -> OwnedFd {
    // SAFETY: the kernel opened this descriptor for this process when the event was read; it
    // is owned nowhere else, and is owned once here.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// What `fstat` tells of an open file (without the descriptor copy `File::metadata` needs).
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    nlink: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stat {
    /// The device.
    pub fn dev(&self) -> u64 {
        self.dev
    }
    /// The inode.
    pub fn ino(&self) -> u64 {
        self.ino
    }
    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// Whether it is a folder.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    /// How many names it has (0: removed, alive only through its open descriptors).
    pub fn nlink(&self) -> u64 {
        self.nlink
    }
    /// When its status last changed (seconds, nanoseconds).
    pub fn ctime(&self) -> (i64, i64) {
        self.ctime
    }
    /// When its content last changed (seconds, nanoseconds).
    pub fn mtime(&self) -> (i64, i64) {
        self.mtime
    }

    /// What `fstat`, `fstatat` filled in.
    fn of(st: &libc::stat) -> Stat {
        Stat {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mode: st.st_mode,
            nlink: st.st_nlink,
            ctime: (st.st_ctime, st.st_ctime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
        }
    }
}

/// `fstat` of an open descriptor.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    // SAFETY: libc::stat is plain data; zero is a valid start for every field.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a live descriptor, st a valid out-pointer of the right type.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(Stat::of(&st))
}

/// The identifier of the filesystem `path` is on (`f_fsid` of `statfs`), as fanotify names
/// it in its events' records.
pub fn fsid(path: &Path) -> io::Result<[u8; 8]> {
    let p = cpath(path)?;
    // SAFETY: libc::statfs is plain data; zero is a valid start for every field.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: p is a valid NUL-terminated path, st a valid out-pointer of the right type.
    check(unsafe { libc::statfs(p.as_ptr(), &mut st) })?;
    // SAFETY: fsid_t is two ints, eight bytes of plain data, as the kernel copies them out.
    Ok(unsafe { std::mem::transmute::<libc::fsid_t, [u8; 8]>(st.f_fsid) })
}

/// The status of `path` itself (a symbolic link is not followed).
pub fn lstat(path: &Path) -> io::Result<Stat> {
    let p = cpath(path)?;
    // SAFETY: libc::stat is plain data; zero is a valid start for every field.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: p is a valid NUL-terminated path, st a valid out-pointer of the right type.
    check(unsafe { libc::lstat(p.as_ptr(), &mut st) })?;
    Ok(Stat::of(&st))
}

/// Closes a raw descriptor received in a fanotify event.
pub fn close_raw(fd: i32) {
    // SAFETY: the event's descriptor was opened for us by the kernel and is closed once here.
    unsafe {
        libc::close(fd);
    }
}

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
/// The immutable attribute (`chattr +i`).
pub const FS_IMMUTABLE_FL: libc::c_long = 0x0000_0010;

/// Opens `path` (file or folder, links not followed) to carry inode-flag ioctls, and reads its
/// flags.
fn inode_flags(path: &Path) -> io::Result<(OwnedFd, libc::c_long)> {
    let p = cpath(path)?;
    // SAFETY: opens a path we own for reading only, to carry the ioctl.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) })?;
    Ok((fd, flags))
}

/// Sets or clears the immutable attribute of `path` (a file or folder; links are not followed).
pub fn set_immutable(path: &Path, on: bool) -> io::Result<()> {
    let (fd, flags) = inode_flags(path)?;
    let wanted = if on {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if wanted != flags {
        // SAFETY: FS_IOC_SETFLAGS reads one long from `wanted`.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_SETFLAGS, &wanted) })?;
    }
    Ok(())
}

/// Makes `dst` share the content of `src` (a reflink: `FICLONE`), where the filesystem can
/// (btrfs, XFS, bcachefs); elsewhere an error (`EOPNOTSUPP`, `EXDEV`, `EINVAL`) and nothing done.
pub fn reflink(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both stay open for the call.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) })
}

/// This process's limit of open descriptors (the soft limit in force).
pub fn open_files_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } < 0 {
        return 1024;
    }
    l.rlim_cur
}

/// Raises this process's limit of open descriptors to the hard limit (ransomware protection
/// holds documents open by the thousand); returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit struct we own.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) })?;
    // as far as the kernel allows (root may raise the hard limit too), else the hard limit
    let most = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(l.rlim_max)
        .min(1 << 20);
    if most > l.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: most,
            rlim_max: most,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(most);
        }
    }
    if l.rlim_cur < l.rlim_max {
        l.rlim_cur = l.rlim_max;
        // SAFETY: as above.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) })?;
    }
    Ok(l.rlim_cur)
}

/// Whether `path` carries the immutable attribute.
pub fn is_immutable(path: &Path) -> io::Result<bool> {
    Ok(inode_flags(path)?.1 & FS_IMMUTABLE_FL != 0)
}

/// Detaches whatever is mounted at `path` (`umount2(MNT_DETACH)`).
pub fn detach_mount(path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is a valid NUL-terminated path.
    check(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) })
}

/// Waits until the mount table behind `mountinfo` changes (POLLPRI) or `timeout_ms` passes.
pub fn poll_mount_change(mountinfo: &std::fs::File, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: mountinfo.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    n > 0 && (p.revents & (libc::POLLPRI | libc::POLLERR)) != 0
}

// ---- processes: ptrace, wait, pidfds, signals (the userspace tier's supervisor) ----

/// Seizes thread `tid` for tracing (`PTRACE_SEIZE`), with `options`, without stopping it.
pub fn ptrace_seize(tid: u32, options: libc::c_int) -> io::Result<()> {
    // SAFETY: PTRACE_SEIZE takes a tid and an options word in `data`; `addr` is unused.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            tid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            options as libc::c_long as *mut libc::c_void,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resumes a stopped tracee, delivering `signal` (0 for none).
pub fn ptrace_cont(tid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: PTRACE_CONT takes a tid and the signal to deliver in `data`.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            tid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            signal as libc::c_long as *mut libc::c_void,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Who sent the signal a tracee is stopped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalSender {
    /// `si_code`: positive when the kernel raised it, `SI_USER`/`SI_QUEUE`/`SI_TKILL` from a process.
    pub code: i32,
    /// Sending process, for signals sent by a process.
    pub pid: u32,
    /// Its real user id.
    pub uid: u32,
}

/// Reads the siginfo of the signal tracee `tid` is stopped with.
pub fn ptrace_sender(tid: u32) -> io::Result<SignalSender> {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: PTRACE_GETSIGINFO writes one siginfo_t into `data`, which points to enough room.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            tid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            info.as_mut_ptr().cast::<libc::c_void>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the structure; si_pid/si_uid are read as the kill layout, which
    // is what user-sent signals carry (for kernel-raised ones the caller looks at `code` only).
    let info = unsafe { info.assume_init() };
    // SAFETY: as above.
    let (pid, uid) = unsafe { (info.si_pid(), info.si_uid()) };
    Ok(SignalSender {
        code: info.si_code,
        pid: pid.max(0) as u32,
        uid,
    })
}

/// What `wait_any` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Thread `tid` exited with `code`.
    Exited(u32, i32),
    /// Thread `tid` was killed by `signal`.
    Killed(u32, i32),
    /// Thread `tid` stopped with `signal`; `event` is the ptrace event (0 for a signal-delivery
    /// stop).
    Stopped {
        /// The thread.
        tid: u32,
        /// The signal it stopped with.
        signal: i32,
        /// The ptrace event (`status >> 16`).
        event: i32,
    },
}

/// Waits for any child or tracee (`__WALL`); `Ok(None)` if there is none.
pub fn wait_any() -> io::Result<Option<Waited>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes the status into a local int.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
    if pid < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ECHILD) => Ok(None),
            Some(libc::EINTR) => wait_any(),
            _ => Err(e),
        };
    }
    let tid = pid as u32;
    Ok(Some(if libc::WIFEXITED(status) {
        Waited::Exited(tid, libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Waited::Killed(tid, libc::WTERMSIG(status))
    } else {
        Waited::Stopped {
            tid,
            signal: libc::WSTOPSIG(status),
            event: status >> 16,
        }
    }))
}

/// A pidfd for process `pid`: readable once the process has exited.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and has no memory effects.
    check(unsafe { libc::kill(pid as libc::pid_t, signal) })
}

/// Ignores every signal that can be ignored, except SIGCHLD (the supervisor waits for its
/// child), so only SIGKILL and SIGSTOP still act on this process.
pub fn ignore_signals() {
    for signal in 1..=64 {
        if matches!(signal, libc::SIGKILL | libc::SIGSTOP | libc::SIGCHLD) {
            continue;
        }
        // SAFETY: installing SIG_IGN stores no pointer to our memory; invalid numbers just fail.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}

/// Starts a new session, leaving the caller's process group (a group kill of the process it
/// supervises does not reach it).
pub fn new_session() {
    // SAFETY: setsid takes no arguments; failing (already a group leader) changes nothing.
    unsafe {
        libc::setsid();
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the local array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: two fresh descriptors this function owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a live descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    check(flags)?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })
}

/// Takes ownership of descriptor `fd`, inherited from the process that started this one, and
/// makes it close-on-exec. Fails if `fd` is not open.
pub fn adopt_inherited_fd(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_SETFD on an integer; fails with EBADF if it is not an open descriptor.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open and nothing else in this process owns it (it was
    // inherited for this purpose and is adopted once).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Spawns `cmd` with `keep` inherited by the child (every other descriptor stays
/// close-on-exec).
pub fn spawn_keeping(
    cmd: &mut std::process::Command,
    keep: Vec<i32>,
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls fcntl, which
    // is async-signal-safe; `keep` was moved in before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &keep {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Stops the kernel from signalling this process when a child stops or continues
/// (`SA_NOCLDSTOP`): a traced process whose supervisor is its child and is stopped would
/// otherwise hold a thread in a signal stop that only the stopped supervisor could end.
pub fn no_child_stop_signals() -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "default handler, empty mask"; we only set flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = libc::SIG_DFL;
    action.sa_flags = libc::SA_NOCLDSTOP;
    // SAFETY: installs the default action with a flag; stores no pointer to our memory.
    check(unsafe { libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()) })
}

/// Blocks every signal that can be blocked in the calling thread, so signals sent to the
/// process are taken by other threads (this one must keep running while they wait).
pub fn block_signals_in_this_thread() {
    // SAFETY: sigfillset initialises the local set; pthread_sigmask only reads it.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// The calling thread's id (its `/proc/self/task` entry).
pub fn this_thread_id() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Lets a write to a closed pipe end the process, as it ends any other command-line tool
/// (`rampart … | head`): Rust programs ignore `SIGPIPE`, and a print to a closed pipe panics.
/// For commands that print and exit, never for the daemons.
pub fn end_on_broken_pipe() {
    // SAFETY: restores the default disposition of one signal; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Gives the calling thread a scheduling weight above the rest of the host's (nice `nice`):
/// for a thread that answers permission events, whose every moment off the CPU is a moment
/// some opener waits. Errors are returned (an unprivileged agent in a test keeps its weight).
pub fn favour_this_thread(nice: i32) -> io::Result<()> {
    // SAFETY: gettid has no arguments; setpriority reads its three integers only.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---- the healer: fanotify notifications with file handles, handles, xattrs, times ----

/// A fanotify group for notifications about names in folders (`FAN_REPORT_DFID_NAME`: each
/// event names the folder by file handle, and the entry), non-blocking reads. Events carry the
/// acting process's id.
pub fn fanotify_notification_group() -> io::Result<OwnedFd> {
    let flags =
        libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME;
    // SAFETY: fanotify_init takes two integer flag sets and returns a new descriptor or -1.
    let fd =
        unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// As [`fanotify_notification_group`], and each event also names the file itself by its handle
/// (`FAN_REPORT_FID | FAN_REPORT_TARGET_FID`: the file made, deleted, renamed or closed, see
/// [`notify::Change::object`](crate::notify::Change::object)) — a name may be another file's by
/// the time an event is read. Where the kernel refuses that (before 5.17), the plain group:
/// the second value tells which.
pub fn fanotify_notification_group_naming_files() -> io::Result<(OwnedFd, bool)> {
    let flags = libc::FAN_CLASS_NOTIF
        | libc::FAN_CLOEXEC
        | libc::FAN_NONBLOCK
        | libc::FAN_REPORT_DFID_NAME_TARGET;
    // SAFETY: fanotify_init takes two integer flag sets and returns a new descriptor or -1.
    let fd =
        unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint) };
    if fd >= 0 {
        // SAFETY: fd is a fresh descriptor this function owns.
        return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, true));
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EINVAL) => fanotify_notification_group().map(|g| (g, false)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// When the file open as `fd` was made (`statx` `STATX_BTIME`: seconds, nanoseconds), where the
/// filesystem records it: it tells one file from another given the same inode number later.
pub fn birth_time(fd: BorrowedFd<'_>) -> Option<(i64, u32)> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: fd is a live descriptor; the empty path with AT_EMPTY_PATH names it; stx is a
    // writable statx the kernel fills.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BTIME,
            stx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: statx returned 0: the kernel filled stx (zeroed before, so fully initialised).
    let stx = unsafe { stx.assume_init() };
    (stx.stx_mask & libc::STATX_BTIME != 0).then_some((stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec))
}

/// A file handle as `name_to_handle_at` and fanotify report it: its type and bytes.
pub type Handle = (i32, Vec<u8>);

const MAX_HANDLE: usize = 128;

/// The file handle of `path` (links not followed).
pub fn name_to_handle(path: &Path) -> io::Result<Handle> {
    let p = cpath(path)?;
    handle_at(libc::AT_FDCWD, &p, 0)
}

/// The file handle of the file open as `fd`.
pub fn handle_of(fd: BorrowedFd<'_>) -> io::Result<Handle> {
    handle_at(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

fn handle_at(dirfd: libc::c_int, p: &std::ffi::CStr, flags: libc::c_int) -> io::Result<Handle> {
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, u64-aligned
    let mut buf = [0u64; 1 + MAX_HANDLE / 8];
    let head = buf.as_mut_ptr().cast::<u32>();
    // SAFETY: buf has room for the header and MAX_HANDLE bytes; we set handle_bytes first.
    unsafe { *head = MAX_HANDLE as u32 };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: p is a valid C string (a path, or empty with AT_EMPTY_PATH and an open dirfd); buf is a file_handle with room for MAX_HANDLE bytes; mount_id is
    // a local int.
    check(unsafe {
        libc::name_to_handle_at(
            dirfd,
            p.as_ptr(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            flags,
        )
    })?;
    // SAFETY: the kernel filled handle_bytes (<= MAX_HANDLE), handle_type and the bytes.
    let (len, ty) = unsafe { (*head as usize, *head.add(1) as i32) };
    let bytes = buf.as_ptr().cast::<u8>();
    // SAFETY: the len bytes after the 8-byte header are within buf.
    let data = unsafe { std::slice::from_raw_parts(bytes.add(8), len.min(MAX_HANDLE)) }.to_vec();
    Ok((ty, data))
}

/// Opens the object `handle` names (`O_PATH`), on the filesystem of `mount_fd`.
pub fn open_by_handle(mount_fd: &OwnedFd, handle: &Handle) -> io::Result<OwnedFd> {
    open_by_handle_with(mount_fd, handle, libc::O_PATH)
}

/// Opens the file `handle` names (on the filesystem of `mount_fd`) for reading, not waiting on
/// a lease (`O_NONBLOCK`) and without updating its access time where the kernel allows it (as
/// [`open_to_read`]).
pub fn open_by_handle_to_read(mount_fd: &OwnedFd, handle: &Handle) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    match open_by_handle_with(mount_fd, handle, flags | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            open_by_handle_with(mount_fd, handle, flags)
        }
        other => other,
    }
}

fn open_by_handle_with(
    mount_fd: &OwnedFd,
    handle: &Handle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let (ty, data) = handle;
    if data.len() > MAX_HANDLE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "handle too long",
        ));
    }
    let mut buf = [0u64; 1 + MAX_HANDLE / 8];
    let head = buf.as_mut_ptr().cast::<u32>();
    // SAFETY: writes the header and at most MAX_HANDLE bytes into buf, which has room for them.
    unsafe {
        *head = data.len() as u32;
        *head.add(1).cast::<i32>() = *ty;
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            buf.as_mut_ptr().cast::<u8>().add(8),
            data.len(),
        );
    }
    // SAFETY: buf holds a valid file_handle; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            flags | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The extended attributes of `path` (links not followed), names and values.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let p = cpath(path)?;
    let mut names = vec![0u8; 4096];
    // SAFETY: names is a writable buffer of names.len() bytes.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let cname = CString::new(name).expect("xattr names have no NUL");
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: valid NUL-terminated strings and a writable buffer of value.len() bytes.
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            out.push((name.to_vec(), value));
        }
    }
    Ok(out)
}

/// Sets extended attribute `name` of `path` to `value` (links not followed).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated strings and a readable buffer of value.len() bytes.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Removes extended attribute `name` of `path` (links not followed).
pub fn remove_xattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) })
}

/// Sets the access and modification times of `path` (links not followed), in seconds and
/// nanoseconds.
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let p = cpath(path)?;
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: p is a valid path and times two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

const FAN_REPORT_MNT: libc::c_uint = 0x0000_4000;
const FAN_MARK_MNTNS: libc::c_uint = 0x0000_0110;
/// A mount was attached in the watched mount namespace.
pub const FAN_MNT_ATTACH: u64 = 0x0100_0000;

/// A fanotify group told of every mount attached in this process's mount namespace (kernel 6.15
/// and later), with the mounting process's id. Non-blocking reads.
pub fn fanotify_mount_group() -> io::Result<OwnedFd> {
    // SAFETY: fanotify_init takes two integer flag sets and returns a new descriptor or -1.
    let fd = unsafe {
        libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | FAN_REPORT_MNT,
            libc::O_RDONLY as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor this function owns.
    let group = unsafe { OwnedFd::from_raw_fd(fd) };
    let ns = std::fs::File::open("/proc/self/ns/mnt")?;
    // SAFETY: group is a live fanotify descriptor, ns an open namespace file; the path is null,
    // which FAN_MARK_MNTNS requires.
    check(unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD | FAN_MARK_MNTNS,
            FAN_MNT_ATTACH,
            ns.as_raw_fd(),
            std::ptr::null(),
        )
    })?;
    Ok(group)
}

/// Opens `path` for reading without changing its access time (`O_NOATIME`), with `flags`
/// besides (`O_NOFOLLOW`, `O_NONBLOCK`). A protection that reads the documents it looks at
/// must not leave its mark on them: with `relatime`, a read after a write updates the access
/// time — an inode change journalled like any other, on the way of the writer's next `fsync`,
/// and a false trail for whoever later asks when a file was last read. Where the kernel refuses
/// `O_NOATIME` (`EPERM`: a file the process does not own, without `CAP_FOWNER`), it is opened the
/// ordinary way.
pub fn open_to_read(path: &Path, flags: libc::c_int) -> io::Result<std::fs::File> {
    let p = cpath(path)?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | flags;
    // SAFETY: p is a valid NUL-terminated path; the result is a new descriptor or -1.
    let mut fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_NOATIME) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        // SAFETY: as above.
        fd = unsafe { libc::open(p.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A new `O_PATH` descriptor on what `fd` is open as (not sharing its open file: a lease on
/// `fd` ends when `fd` is closed, whatever this one does).
pub fn reopen_path(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let p = cpath(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))?;
    // SAFETY: p is a valid NUL-terminated path; the magic link is followed to the open file.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `O_PATH` descriptor on `path` (links not followed): it names the inode without opening
/// its content, so no fanotify permission event is raised, and keeps it alive once deleted.
pub fn open_path(path: &Path) -> io::Result<OwnedFd> {
    let p = cpath(path)?;
    // SAFETY: p is a valid NUL-terminated path; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The entries of the folder open as `dir` (names, and whether each is a regular file),
/// listed through that descriptor: no new open of the folder, so no fanotify permission event
/// (a permission handler may list a folder it is answering for).
pub fn list_dir_fd(
    dir: std::os::fd::BorrowedFd<'_>,
) -> io::Result<Vec<(std::ffi::OsString, bool)>> {
    use std::os::unix::ffi::OsStringExt;
    let own = dir.try_clone_to_owned()?;
    // SAFETY: fdopendir takes ownership of a valid directory descriptor (the duplicate).
    let stream = unsafe { libc::fdopendir(own.as_raw_fd()) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(own); // now owned by the stream, closed by closedir
                           // SAFETY: rewinds a valid stream (the duplicate shares the offset with the event's
                           // descriptor, which nobody else reads).
    unsafe { libc::rewinddir(stream) };
    let mut out = Vec::new();
    loop {
        // SAFETY: readdir on a valid stream returns an entry valid until the next call, or null.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array within the entry.
        let (name, ty) = unsafe {
            let e = &*entry;
            (
                std::ffi::CStr::from_ptr(e.d_name.as_ptr())
                    .to_bytes()
                    .to_vec(),
                e.d_type,
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        out.push((std::ffi::OsString::from_vec(name), ty == libc::DT_REG));
    }
    // SAFETY: closes the stream (and its descriptor) once.
    unsafe { libc::closedir(stream) };
    Ok(out)
}

/// `fstatat` of entry `name` of the folder open as `dir` (links not followed): one system call,
/// no descriptor.
pub fn stat_at(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<Stat> {
    let n = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name with a NUL byte"))?;
    // SAFETY: libc::stat is plain data; zero is a valid start for every field.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is a live descriptor, n a valid NUL-terminated name, st a valid out-pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            n.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(Stat::of(&st))
}

/// An `O_PATH` descriptor on entry `name` of the folder open as `dir` (links not followed).
pub fn open_path_at(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
) -> io::Result<OwnedFd> {
    let n = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name with a NUL byte"))?;
    // SAFETY: dir is a live descriptor, n a valid NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
