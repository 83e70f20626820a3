//! Every system call self-protection makes directly, in one place, each with its safety
//! argument. Everything else in the crate is safe code.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;

fn check(ret: libc::c_int) -> io::Result<()> {
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

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

/// Report the thread id, not the process id, in events (`FAN_REPORT_TID`).
pub const FAN_REPORT_TID: libc::c_uint = 0x0000_0100;

/// A fanotify group for permission decisions (`FAN_CLASS_CONTENT`), non-blocking reads.
pub fn fanotify_permission_group() -> io::Result<OwnedFd> {
    let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | FAN_REPORT_TID;
    // SAFETY: fanotify_init takes two integer flag sets and returns a new descriptor or -1.
    let fd =
        unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE) as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor this function owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `mask` to the marks of the inode at `path`.
pub fn fanotify_mark_inode(group: &OwnedFd, mask: u64, path: &Path) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: group is a live fanotify descriptor; p is a valid NUL-terminated path.
    check(unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            libc::FAN_MARK_ADD,
            mask,
            libc::AT_FDCWD,
            p.as_ptr(),
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
