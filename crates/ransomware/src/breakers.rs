//! Who breaks a lease: the writers the kernel's lease tracepoints announce.
//!
//! A document in a calm folder is guarded by a read lease (see `monitor::calm`): a writer's
//! open waits until the agent lets the lease go, and the kernel tells the agent with a signal
//! that names the lease's descriptor — not the writer. Found from `/proc` (the likely writers'
//! system calls, else every process's), naming it took ~25 system calls while it waited. The
//! lease code's own tracepoints (`break_lease_block`, `break_lease_noblock`) fire in the writer
//! itself as it starts waiting (or, opening without waiting, as it is refused):
//! `src/bpf/breakers.bpf.c` writes each break, with the writer and the file, to a ring buffer
//! that wakes the lease thread at once — before the signal's handler has run.
//!
//! Breaks of every lease on the host are announced (few programs take leases: file servers'
//! delegations); what the agent does not guard it passes over. Where the kernel will not load
//! the programs, the signal alone tells of a break and the writer is looked for in `/proc`.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::rc::Rc;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::OpenObject;

#[allow(missing_docs, clippy::all, unsafe_code)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/breakers.skel.rs"));
}

/// A writer breaking a lease on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    /// Its process.
    pub pid: u32,
    /// Its thread.
    pub tid: u32,
    /// The file, as `stat` gives it: device and inode.
    pub file: (u64, u64),
}

/// The breaks announced by the tracepoints, read from their ring buffer.
pub struct Announcer<'obj> {
    /// The programs, attached while it lives.
    _skel: skel::BreakersSkel<'obj>,
    ring: libbpf_rs::RingBuffer<'static>,
    read: Rc<RefCell<Vec<Breaker>>>,
}

impl<'obj> Announcer<'obj> {
    /// Loads and attaches the programs (`object`: where their skeleton lives).
    pub fn load(object: &'obj mut MaybeUninit<OpenObject>) -> libbpf_rs::Result<Announcer<'obj>> {
        let mut skel = skel::BreakersSkelBuilder::default().open(object)?.load()?;
        skel.attach()?;
        let read = Rc::new(RefCell::new(Vec::new()));
        let into = read.clone();
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        builder.add(&skel.maps.breaks, move |data: &[u8]| {
            if let Some(b) = decode(data) {
                into.borrow_mut().push(b);
            }
            0
        })?;
        let ring = builder.build()?;
        Ok(Announcer {
            _skel: skel,
            ring,
            read,
        })
    }

    /// What to poll for announcements (readable while some wait to be read); open as long as
    /// `self`.
    pub fn fd(&self) -> RawFd {
        self.ring.epoll_fd()
    }

    /// The breaks announced since the last call, in order (read from memory: no system call
    /// on the writer's way). One the ring buffer had no room for is still told by its signal.
    pub fn take(&mut self) -> Vec<Breaker> {
        let _ = self.ring.consume();
        std::mem::take(&mut *self.read.borrow_mut())
    }
}

/// One announcement (`struct lb_break`: pid, tid, dev, ino).
fn decode(data: &[u8]) -> Option<Breaker> {
    use crate::creations::{u32_at, u64_at, user_dev};
    Some(Breaker {
        pid: u32_at(data, 0)?,
        tid: u32_at(data, 4)?,
        file: (user_dev(u64_at(data, 8)?), u64_at(data, 16)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_is_decoded_as_the_program_writes_it() {
        let mut rec = Vec::new();
        rec.extend(10u32.to_ne_bytes());
        rec.extend(11u32.to_ne_bytes());
        rec.extend(((8u64 << 20) | 1).to_ne_bytes());
        rec.extend(42u64.to_ne_bytes());
        assert_eq!(
            decode(&rec),
            Some(Breaker {
                pid: 10,
                tid: 11,
                file: (libc::makedev(8, 1), 42)
            })
        );
        assert_eq!(decode(&rec[..20]), None);
    }

    /// The real thing: a child process opening a leased file for writing is announced, with
    /// the file, as it starts to wait — and waits until the lease is let go (root only; skipped
    /// elsewhere, failed with `CI=true`).
    #[test]
    fn a_writer_breaking_a_lease_is_announced_with_the_file() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        use std::time::{Duration, Instant};
        let skip = |why: &str| {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {why}"
            );
            eprintln!("skipped: {why}");
        };
        if rampart_sys::lease::LeaseBreaks::get().is_err() {
            return skip("lease breaks cannot be listened to in this process");
        }
        let mut object = MaybeUninit::uninit();
        let mut announcer = match Announcer::load(&mut object) {
            Ok(a) => a,
            Err(e) => return skip(&format!("the lease-break tracepoints did not load: {e:#}")),
        };
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let doc = dir.path().join("doc.txt");
        std::fs::write(&doc, b"the original").unwrap();
        let m = std::fs::metadata(&doc).unwrap();
        let lease = rampart_sys::lease::open_for_lease(&doc).unwrap();
        if let Err(e) = rampart_sys::lease::take_read_lease(lease.as_fd()) {
            return skip(&format!("no lease: {e}"));
        }
        // nothing yet: reading breaks no lease
        assert_eq!(std::fs::read(&doc).unwrap(), b"the original");
        assert!(announcer
            .take()
            .iter()
            .all(|b| b.file != (m.dev(), m.ino())));
        let mut writer = std::process::Command::new("sh")
            .arg("-c")
            .arg("echo changed >\"$0\"")
            .arg(&doc)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let found = loop {
            let got = announcer.take();
            if let Some(b) = got.into_iter().find(|b| b.file == (m.dev(), m.ino())) {
                break b;
            }
            assert!(Instant::now() < deadline, "no break was announced");
            let _ = rampart_sys::poll_readable_raw(announcer.fd(), 100);
        };
        assert_eq!(found.pid, writer.id());
        assert_eq!(found.tid, writer.id());
        // it waits on the lease until it is let go
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            writer.try_wait().unwrap().is_none(),
            "the writer did not wait"
        );
        drop(lease);
        assert!(writer.wait().unwrap().success());
        assert_eq!(std::fs::read(&doc).unwrap(), b"changed\n");
    }
}
