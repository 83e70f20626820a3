//! Self-protection as a process runs it (the agent, or the management server): which tier is in
//! force, what it covers, its state as reported, the unload that lifts it for a while, and the
//! tamper reports it makes. The caller says what to protect ([`Target`]); this process is
//! protected and trusted; nothing else on the host is touched.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rampart_protocol::checkin::{ProtectionState, ProtectionStatus};
use rampart_protocol::tamper::TamperAttempt;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use std::sync::atomic::{AtomicU32, Ordering};

use rampart_protocol::tamper::Outcome;

use crate::kernel::{KernelTier, KernelTierError, TASK_PROTECTED, TASK_TRUSTED};
use crate::scope::Scope;
use crate::userspace::guard::{self, FileGuard, Gate};
use crate::userspace::handover::{Handover, ObserverFds, BATON_GIVEN, BATON_TAKE};
use crate::userspace::heal::Healer;
use crate::userspace::immutable;
use crate::userspace::mounts::{self, MountRepair};
use crate::userspace::observer::{Observer, OnSignal};
use crate::userspace::watchdog::{OnSupervisor, Watchdog};

/// The protection's name in check-ins.
pub const NAME: &str = "self-protection";

/// How long an authorized unload lasts before self-protection locks again by itself.
pub const UNLOAD_PERIOD: Duration = Duration::from_secs(600);

/// What to protect.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Folders protected with everything in them (install folder, configuration, state).
    pub trees: Vec<PathBuf>,
    /// Single files (service units).
    pub files: Vec<PathBuf>,
    /// Folders that do not change while the process runs, which also get the immutable
    /// attribute in the userspace tier (the install folder).
    pub immutable_trees: Vec<PathBuf>,
    /// How the userspace tier's supervisor is started and how it starts this process again;
    /// without it, this process runs unsupervised.
    pub supervision: Option<Supervision>,
}

/// The command lines of the userspace tier's pair.
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    /// The arguments (after the program) that run `rampart selfprotect-supervisor`.
    pub supervisor_args: Vec<String>,
    /// The command line that starts this process again, program name first.
    pub restart_args: Vec<String>,
}

impl Supervision {
    /// For a process of the `rampart` binary below `root`: the supervisor runs as `rampart
    /// --root ROOT selfprotect-supervisor`, and this process is started again with the command
    /// line it has now.
    pub fn of_this_process(root: &std::path::Path) -> Supervision {
        Supervision {
            supervisor_args: vec![
                "--root".to_owned(),
                root.display().to_string(),
                "selfprotect-supervisor".to_owned(),
            ],
            restart_args: std::env::args().collect(),
        }
    }
}

impl Target {
    /// The existing parts of the target as a scope.
    fn scope(&self) -> Scope {
        Scope {
            trees: self.trees.iter().filter(|d| d.is_dir()).cloned().collect(),
            files: self.files.iter().filter(|f| f.exists()).cloned().collect(),
        }
    }
}

/// Self-protection of this process and its target.
pub struct Guardian {
    target: Target,
    /// What the supervisor handed this process when it started it again.
    inherited: Option<Handover>,
    kernel: Option<KernelTier>,
    guard: Option<FileGuard>,
    mounts: Option<MountRepair>,
    healer: Option<Healer>,
    observer: Option<Arc<Observer>>,
    watchdog: Option<Watchdog>,
    immutable: Vec<PathBuf>,
    state: ProtectionStatus,
    unloaded_until: Option<Instant>,
    reports: mpsc::Sender<TamperAttempt>,
}

impl Guardian {
    /// Puts self-protection in force with the strongest tier this host allows.
    pub fn start(target: Target) -> (Guardian, mpsc::Receiver<TamperAttempt>) {
        let (reports, rx) = mpsc::channel();
        let inherited = match Handover::inherited() {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => {
                tracing::error!(error = %e, "ignoring the supervisor's handover");
                None
            }
            None => None,
        };
        let mut p = Guardian {
            target,
            inherited,
            kernel: None,
            guard: None,
            mounts: None,
            healer: None,
            observer: None,
            watchdog: None,
            immutable: Vec::new(),
            state: off("starting"),
            unloaded_until: None,
            reports,
        };
        p.lock();
        (p, rx)
    }

