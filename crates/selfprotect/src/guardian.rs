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

use crate::kernel::{KernelTier, KernelTierError};
use crate::scope::Scope;
use crate::userspace::guard::FileGuard;
use crate::userspace::immutable;
use crate::userspace::mounts::{self, MountRepair};
use crate::userspace::observer::Observer;

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
    kernel: Option<KernelTier>,
    guard: Option<FileGuard>,
    mounts: Option<MountRepair>,
    observer: Option<Observer>,
    immutable: Vec<PathBuf>,
    state: ProtectionStatus,
    unloaded_until: Option<Instant>,
    reports: mpsc::Sender<TamperAttempt>,
}

impl Guardian {
    /// Puts self-protection in force with the strongest tier this host allows.
    pub fn start(target: Target) -> (Guardian, mpsc::Receiver<TamperAttempt>) {
        let (reports, rx) = mpsc::channel();
        let mut p = Guardian {
            target,
            kernel: None,
            guard: None,
            mounts: None,
            observer: None,
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

    /// The userspace tier: the fanotify file guard and the immutable install files.
    fn lock_userspace(&mut self, resolved: &crate::scope::Resolved, why: &str) {
        let trusted = Arc::new(RwLock::new(HashSet::from([std::process::id()])));
        match FileGuard::start(resolved, trusted, self.reports.clone()) {
            Ok(g) => self.guard = Some(g),
            Err(e) => {
                self.state = off(&format!("{why}; the userspace file guard failed too: {e}"));
                tracing::error!(error = %e, "self-protection: fanotify file guard failed");
                return;
            }
        }
        let trees: Vec<PathBuf> = self
            .target
            .immutable_trees
            .iter()
            .filter(|d| d.is_dir())
            .cloned()
            .collect();
        let units: Vec<PathBuf> = self
            .target
            .files
            .iter()
            .filter(|f| f.exists())
            .cloned()
            .collect();
        match MountRepair::start(
            mounts::guarded_points(&self.target.scope().trees),
            self.reports.clone(),
        ) {
            Ok(m) => self.mounts = Some(m),
            Err(e) => tracing::warn!(error = %e, "mount repair could not start"),
        }
        let me = std::process::id();
        match Observer::start(vec![me], vec![me], self.reports.clone()) {
            Ok(o) => self.observer = Some(o),
            Err(e) => {
                tracing::warn!(error = %e, "the signal observer could not start")
            }
        }
        match immutable::set(&trees, &units) {
            Ok(done) => self.immutable = done,
            Err(e) => {
                tracing::warn!(error = %e, "could not set the immutable attribute on the install files")
            }
        }
        self.state = ProtectionStatus {
            name: NAME.to_owned(),
            state: ProtectionState::Degraded,
            reason: Some(format!(
                "userspace tier: {why}; files are guarded (fanotify, immutable install files, \
                 mount repair), signals are observed but not refused, debuggers are not yet"
            )),
        };
        tracing::info!("self-protection enforced by the userspace tier (fanotify)");
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

fn off(reason: &str) -> ProtectionStatus {
    ProtectionStatus {
        name: NAME.to_owned(),
        state: ProtectionState::Off,
        reason: Some(reason.to_owned()),
    }
}
