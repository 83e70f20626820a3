//! The supervisor: the second process of the userspace tier's pair (`rampart
//! selfprotect-supervisor`, started by the protected process through [`super::watchdog`]).
//!
//! It traces every thread of the protected process (`PTRACE_SEIZE`, new threads followed with
//! `PTRACE_O_TRACECLONE`), which does three things no other userspace mechanism can:
//!
//! - **signals are refused**: every signal another process sends stops the receiving thread in
//!   the kernel until the supervisor lets it go on; the supervisor lets it go on without the
//!   signal. SIGTERM, SIGSTOP, SIGHUP, … from anyone but the pair never arrive. (SIGKILL cannot
//!   be held back by anyone: see the next point.)
//! - **a killed process is started again** at once: the supervisor is told of the death by the
//!   kernel (it is the tracer) and starts the same command line with the same handover, so the
//!   new process adopts the fanotify group and the observer that never lapsed. The time from
//!   the death to the new process running under supervision is reported.
//! - **no debugger can attach**: a process has one tracer, and this is it (`strace -p`, `gdb -p`
//!   fail with EPERM).
//!
//! The supervisor also answers the shared fanotify permission group, so while the protected
//! process is down, opens of protected files wait for an answer from it instead of going
//! through unguarded. Catchable signals aimed at the supervisor itself are ignored; a SIGSTOP is
//! undone by the protected process ([`super::watchdog`]), a SIGKILL answered with a new
//! supervisor. Nothing here waits on the network or on disk.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use crate::sys::{self, Waited};
use crate::userspace::guard::{FileGuard, Gate};
use crate::userspace::handover::{Handover, SupervisorReport, BATON_GIVEN, BATON_TAKE, VAR};

/// si_code of signals sent by a process: SI_USER, SI_QUEUE, SI_TKILL.
const SENT_BY_A_PROCESS: [i32; 3] = [0, -1, -6];

/// The entry point of `rampart selfprotect-supervisor`: runs with the handover it was started
/// with. Returns the exit code.
pub fn main() -> i32 {
    match Handover::inherited() {
        Some(Ok(h)) => run(h),
        Some(Err(e)) => {
            eprintln!("rampart selfprotect-supervisor: {e}");
            2
        }
        None => {
            eprintln!(
                "rampart selfprotect-supervisor is started by the agent or the server itself, not by hand"
            );
            2
        }
    }
}

/// Runs the supervisor until the protected process exits by itself (status 0) or the
/// supervisor is killed. Returns the exit code.
pub fn run(handover: Handover) -> i32 {
    sys::new_session();
    sys::ignore_signals();
    let me = std::process::id();
    let trusted = Arc::new(RwLock::new(HashSet::from([me, handover.peer])));
    let (reports, attempts) = mpsc::channel();
    let pipe = match handover.reports_write.try_clone() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "supervisor: no report pipe");
            return 1;
        }
    };
    let writer = ReportWriter::new(pipe);
    {
        let writer = writer.clone();
        std::thread::Builder::new()
            .name("supervisor-reports".into())
            .spawn(move || {
                for a in attempts {
                    writer.send(&SupervisorReport::Attempt(a));
                }
            })
            .expect("spawning the supervisor's report thread");
    }
    // the protected process answers the file guard; this one only while it is down
    let gate = Gate::new(false);
    let _guard = match handover
        .guard
        .try_clone()
        .and_then(|g| FileGuard::answer(g, gate.clone(), trusted.clone(), reports))
    {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "supervisor: cannot answer the file guard");
            return 1;
        }
    };
    let mut protected = handover.peer;
    let mut tracer = Tracer::default();
    if let Err(e) = tracer.attach(protected) {
        tracing::error!(pid = protected, error = %e, "supervisor: cannot trace the protected process");
        return 1;
    }
    tracing::info!(pid = protected, "supervisor: tracing the protected process");
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    loop {
        let lost = match sys::wait_any() {
            Ok(Some(Waited::Stopped { tid, signal, event })) => {
                tracer.stopped(tid, signal, event, &trusted);
                None
            }
            Ok(Some(Waited::Exited(tid, code))) if tid == protected => Some((None, Some(code))),
            Ok(Some(Waited::Killed(tid, signal))) if tid == protected => Some((Some(signal), None)),
            Ok(Some(Waited::Exited(tid, _) | Waited::Killed(tid, _))) => {
                tracer.threads.remove(&tid);
                None
            }
            Ok(None) => {
                // nothing traced any more: the process is gone without a word to us, or was
                // detached; look again
                if std::path::Path::new(&format!("/proc/{protected}")).exists() {
                    std::thread::sleep(Duration::from_millis(10));
                    let _ = tracer.attach(protected);
                    None
                } else {
                    Some((None, None))
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "supervisor: wait failed");
                std::thread::sleep(Duration::from_millis(10));
                None
            }
        };
        let Some((signal, code)) = lost else {
            continue;
        };
        if code == Some(0) {
            tracing::info!(
                pid = protected,
                "supervisor: the protected process exited normally"
            );
            return 0;
        }
        let noticed = Instant::now();
        tracer.threads.clear();
        // events the lost process read and never answered are refused (their openers would
        // wait for ever), then this process answers until the new one takes over
        let left = sys::fanotify_deny_leftovers(&handover.guard, 1024);
        if left > 0 {
            tracing::warn!(
                left,
                "supervisor: refused opens the lost process had not answered"
            );
        }
        gate.open();
        // a process that keeps dying at once is started again more slowly
        restarts.retain(|t| noticed.duration_since(*t) < Duration::from_secs(10));
        if restarts.len() >= 5 {
            tracing::warn!("supervisor: the protected process keeps exiting; waiting 1 s");
            std::thread::sleep(Duration::from_secs(1));
        }
        restarts.push_back(noticed);
        let new_pid = match restart(&handover, me, protected, &gate) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "supervisor: cannot start the protected process again");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        {
            let mut t = trusted.write().expect("trusted lock");
            t.remove(&protected);
            t.insert(new_pid);
        }
        if let Err(e) = tracer.attach(new_pid) {
            tracing::error!(pid = new_pid, error = %e, "supervisor: cannot trace the new process");
        }
        let micros = noticed.elapsed().as_micros() as u64;
        tracing::warn!(
            old = protected,
            new = new_pid,
            ?signal,
            ?code,
            micros,
            "supervisor: restarted the protected process"
        );
        writer.send(&SupervisorReport::Restarted {
            pid: protected,
            signal,
            code,
            new_pid,
            micros,
        });
        protected = new_pid;
    }
}