    fn lock(&mut self) {
        let resolved = match self.target.scope().resolve() {
            Ok(r) => r,
            Err(e) => {
                self.state = off(&format!("cannot read what it protects: {e}"));
                tracing::error!(error = %e, "self-protection could not resolve its scope");
                return;
            }
        };
        if self.inherited.is_some() {
            // started again by the userspace tier's supervisor: that tier it is
            let why = "started again by its supervisor".to_owned();
            self.lock_userspace(&resolved, &why);
            return;
        }
        match KernelTier::start(&resolved, &[std::process::id()], self.reports.clone()) {
            Ok(k) => {
                self.kernel = Some(k);
                self.state = ProtectionStatus {
                    name: NAME.to_owned(),
                    state: ProtectionState::Enforced,
                    reason: None,
                };
                tracing::info!(
                    inodes = resolved.inodes.len(),
                    "self-protection enforced by the kernel tier (BPF LSM)"
                );
            }
            Err(e) => {
                let why = match &e {
                    KernelTierError::NotActive(_) | KernelTierError::NotLoadable(_) => {
                        e.to_string()
                    }
                    KernelTierError::Failed(m) => format!("kernel tier failed: {m}"),
                };
                tracing::warn!(reason = %why, "self-protection: kernel tier unavailable, using the userspace tier");
                self.lock_userspace(&resolved, &why);
            }
        }
    }

