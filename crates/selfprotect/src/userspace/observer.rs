//! The userspace tier's observer: a `tp_btf/signal_generate` program (`src/bpf/observer.bpf.c`)
//! that sees every signal sent to a protected process. It refuses nothing (this tier cannot),
//! but every attempt is reported with its author, at no cost to other work.

use std::mem::MaybeUninit;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags};
use rampart_protocol::tamper::{Outcome, TamperAttempt, Tier};

use crate::kernel::events::Decoder;
use crate::kernel::{TASK_PROTECTED, TASK_TRUSTED};
use crate::scope::Resolved;

#[allow(missing_docs, clippy::all, unsafe_code)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/observer.skel.rs"));
}
use skel::ObserverSkelBuilder;

/// The running observer; dropping it detaches the program.
pub struct Observer {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Watches `protected` (process ids); `trusted` may act on them unreported.
    pub fn start(
        protected: Vec<u32>,
        trusted: Vec<u32>,
        reports: mpsc::Sender<TamperAttempt>,
    ) -> Result<Observer, String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("selfprotect-observer".into())
            .spawn(move || run(protected, trusted, reports, stop_rx, ready_tx))
            .map_err(|e| e.to_string())?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Observer {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err("the observer thread died".into()),
        }
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

fn load<'obj>(
    open_object: &'obj mut MaybeUninit<libbpf_rs::OpenObject>,
    protected: &[u32],
    trusted: &[u32],
) -> Result<skel::ObserverSkel<'obj>, String> {
    let open = ObserverSkelBuilder::default()
        .open(open_object)
        .map_err(|e| format!("{e:#}"))?;
    let mut skel = open.load().map_err(|e| format!("loading: {e:#}"))?;
    let put = |skel: &mut skel::ObserverSkel<'obj>, pid: i32, flags: u32| {
        skel.maps
            .watched
            .update(&pid.to_ne_bytes(), &flags.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| format!("{e:#}"))
    };
    for pid in protected {
        put(&mut skel, *pid as i32, TASK_PROTECTED)?;
    }
    for pid in trusted {
        let flags = if protected.contains(pid) {
            TASK_PROTECTED | TASK_TRUSTED
        } else {
            TASK_TRUSTED
        };
        put(&mut skel, *pid as i32, flags)?;
    }
    skel.attach().map_err(|e| format!("attaching: {e:#}"))?;
    Ok(skel)
}

fn run(
    protected: Vec<u32>,
    trusted: Vec<u32>,
    reports: mpsc::Sender<TamperAttempt>,
    stop: mpsc::Receiver<()>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut open_object = MaybeUninit::uninit();
    let loaded = load(&mut open_object, &protected, &trusted);
    let skel = match loaded {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let decoder = Decoder::new(Resolved::default());
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    if let Err(e) = builder.add(&skel.maps.observed, |data: &[u8]| {
        if let Some(mut a) = decoder.decode(data) {
            a.tier = Tier::Userspace;
            a.outcome = Outcome::Observed;
            let _ = reports.send(a);
        }
        0
    }) {
        let _ = ready.send(Err(format!("{e:#}")));
        return;
    }
    let ring = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("{e:#}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        let _ = ring.poll(Duration::from_millis(100));
        match stop.try_recv() {
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
    }
    drop(ring);
    drop(skel);
}
