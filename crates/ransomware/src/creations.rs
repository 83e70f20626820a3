//! Process creations — each fork of a process and each exec on the host — for the monitor's
//! lineage (who made a process gone before its changes were read) and for stopping copies of
//! blocked programs as they start.
//!
//! Read from the scheduler's own tracepoints (`tp_btf/sched_process_fork` and
//! `sched_process_exec`, `src/bpf/lineage.bpf.c`): each creation is written to a ring buffer
//! in the kernel, and the monitor reads it on a tick — nothing wakes it, and nothing is sent
//! anywhere on the process's own way. Where the kernel will not load them (no BTF, an older
//! kernel), the proc connector ([`rampart_sys::forks`]) is read instead: it sends a netlink
//! message to every listener at every fork, exec and exit of the host, which the forking
//! process pays for. Measured with the monitor alone on a `sqlite3`-per-row loop in a protected
//! folder (8 rounds of 300 processes, medians against no monitor): proc connector 1.102×,
//! tracepoints 1.085×, no source at all 1.090× — the tracepoints cost nothing measurable (an
//! earlier run: proc connector 1.096×, none 1.060×).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};
use rampart_sys::forks::{Fork, Read};

#[allow(missing_docs, clippy::all, unsafe_code)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/lineage.skel.rs"));
}

/// Where process creations are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The scheduler's tracepoints, through a ring buffer.
    Tracepoints,
    /// The proc connector (the kernel would not load the tracepoints).
    ProcConnector,
    /// Neither: changes of processes gone before they are read are attributed to no one.
    None,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Tracepoints => "tracepoints",
            Source::ProcConnector => "proc connector",
            Source::None => "none",
        })
    }
}

const FORK: u32 = 1;
const EXEC: u32 = 2;

/// Reads process creations every `every` until `stop`, giving each read to `each`: from the
/// tracepoints if the kernel loads them, else from the proc connector. Tells `ready` which, once
/// reading (`Source::None`: nothing to read, returns at once). Returns when stopped or when the
/// source fails (logged).
pub fn read_every(
    every: Duration,
    stop: &AtomicBool,
    ready: mpsc::Sender<Source>,
    mut each: impl FnMut(Read),
) {
    let mut open_object = MaybeUninit::uninit();
    let loaded = skel::LineageSkelBuilder::default()
        .open(&mut open_object)
        .and_then(|open| open.load())
        .and_then(|mut skel| skel.attach().map(|()| skel));
    match loaded {
        Ok(skel) => {
            let _ = ready.send(Source::Tracepoints);
            tracepoints(&skel, every, stop, &mut each);
            return;
        }
        Err(e) => tracing::warn!(
            error = %format!("{e:#}"),
            "ransomware: the kernel did not load the process-creation tracepoints: the proc connector is read instead (it costs every fork, exec and exit of the host more)"
        ),
    }
    let forks = match rampart_sys::forks::Forks::listen() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "ransomware: process creation is not announced (no tracepoints, no proc connector): changes of processes gone before they are read are attributed to no one"
            );
            let _ = ready.send(Source::None);
            return;
        }
    };
    let _ = ready.send(Source::ProcConnector);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(every);
        match forks.read(0) {
            Ok(read) => each(read),
            Err(e) => {
                tracing::warn!(error = %e, "ransomware: reading process creations failed");
                return;
            }
        }
    }
}

fn tracepoints(
    skel: &skel::LineageSkel<'_>,
    every: Duration,
    stop: &AtomicBool,
    each: &mut impl FnMut(Read),
) {
    let read = RefCell::new(Read::default());
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    let built = builder
        .add(&skel.maps.creations, |data: &[u8]| {
            decode(data, &mut read.borrow_mut());
            0
        })
        .map(|_| ())
        .and_then(|()| builder.build());
    let ring = match built {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "ransomware: cannot read the process-creation ring buffer");
            return;
        }
    };
    let mut lost_before = 0;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(every);
        if let Err(e) = ring.consume() {
            tracing::warn!(error = %e, "ransomware: reading process creations failed");
            return;
        }
        let lost = skel
            .maps
            .lost
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .and_then(|v| v.try_into().ok().map(u64::from_ne_bytes))
            .unwrap_or(0);
        let mut r = read.take();
        r.lost = lost > lost_before;
        lost_before = lost;
        if !r.forks.is_empty() || !r.execs.is_empty() || r.lost {
            each(r);
        }
    }
}

/// One announcement of the ring buffer (`struct rl_creation`) into `read`.
fn decode(data: &[u8], read: &mut Read) {
    let at = |i: usize| {
        data.get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    match (at(0), at(4), at(8)) {
        (Some(FORK), Some(parent), Some(child)) => read.forks.push(Fork { parent, child }),
        (Some(EXEC), _, Some(child)) => read.execs.push(child),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_decoded_as_the_program_writes_them() {
        let mut read = Read::default();
        let rec = |what: u32, parent: u32, child: u32| {
            [what, parent, child]
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect::<Vec<u8>>()
        };
        decode(&rec(FORK, 10, 11), &mut read);
        decode(&rec(EXEC, 0, 11), &mut read);
        decode(&rec(7, 1, 2), &mut read);
        decode(&[1, 0], &mut read);
        assert_eq!(
            read.forks,
            vec![Fork {
                parent: 10,
                child: 11
            }]
        );
        assert_eq!(read.execs, vec![11]);
    }

    /// The real thing: a fork of this test and the child's exec are announced (root only;
    /// skipped elsewhere, failed with `CI=true`).
    #[test]
    fn a_fork_and_its_exec_are_announced_by_the_tracepoints() {
        let stop = AtomicBool::new(false);
        let (ready_tx, ready) = mpsc::channel();
        let (reads_tx, reads) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                read_every(Duration::from_millis(5), &stop, ready_tx, |r| {
                    let _ = reads_tx.send(r);
                })
            });
            let source = ready.recv().unwrap();
            if source != Source::Tracepoints {
                stop.store(true, Ordering::SeqCst);
                let why =
                    format!("the process-creation tracepoints did not load (source: {source})");
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
                eprintln!("skipped: {why}");
                return;
            }
            let child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            let mut child = child;
            child.wait().unwrap();
            let (mut forked, mut execd) = (false, false);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !(forked && execd) && std::time::Instant::now() < deadline {
                if let Ok(r) = reads.recv_timeout(Duration::from_millis(100)) {
                    forked |= r
                        .forks
                        .iter()
                        .any(|f| f.child == pid && f.parent == std::process::id());
                    execd |= r.execs.contains(&pid);
                }
            }
            stop.store(true, Ordering::SeqCst);
            assert!(forked, "the fork of {pid} was not announced");
            assert!(execd, "the exec of {pid} was not announced");
        });
    }
}
