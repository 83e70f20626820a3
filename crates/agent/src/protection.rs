//! Self-protection as the agent runs it: which tier is in force, what it covers, its state as
//! reported at check-in, the unload that lifts it for a while, and the tamper reports it makes.
//!
//! The scope is the agent's own: its install folder, its configuration store, its state folder
//! and its service unit, all below the agent's root prefix, and the agent's process. Nothing
//! else on the host is touched.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rampart_protocol::checkin::{ProtectionState, ProtectionStatus};
use rampart_protocol::tamper::TamperAttempt;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rampart_selfprotect::kernel::{KernelTier, KernelTierError};
use rampart_selfprotect::scope::Scope;
use rampart_selfprotect::userspace::guard::FileGuard;
use rampart_selfprotect::userspace::immutable;
use rampart_selfprotect::userspace::mounts::{self, MountRepair};

use crate::paths::AgentPaths;

/// The protection's name in check-ins.
pub const NAME: &str = "self-protection";

/// How long an authorized unload lasts before self-protection locks again by itself.
pub const UNLOAD_PERIOD: Duration = Duration::from_secs(600);

/// The agent's self-protection.
pub struct Protection {
    paths: AgentPaths,
    kernel: Option<KernelTier>,
    guard: Option<FileGuard>,
    mounts: Option<MountRepair>,
    immutable: Vec<PathBuf>,
    state: ProtectionStatus,
    unloaded_until: Option<Instant>,
    reports: mpsc::Sender<TamperAttempt>,
}

/// What self-protection covers for the agent below `paths`' root.
pub fn scope(paths: &AgentPaths) -> Scope {
    let mut trees = Vec::new();
    for dir in [&paths.install_dir, &paths.config_dir, &paths.state_dir] {
        if dir.is_dir() {
            trees.push(dir.clone());
        }
    }
    let files = paths
        .unit_files()
        .into_iter()
        .filter(|f| f.exists())
        .collect();
    Scope { trees, files }
}

impl Protection {
    /// Puts self-protection in force with the strongest tier this host allows.
    pub fn start(paths: &AgentPaths) -> (Protection, mpsc::Receiver<TamperAttempt>) {
        let (reports, rx) = mpsc::channel();
        let mut p = Protection {
            paths: paths.clone(),
            kernel: None,
            guard: None,
            mounts: None,
            immutable: Vec::new(),
            state: off("starting"),
            unloaded_until: None,
            reports,
        };
        p.lock();
        (p, rx)
    }

    fn lock(&mut self) {
        let resolved = match scope(&self.paths).resolve() {
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
    fn lock_userspace(&mut self, resolved: &rampart_selfprotect::scope::Resolved, why: &str) {
        let trusted = Arc::new(RwLock::new(HashSet::from([std::process::id()])));
        match FileGuard::start(resolved, trusted, self.reports.clone()) {
            Ok(g) => self.guard = Some(g),
            Err(e) => {
                self.state = off(&format!("{why}; the userspace file guard failed too: {e}"));
                tracing::error!(error = %e, "self-protection: fanotify file guard failed");
                return;
            }
        }
        let trees: Vec<PathBuf> = [&self.paths.install_dir]
            .into_iter()
            .filter(|d| d.is_dir())
            .cloned()
            .collect();
        let units: Vec<PathBuf> = self
            .paths
            .unit_files()
            .into_iter()
            .filter(|f| f.exists())
            .collect();
        match MountRepair::start(
            mounts::guarded_points(&scope(&self.paths).trees),
            self.reports.clone(),
        ) {
            Ok(m) => self.mounts = Some(m),
            Err(e) => tracing::warn!(error = %e, "mount repair could not start"),
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
                 mount repair), processes are not yet"
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
