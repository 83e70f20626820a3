//! The userspace tier's observer: a `tp_btf/signal_generate` program (`src/bpf/observer.bpf.c`)
//! that sees every signal sent to a protected process and names its author, at no cost to other
//! work. It refuses nothing itself, with one exception: whoever sends SIGKILL to a protected
//! process is stopped before its `kill` returns (so one command cannot kill both processes of
//! the pair), to be continued once the killed one is back. What became of each signal (held
//! back by the supervisor, ignored, undone, answered with a restart), and continuing a stopped
//! sender, is the caller's [`OnSignal`].
//!
//! The program, its maps and its link outlive either process of the pair: the one that loaded
//! it hands duplicates of their descriptors over ([`ObserverFds`]), and a restarted process
//! adopts them ([`Observer::adopt`]), so the observation of the very signal that killed its
//! predecessor is still in the ring buffer when it starts reading.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle};
use rampart_protocol::tamper::{Outcome, TamperAttempt, Tier};

use crate::kernel::events::Decoder;
use crate::kernel::{TASK_PROTECTED, TASK_TRUSTED};
use crate::scope::Resolved;
use crate::userspace::handover::ObserverFds;

#[allow(missing_docs, clippy::all, unsafe_code)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/observer.skel.rs"));
}
use skel::ObserverSkelBuilder;

/// Decides what became of an observed signal, and does what must follow it (continuing a
/// sender of SIGKILL once the pair is whole again).
pub type OnSignal = Arc<dyn Fn(&TamperAttempt) -> Outcome + Send + Sync>;

/// The running observer; dropping it stops reading (the program stays attached while another
/// process holds its link).
pub struct Observer {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    fds: ObserverFds,
    watched: MapHandle,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn map_by_fd(fd: &OwnedFd) -> Result<MapHandle, String> {
    let info = libbpf_rs::MapInfo::new(fd.as_fd()).map_err(err)?;
    MapHandle::from_map_id(info.info.id).map_err(err)
}

impl Observer {
    /// Loads the program and watches `protected` (process ids); `trusted` may signal them
    /// unreported.
    pub fn start(
        protected: Vec<u32>,
        trusted: Vec<u32>,
        reports: mpsc::Sender<TamperAttempt>,
        outcome: OnSignal,
    ) -> Result<Observer, String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("selfprotect-observer".into())
            .spawn(move || run_loaded(protected, trusted, reports, outcome, stop_rx, ready_tx))
            .map_err(err)?;
        Self::started(thread, stop, ready_rx)
    }

    /// Reads an observer another process loaded and handed over.
    pub fn adopt(
        fds: ObserverFds,
        reports: mpsc::Sender<TamperAttempt>,
        outcome: OnSignal,
    ) -> Result<Observer, String> {
        let ring = map_by_fd(&fds.ring)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("selfprotect-observer".into())
            .spawn(move || {
                let _ = ready_tx.send(Ok(Some(fds)));
                read(&ring, reports, outcome, stop_rx);
            })
            .map_err(err)?;
        Self::started(thread, stop, ready_rx)
    }

    fn started(
        thread: JoinHandle<()>,
        stop: mpsc::Sender<()>,
        ready: mpsc::Receiver<Result<Option<ObserverFds>, String>>,
    ) -> Result<Observer, String> {
        match ready.recv() {
            Ok(Ok(Some(fds))) => {
                let watched = map_by_fd(&fds.watched)?;
                Ok(Observer {
                    stop,
                    thread: Some(thread),
                    fds,
                    watched,
                })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            _ => Err("the observer thread died".into()),
        }
    }

    /// Watches process `pid` (`TASK_PROTECTED` and/or `TASK_TRUSTED`).
    pub fn watch(&self, pid: u32, flags: u32) {
        if let Err(e) = self.watched.update(
            &(pid as i32).to_ne_bytes(),
            &flags.to_ne_bytes(),
            MapFlags::ANY,
        ) {
            tracing::warn!(pid, error = %e, "observer: could not watch a process");
        }
    }

    /// Stops watching process `pid`.
    pub fn forget(&self, pid: u32) {
        let _ = self.watched.delete(&(pid as i32).to_ne_bytes());
    }

    /// Stops watching every process (a restarted process clears its predecessor's entries).
    pub fn forget_all(&self) {
        let keys: Vec<Vec<u8>> = self.watched.keys().collect();
        for k in keys {
            let _ = self.watched.delete(&k);
        }
    }

    /// The program's descriptors, to hand over.
    pub fn fds(&self) -> &ObserverFds {
        &self.fds
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flags_of(pid: u32, protected: &[u32], trusted: &[u32]) -> u32 {
    (if protected.contains(&pid) {
        TASK_PROTECTED
    } else {
        0
    }) | (if trusted.contains(&pid) {
        TASK_TRUSTED
    } else {
        0
    })
}

fn load<'obj>(
    open_object: &'obj mut MaybeUninit<libbpf_rs::OpenObject>,
    protected: &[u32],
    trusted: &[u32],
) -> Result<(skel::ObserverSkel<'obj>, ObserverFds), String> {
    let open = ObserverSkelBuilder::default()
        .open(open_object)
        .map_err(|e| format!("{e:#}"))?;
    let mut skel = open.load().map_err(|e| format!("loading: {e:#}"))?;
    for pid in protected.iter().chain(trusted) {
        let flags = flags_of(*pid, protected, trusted);
        skel.maps
            .watched
            .update(
                &(*pid as i32).to_ne_bytes(),
                &flags.to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|e| format!("{e:#}"))?;
    }
    skel.attach().map_err(|e| format!("attaching: {e:#}"))?;
    let link = skel
        .links
        .rp_observe_signal
        .as_ref()
        .ok_or("the program attached without a link")?;
    let fds = ObserverFds {
        link: link.as_fd().try_clone_to_owned().map_err(err)?,
        ring: skel
            .maps
            .observed
            .as_fd()
            .try_clone_to_owned()
            .map_err(err)?,
        watched: skel
            .maps
            .watched
            .as_fd()
            .try_clone_to_owned()
            .map_err(err)?,
    };
    Ok((skel, fds))
}

fn run_loaded(
    protected: Vec<u32>,
    trusted: Vec<u32>,
    reports: mpsc::Sender<TamperAttempt>,
    outcome: OnSignal,
    stop: mpsc::Receiver<()>,
    ready: mpsc::Sender<Result<Option<ObserverFds>, String>>,
) {
    let mut open_object = MaybeUninit::uninit();
    let (skel, fds) = match load(&mut open_object, &protected, &trusted) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(Some(fds)));
    read(&skel.maps.observed, reports, outcome, stop);
    drop(skel);
}

fn read(
    ring_map: &dyn MapCore,
    reports: mpsc::Sender<TamperAttempt>,
    outcome: OnSignal,
    stop: mpsc::Receiver<()>,
) {
    let decoder = Decoder::new(Resolved::default());
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    if let Err(e) = builder.add(ring_map, |data: &[u8]| {
        if let Some(mut a) = decoder.decode(data) {
            a.tier = Tier::Userspace;
            a.outcome = outcome(&a);
            let _ = reports.send(a);
        }
        0
    }) {
        tracing::error!(error = %e, "observer: cannot read its ring buffer");
        return;
    }
    let ring = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "observer: cannot read its ring buffer");
            return;
        }
    };
    loop {
        let _ = ring.poll(Duration::from_millis(100));
        match stop.try_recv() {
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
    }
}
