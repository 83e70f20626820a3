//! The protected process's half of the userspace tier's pair: it starts the
//! [supervisor](super::supervisor) (or, when the supervisor started it, finds it), and watches
//! it. A supervisor that dies is started again at once (its pidfd becomes readable); one that is
//! stopped is continued; one that a debugger attached to is replaced (the debugger loses its
//! hold with it). What the supervisor reports through the pipe is turned into tamper reports.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rampart_protocol::tamper::{Action, Actor, Outcome, TamperAttempt, Target, Tier};

use crate::procinfo;
use crate::sys;
use crate::userspace::handover::{Handover, SupervisorReport, VAR};

/// How often the supervisor's state is looked at (stopped, traced): each look wakes a thread, which
/// costs tens of microseconds on a VM (at 20 ms this thread was the agent's second most wakeful).
/// Its death is seen at once (its pidfd), not on this tick.
const LOOK_EVERY_MS: i32 = 50;

/// Called with (previous supervisor, new supervisor) whenever the supervisor changes.
pub type OnSupervisor = Arc<dyn Fn(Option<u32>, u32) + Send + Sync>;

/// The watch over the supervisor.
pub struct Watchdog {
    supervisor: Arc<AtomicU32>,
    child: Arc<Mutex<Option<std::process::Child>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How to start a supervisor.
#[derive(Clone)]
struct Starter {
    handover: Arc<Handover>,
    args: Vec<String>,
}

impl Starter {
    fn spawn(&self) -> std::io::Result<std::process::Child> {
        let mut h = self.handover.try_clone()?;
        h.peer = std::process::id();
        let (keep, value) = h.encode();
        let mut cmd = std::process::Command::new("/proc/self/exe");
        if let Some(name) = std::env::args().next() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, name);
        }
        cmd.args(&self.args)
            .env(VAR, value)
            .stdin(std::process::Stdio::null());
        sys::spawn_keeping(&mut cmd, keep)
    }
}

