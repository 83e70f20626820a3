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