/// Starts the protected process again: same program, same command line, the same handover
/// with this supervisor as its peer, in a process group of its own.
fn restart(handover: &Handover, me: u32, lost: u32, gate: &Arc<Gate>) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let mut h = handover.try_clone()?;
    h.peer = me;
    h.predecessor = Some(lost);
    let (mine, theirs) = std::os::unix::net::UnixStream::pair()?;
    h.baton = Some(OwnedFd::from(theirs));
    pass_baton(mine, gate.clone())?;
    let (keep, value) = h.encode();
    let args = &handover.restart_args;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(first) = args.first() {
        cmd.arg0(first);
    }
    cmd.args(args.iter().skip(1))
        .env(VAR, value)
        .stdin(std::process::Stdio::null())
        .process_group(0);
    let child = sys::spawn_keeping(&mut cmd, keep)?;
    // reaped through wait_any, as a tracee and child
    let pid = child.id();
    drop(h);
    Ok(pid)
}

/// Waits on this end of a baton for the new process to take over the file guard, then stops
/// answering it and says so.
fn pass_baton(mut baton: std::os::unix::net::UnixStream, gate: Arc<Gate>) -> std::io::Result<()> {
    use std::io::Read;
    std::thread::Builder::new()
        .name("supervisor-baton".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            if baton.read_exact(&mut b).is_ok() && b[0] == BATON_TAKE {
                gate.close();
                let _ = baton.write_all(&[BATON_GIVEN]);
            }
            // end of file: the new process is gone before taking over; the gate stays open
        })?;
    Ok(())
}

/// The traced threads and what to do when one stops.
#[derive(Default)]
struct Tracer {
    threads: HashSet<u32>,
}

impl Tracer {
    /// Seizes every thread of `pid`, again until no new one appears (threads started before
    /// their creator was seized are found on the next pass; later ones are followed).
    fn attach(&mut self, pid: u32) -> std::io::Result<()> {
        sys::ptrace_seize(pid, libc::PTRACE_O_TRACECLONE)?;
        self.threads.insert(pid);
        for _ in 0..8 {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
            let mut added = false;
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if self.threads.insert(tid) {
                    added = true;
                    if let Err(e) = sys::ptrace_seize(tid, libc::PTRACE_O_TRACECLONE) {
                        // EPERM: already followed through its creator's clone
                        tracing::debug!(tid, error = %e, "seize");
                    }
                }
            }
            if !added {
                break;
            }
        }
        Ok(())
    }

    fn stopped(&mut self, tid: u32, signal: i32, event: i32, trusted: &RwLock<HashSet<u32>>) {
        self.threads.insert(tid);
        let deliver = if event != 0 {
            // a new thread's first stop, a clone event, a group stop: just go on
            0
        } else {
            match sys::ptrace_sender(tid) {
                Ok(s) if SENT_BY_A_PROCESS.contains(&s.code) => {
                    let ours = trusted.read().map(|t| t.contains(&s.pid)).unwrap_or(false);
                    if ours {
                        signal
                    } else {
                        // the observer reports it with its author; here it is only held back
                        tracing::info!(
                            signal,
                            from = s.pid,
                            uid = s.uid,
                            "supervisor: held back a signal"
                        );
                        0
                    }
                }
                // raised by the kernel (a fault, a child's exit, a timer): delivered
                _ => signal,
            }
        };
        if let Err(e) = sys::ptrace_cont(tid, deliver) {
            tracing::debug!(tid, error = %e, "cont");
        }
    }
}

/// Writes reports into the pipe without ever blocking (a full pipe drops the report, logged).
#[derive(Clone)]
struct ReportWriter {
    pipe: Arc<std::sync::Mutex<std::fs::File>>,
}

impl ReportWriter {
    fn new(pipe: OwnedFd) -> ReportWriter {
        if let Err(e) = sys::set_nonblocking(&pipe) {
            tracing::warn!(error = %e, fd = pipe.as_raw_fd(), "report pipe stays blocking");
        }
        ReportWriter {
            pipe: Arc::new(std::sync::Mutex::new(std::fs::File::from(pipe))),
        }
    }

    fn send(&self, report: &SupervisorReport) {
        let mut line = serde_json::to_vec(report).expect("reports serialize");
        line.push(b'\n');
        let mut pipe = self.pipe.lock().expect("pipe lock");
        if let Err(e) = pipe.write_all(&line) {
            tracing::error!(error = %e, "supervisor: a report could not be written");
        }
    }
}