impl Watchdog {
    /// Starts a supervisor with `supervisor_args` (the command line of `rampart
    /// selfprotect-supervisor`), or watches `existing`, the one that started this process.
    /// `handover` holds this process's copies of the shared objects.
    pub fn start(
        handover: Handover,
        supervisor_args: Vec<String>,
        existing: Option<u32>,
        on_supervisor: OnSupervisor,
        reports: mpsc::Sender<TamperAttempt>,
    ) -> std::io::Result<Watchdog> {
        sys::no_child_stop_signals()?;
        let pipe = handover.reports_read.try_clone()?;
        let starter = Starter {
            handover: Arc::new(handover),
            args: supervisor_args,
        };
        let child = Arc::new(Mutex::new(None));
        let pid = match existing {
            Some(p) => p,
            None => {
                let c = starter.spawn()?;
                let p = c.id();
                *child.lock().expect("child lock") = Some(c);
                p
            }
        };
        on_supervisor(None, pid);
        let supervisor = Arc::new(AtomicU32::new(pid));
        let stop = Arc::new(AtomicBool::new(false));
        let watch = {
            let (supervisor, child, stop, reports) = (
                supervisor.clone(),
                child.clone(),
                stop.clone(),
                reports.clone(),
            );
            std::thread::Builder::new()
                .name("selfprotect-watchdog".into())
                .spawn(move || watch(starter, supervisor, child, stop, on_supervisor, reports))?
        };
        let read = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("selfprotect-supervisor-reports".into())
                .spawn(move || read_reports(pipe, stop, reports))?
        };
        Ok(Watchdog {
            supervisor,
            child,
            stop,
            threads: vec![watch, read],
        })
    }

    /// The supervisor's process id right now.
    pub fn supervisor(&self) -> u32 {
        self.supervisor.load(Ordering::SeqCst)
    }

    /// A handle that follows the supervisor's process id (for deciding outcomes).
    pub fn supervisor_cell(&self) -> Arc<AtomicU32> {
        self.supervisor.clone()
    }

    /// Ends supervision: the supervisor is killed (the kernel then detaches it from this
    /// process) and not started again.
    pub fn stand_down(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let pid = self.supervisor();
        let _ = sys::kill(pid, libc::SIGKILL);
        match self.child.lock().expect("child lock").take() {
            Some(mut c) => {
                let _ = c.wait();
            }
            None => {
                // not our child (it started us): wait until it is gone
                for _ in 0..100 {
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if !self.stop.load(Ordering::SeqCst) {
            self.stop_all();
        }
    }
}

/// The supervisor's state letter and tracer, from `/proc/PID/status`.
fn state_of(pid: u32) -> Option<(char, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut state = None;
    let mut tracer = 0;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("State:") {
            state = v.trim().chars().next();
        } else if let Some(v) = line.strip_prefix("TracerPid:") {
            tracer = v.trim().parse().unwrap_or(0);
        }
    }
    Some((state?, tracer))
}

fn lost(pid: u32, outcome: Outcome, micros: Option<u64>) -> TamperAttempt {
    TamperAttempt {
        action: Action::ProcessLost,
        detail: None,
        target: Target {
            path: None,
            pid: Some(pid),
        },
        actor: Actor {
            comm: "unknown".into(),
            ..Default::default()
        },
        tier: Tier::Userspace,
        outcome,
        count: 1,
        repair_micros: micros,
    }
}

fn watch(
    starter: Starter,
    supervisor: Arc<AtomicU32>,
    child: Arc<Mutex<Option<std::process::Child>>>,
    stop: Arc<AtomicBool>,
    on_supervisor: OnSupervisor,
    reports: mpsc::Sender<TamperAttempt>,
) {
    // signals to this process go to other threads: this one must keep running when the
    // supervisor is stopped, as only it can continue the supervisor
    sys::block_signals_in_this_thread();
    let me = std::process::id();
    let mut pid = supervisor.load(Ordering::SeqCst);
    let mut pidfd = sys::pidfd_open(pid).ok();
    while !stop.load(Ordering::SeqCst) {
        let gone = match &pidfd {
            Some(fd) => sys::poll_readable(fd, LOOK_EVERY_MS),
            None => true,
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if !gone {
            match state_of(pid) {
                Some((_, tracer)) if tracer != 0 && tracer != me => {
                    // a debugger holds the supervisor: replace it, the debugger's hold goes with it
                    tracing::warn!(
                        pid,
                        tracer,
                        "a debugger attached to the supervisor; replacing it"
                    );
                    let mut a = lost(pid, Outcome::Repaired, None);
                    a.action = Action::Trace;
                    a.actor = procinfo::actor(tracer, tracer, 0, "", 0);
                    a.actor.comm = std::fs::read_to_string(format!("/proc/{tracer}/comm"))
                        .map(|c| c.trim().to_owned())
                        .unwrap_or_default();
                    let _ = reports.send(a);
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
                Some(('T', _)) => {
                    let _ = sys::kill(pid, libc::SIGCONT);
                }
                _ => {}
            }
            continue;
        }
        // the supervisor is gone: start another
        let started = std::time::Instant::now();
        if let Some(mut c) = child.lock().expect("child lock").take() {
            let _ = c.wait();
        }
        let new = loop {
            match starter.spawn() {
                Ok(c) => break c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the supervisor again");
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let new_pid = new.id();
        *child.lock().expect("child lock") = Some(new);
        on_supervisor(Some(pid), new_pid);
        supervisor.store(new_pid, Ordering::SeqCst);
        tracing::warn!(
            old = pid,
            new = new_pid,
            "the supervisor was lost and started again"
        );
        let _ = reports.send(lost(
            pid,
            Outcome::Repaired,
            Some(started.elapsed().as_micros() as u64),
        ));
        pid = new_pid;
        pidfd = sys::pidfd_open(pid).ok();
    }
}

fn read_reports(
    pipe: std::os::fd::OwnedFd,
    stop: Arc<AtomicBool>,
    reports: mpsc::Sender<TamperAttempt>,
) {
    if let Err(e) = sys::set_nonblocking(&pipe) {
        tracing::warn!(error = %e, "supervisor reports: pipe stays blocking");
    }
    let poll_fd = match pipe.try_clone() {
        Ok(f) => f,
        Err(_) => return,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::from(pipe));
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        if !sys::poll_readable(&poll_fd, 200) {
            continue;
        }
        // a line may arrive in parts: what was read stays in `line` until its newline
        loop {
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) if line.ends_with('\n') => {
                    forward(&line, &reports);
                    line.clear();
                }
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "supervisor reports: read failed");
                    line.clear();
                    break;
                }
            }
        }
    }
}

fn forward(line: &str, reports: &mpsc::Sender<TamperAttempt>) {
    match serde_json::from_str::<SupervisorReport>(line.trim()) {
        Ok(SupervisorReport::Attempt(a)) => {
            let _ = reports.send(a);
        }
        Ok(SupervisorReport::Restarted {
            pid,
            signal,
            code,
            new_pid,
            micros,
        }) => {
            tracing::warn!(
                pid,
                new_pid,
                ?signal,
                ?code,
                micros,
                "this process was started again by its supervisor"
            );
            let mut a = lost(pid, Outcome::Repaired, Some(micros));
            a.detail = signal.map(i64::from).or(code.map(|c| -i64::from(c)));
            let _ = reports.send(a);
        }
        Err(e) => tracing::warn!(error = %e, "supervisor reports: unreadable line"),
    }
}