    /// The userspace tier: the fanotify file guard, mount repair, the signal observer, the
    /// immutable install files, and the supervisor pair.
    fn lock_userspace(&mut self, resolved: &crate::scope::Resolved, why: &str) {
        let me = std::process::id();
        let mut inherited = self.inherited.take();
        let trusted = Arc::new(RwLock::new(HashSet::from([me])));
        if let Some(h) = &inherited {
            trusted.write().expect("trusted lock").insert(h.peer);
        }
        let guard = match &mut inherited {
            Some(h) => {
                take_baton(h);
                guard::mark(&h.guard, resolved)
                    .and_then(|()| h.guard.try_clone())
                    .and_then(|g| {
                        FileGuard::answer(g, Gate::new(true), trusted.clone(), self.reports.clone())
                    })
            }
            None => FileGuard::start(resolved, trusted.clone(), self.reports.clone()),
        };
        match guard {
            Ok(g) => self.guard = Some(g),
            Err(e) => {
                self.state = off(&format!("{why}; the userspace file guard failed too: {e}"));
                tracing::error!(error = %e, "self-protection: fanotify file guard failed");
                return;
            }
        }
        let trees: Vec<PathBuf> = existing(&self.target.immutable_trees);
        let units: Vec<PathBuf> = existing(&self.target.files);
        // the folders this process writes in heal themselves; the others are immutable
        let healed: Vec<PathBuf> = existing(&self.target.trees)
            .into_iter()
            .filter(|t| !self.target.immutable_trees.contains(t))
            .collect();
        let shadows = Healer::shadow_dirs(&healed);
        let guard_group = self.guard.as_ref().and_then(|g| g.group().try_clone().ok());
        match Healer::start(
            healed,
            inherited.as_mut().and_then(|h| h.heal.take()),
            guard_group,
            trusted.clone(),
            inherited
                .as_ref()
                .and_then(|h| h.predecessor)
                .into_iter()
                .collect(),
            self.reports.clone(),
        ) {
            Ok(h) => self.healer = Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "self-healing of the configuration and state could not start")
            }
        }
        let shadow_scope = Scope {
            trees: existing(&shadows),
            files: Vec::new(),
        };
        if let (Some(g), Ok(r)) = (&self.guard, shadow_scope.resolve()) {
            if let Err(e) = guard::mark(g.group(), &r) {
                tracing::warn!(error = %e, "could not guard the shadow folders");
            }
        }
        let mut guarded = self.target.scope().trees;
        guarded.extend(shadow_scope.trees);
        match MountRepair::start(
            mounts::guarded_points(&guarded),
            inherited.as_ref().map(|h| h.mount_baseline.clone()),
            self.reports.clone(),
        ) {
            Ok(m) => self.mounts = Some(m),
            Err(e) => tracing::warn!(error = %e, "mount repair could not start"),
        }
        let supervisor = Arc::new(AtomicU32::new(inherited.as_ref().map_or(0, |h| h.peer)));
        let outcome = outcome_of(me, supervisor.clone());
        let observer = match inherited
            .as_ref()
            .and_then(|h| clone_observer(h.observer.as_ref()))
        {
            Some(fds) => Observer::adopt(fds, self.reports.clone(), outcome).inspect(|o| {
                // the predecessor's entries go; this process and its supervisor come in
                o.forget_all();
                o.watch(me, TASK_PROTECTED | TASK_TRUSTED);
            }),
            None => Observer::start(vec![me], vec![me], self.reports.clone(), outcome),
        };
        match observer {
            Ok(o) => self.observer = Some(Arc::new(o)),
            Err(e) => tracing::warn!(error = %e, "the signal observer could not start"),
        }
        match immutable::set(&trees, &units) {
            Ok(done) => self.immutable = done,
            Err(e) => {
                tracing::warn!(error = %e, "could not set the immutable attribute on the install files")
            }
        }
        let supervised = match self.target.supervision.clone() {
            Some(s) => match self.start_watchdog(s, inherited, trusted, supervisor) {
                Ok(w) => {
                    self.watchdog = Some(w);
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "self-protection: the supervisor could not start");
                    false
                }
            },
            None => false,
        };
        let processes = if supervised {
            "signals are held back by the supervisor, which starts a killed process again at \
             once and keeps debuggers from attaching"
        } else {
            "signals are observed but not refused, debuggers are not kept out (no supervisor)"
        };
        self.state = ProtectionStatus {
            name: NAME.to_owned(),
            state: ProtectionState::Degraded,
            reason: Some(format!(
                "userspace tier: {why}; files are guarded (fanotify, immutable install files, \
                 self-healing configuration and state, mount repair); {processes}"
            )),
        };
        tracing::info!(
            supervised,
            "self-protection enforced by the userspace tier (fanotify)"
        );
    }

    /// Starts (or, after a restart, finds) the supervisor and hands it the shared objects.
    fn start_watchdog(
        &self,
        supervision: Supervision,
        inherited: Option<Handover>,
        trusted: Arc<RwLock<HashSet<u32>>>,
        supervisor: Arc<AtomicU32>,
    ) -> std::io::Result<Watchdog> {
        let guard = self
            .guard
            .as_ref()
            .expect("the guard runs")
            .group()
            .try_clone()?;
        let (reports_read, reports_write, existing) = match inherited {
            Some(h) => (h.reports_read, h.reports_write, Some(h.peer)),
            None => {
                let (r, w) = crate::sys::pipe()?;
                (r, w, None)
            }
        };
        let handover = Handover {
            guard,
            observer: clone_observer(self.observer.as_ref().map(|o| o.fds())),
            heal: self
                .healer
                .as_ref()
                .and_then(|h| h.group().try_clone().ok()),
            predecessor: None,
            baton: None,
            reports_read,
            reports_write,
            mount_baseline: self
                .mounts
                .as_ref()
                .map(|m| m.baseline().to_vec())
                .unwrap_or_default(),
            peer: 0,
            restart_args: supervision.restart_args,
        };
        let observer = self.observer.clone();
        let on_supervisor: OnSupervisor = Arc::new(move |old, new| {
            let mut t = trusted.write().expect("trusted lock");
            if let Some(old) = old {
                t.remove(&old);
            }
            t.insert(new);
            if let Some(o) = &observer {
                if let Some(old) = old {
                    o.forget(old);
                }
                o.watch(new, TASK_PROTECTED | TASK_TRUSTED);
            }
            supervisor.store(new, Ordering::SeqCst);
        });
        Watchdog::start(
            handover,
            supervision.supervisor_args,
            existing,
            on_supervisor,
            self.reports.clone(),
        )
    }

    /// The state to report.
    pub fn status(&self) -> ProtectionStatus {
        self.state.clone()
    }

    /// Lifts self-protection for [`UNLOAD_PERIOD`] (or until the agent restarts).
    pub fn unload(&mut self) {
        if let Some(k) = self.kernel.take() {
            k.unload();
        }
        // the supervisor first: it holds the shared objects and traces this process
        if let Some(w) = self.watchdog.take() {
            w.stand_down();
        }
        // nothing is held any more: the shadows go
        if let Some(h) = self.healer.take() {
            h.release();
        }
        self.guard = None;
        self.mounts = None;
        self.observer = None;
        immutable::clear(&std::mem::take(&mut self.immutable));
        self.unloaded_until = Some(Instant::now() + UNLOAD_PERIOD);
        self.state = off(&format!(
            "unloaded by an authorized administrator; locks again within {} minutes or at restart",
            UNLOAD_PERIOD.as_secs() / 60
        ));
        tracing::warn!("self-protection unloaded by an authorized request");
    }

    /// Locks again when the unload period is over. Returns true if it did.
    pub fn relock_if_due(&mut self) -> bool {
        match self.unloaded_until {
            Some(t) if Instant::now() >= t => {
                self.unloaded_until = None;
                self.lock();
                true
            }
            _ => false,
        }
    }

    /// Whether self-protection is lifted right now.
    pub fn is_unloaded(&self) -> bool {
        self.unloaded_until.is_some()
    }
}

/// Takes over answering the file guard from the supervisor that started this process: asks,
/// and waits until it has answered what it read and reads no more. If it does not say so in
/// time (it is gone), what it read and never answered is refused.
fn take_baton(h: &mut Handover) {
    use std::io::{Read, Write};
    let given = h.baton.take().is_some_and(|b| {
        let mut s = std::os::unix::net::UnixStream::from(b);
        let mut answer = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
            && s.write_all(&[BATON_TAKE]).is_ok()
            && s.read_exact(&mut answer).is_ok()
            && answer[0] == BATON_GIVEN
    });
    if !given {
        let left = crate::sys::fanotify_deny_leftovers(&h.guard, 1024);
        tracing::warn!(
            left,
            "the supervisor did not hand over the file guard; taking it"
        );
    }
}

/// The paths of `paths` that exist.
fn existing(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths.iter().filter(|p| p.exists()).cloned().collect()
}

fn clone_observer(fds: Option<&ObserverFds>) -> Option<ObserverFds> {
    let fds = fds?;
    Some(ObserverFds {
        link: fds.link.try_clone().ok()?,
        ring: fds.ring.try_clone().ok()?,
        watched: fds.watched.try_clone().ok()?,
    })
}

/// What became of an observed signal, given this process and its supervisor (0: none): held
/// back by the supervisor, ignored by it, undone (a stopped supervisor is continued), or —
/// SIGKILL, which nothing can hold back — only observed, a restart following. The sender of a
/// SIGKILL was stopped by the observer; it is continued once the killed process is replaced.
fn outcome_of(me: u32, supervisor: Arc<AtomicU32>) -> OnSignal {
    Arc::new(move |a: &TamperAttempt| {
        let sup = supervisor.load(Ordering::SeqCst);
        let signal = a.detail.unwrap_or(0) as i32;
        if signal == libc::SIGKILL {
            continue_when_replaced(a.actor.pid, a.target.pid, me, supervisor.clone());
        }
        match a.target.pid {
            _ if signal == libc::SIGKILL || sup == 0 => Outcome::Observed,
            Some(p) if p == me => Outcome::Refused,
            Some(p) if p == sup && signal == libc::SIGSTOP => Outcome::Repaired,
            Some(p) if p == sup => Outcome::Refused,
            _ => Outcome::Observed,
        }
    })
}

/// Continues `sender` (stopped by the observer for sending SIGKILL to `killed`) once neither
/// process of the pair is `killed` any more, or after two seconds in any case.
fn continue_when_replaced(sender: u32, killed: Option<u32>, me: u32, supervisor: Arc<AtomicU32>) {
    if sender == 0 {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("selfprotect-continue".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let sup = supervisor.load(Ordering::SeqCst);
                if killed != Some(me) && killed != Some(sup) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if let Err(e) = crate::sys::kill(sender, libc::SIGCONT) {
                tracing::debug!(sender, error = %e, "continuing a stopped sender");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not continue the sender of a SIGKILL");
        let _ = crate::sys::kill(sender, libc::SIGCONT);
    }
}

fn off(reason: &str) -> ProtectionStatus {
    ProtectionStatus {
        name: NAME.to_owned(),
        state: ProtectionState::Off,
        reason: Some(reason.to_owned()),
    }
}
