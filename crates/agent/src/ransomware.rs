//! The agent's ransomware protection: the policy's `ransomware` section turned into a running
//! [`Monitor`](rampart_ransomware::monitor::Monitor), its incidents into outbox events and
//! incident files, and the operator's requests (`rampart ransomware …`) into work.
//!
//! Protected folders are read below the agent's root prefix (`/home` is `ROOT/home`), like
//! every other path of the agent, so agents in tests protect only what the test made. Trusted
//! programs are identities of the host and are not prefixed. The vault and quarantine live in
//! `ROOT/var/lib/rampart/{vault,quarantine}`; each incident, with what restores it, is written
//! to the state folder, so `rampart ransomware restore` works after a restart too (from the
//! vault's copies: what only a descriptor held is gone with the process that held it).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rampart_protocol::checkin::{ProtectionState, ProtectionStatus};
use rampart_protocol::events::{RANSOMWARE_INCIDENT, RANSOMWARE_RESTORED};
use rampart_protocol::policy::{RansomwareMode, RansomwareSettings};
use rampart_protocol::ransomware::{BlockedFile, Incident};
use rampart_ransomware::doctype::DocumentTypes;
use rampart_ransomware::holds::Holds;
use rampart_ransomware::monitor::{self, Monitor, Settings};
use rampart_ransomware::restore::Plan;
use rampart_ransomware::vault::Vault;
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::outbox::Outbox;
use crate::paths::AgentPaths;

/// The protection's name in status reports.
pub const NAME: &str = "ransomware";

/// An incident as the agent keeps it: what was sent, and what restores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentRecord {
    /// The incident (with the outcomes of the last restore).
    pub incident: Incident,
    /// What restores its files.
    pub plan: Plan,
}

/// What the vault holds, for `rampart ransomware vault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultSummary {
    /// The vault's folder.
    pub dir: String,
    /// Copies kept.
    pub copies: usize,
    /// Bytes they take.
    pub bytes: u64,
    /// The policy's limit of bytes.
    pub max_bytes: u64,
    /// The policy's age limit, hours.
    pub max_age_hours: u32,
    /// Files larger than this are not copied.
    pub max_file_bytes: u64,
    /// Documents guarded now.
    pub documents: usize,
    /// Folders watched now.
    pub folders: usize,
}

/// The running protection (or why it does not run).
struct Running {
    settings: RansomwareSettings,
    monitor: Option<Arc<Monitor>>,
    error: Option<String>,
}

/// Ransomware protection on this host.
pub struct Ransomware {
    paths: AgentPaths,
    outbox: Outbox,
    runtime: tokio::runtime::Handle,
    wake: Arc<dyn Fn() + Send + Sync>,
    running: Mutex<Option<Running>>,
    /// When the vault was last kept within its limits (see [`Ransomware::maintain`]).
    maintained: Mutex<Option<std::time::Instant>>,
}

/// How often the vault is kept within its limits: its age limit is in hours; a burst of copies
/// past its size limit is evicted within this. (At every check-in — every second in the bench —
/// each look listed every copy on disk.)
const MAINTAIN_EVERY: Duration = Duration::from_secs(60);

impl Ransomware {
    /// Protection for the agent below `paths`, not started yet ([`Ransomware::apply`] starts
    /// it). Incidents go to `outbox`; `wake` tells the uploader.
    pub fn new(
        paths: AgentPaths,
        outbox: Outbox,
        runtime: tokio::runtime::Handle,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Arc<Ransomware> {
        Arc::new(Ransomware {
            paths,
            outbox,
            runtime,
            wake,
            running: Mutex::new(None),
            maintained: Mutex::new(None),
        })
    }

    /// Puts `settings` in force: the first time it starts the monitor; after that it starts it
    /// again only if the settings changed. Blocking (call it off the async threads).
    pub fn apply(self: &Arc<Self>, settings: &RansomwareSettings) {
        let mut running = self.running.lock().expect("running lock");
        if running.as_ref().is_some_and(|r| r.settings == *settings) {
            return;
        }
        // the old monitor goes first: two would judge the same writes
        if let Some(old) = running.take() {
            drop(old.monitor);
        }
        let (monitor, error) = match self.start(settings) {
            Ok(m) => (Some(m), None),
            Err(e) => {
                tracing::error!(error = %e, "ransomware protection could not start");
                (None, Some(e))
            }
        };
        *running = Some(Running {
            settings: settings.clone(),
            monitor,
            error,
        });
    }

    fn start(self: &Arc<Self>, policy: &RansomwareSettings) -> Result<Arc<Monitor>, String> {
        let settings = self.settings(policy);
        let vault = Vault::open(&self.paths.vault_dir, policy.vault.max_file_bytes)
            .map_err(|e| format!("opening the vault: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let monitor = Monitor::start(settings, vault, vec![std::process::id()], tx)
            .map(Arc::new)
            .map_err(|e| format!("fanotify: {e}"))?;
        let me = self.clone();
        let weak = Arc::downgrade(&monitor);
        std::thread::Builder::new()
            .name("ransomware-incidents".into())
            .spawn(move || {
                // ends when the monitor goes (its sender with it)
                for incident in rx {
                    let plan = weak
                        .upgrade()
                        .and_then(|m| {
                            m.incidents()
                                .into_iter()
                                .find(|c| c.incident.id == incident.id)
                        })
                        .map(|c| c.plan)
                        .unwrap_or_default();
                    me.record(IncidentRecord { incident, plan }, RANSOMWARE_INCIDENT);
                }
            })
            .map_err(|e| format!("starting the incident thread: {e}"))?;
        tracing::info!(
            mode = ?policy.mode,
            folders = ?policy.folders,
            "ransomware protection started"
        );
        Ok(monitor)
    }

    /// The monitor's settings for the policy's section, on this agent's root.
    fn settings(&self, policy: &RansomwareSettings) -> Settings {
        let rooted = |p: &str| under_root(&self.paths.root, p);
        let mut exclusions: Vec<String> = policy
            .exclusions
            .iter()
            .map(|e| {
                if e.starts_with('/') {
                    rooted(e).display().to_string()
                } else {
                    e.clone()
                }
            })
            .collect();
        // the agent's own folders are never documents of a user
        for own in [
            &self.paths.install_dir,
            &self.paths.config_dir,
            &self.paths.state_dir,
            &self.paths.log_dir,
        ] {
            exclusions.push(own.display().to_string());
        }
        let mut trusted: Vec<(PathBuf, String)> = policy
            .trusted_programs
            .iter()
            .filter_map(|t| {
                let path = PathBuf::from(&t.path);
                match &t.sha256 {
                    Some(h) => Some((path, h.to_ascii_lowercase())),
                    // no hash in the policy: the program as it is on this host now
                    None => match monitor::sha256_of(&path) {
                        Some(h) => Some((path, h)),
                        None => {
                            tracing::warn!(program = %t.path, "trusted program not found on this host; ignored");
                            None
                        }
                    },
                }
            })
            .collect();
        // Rampart's own binary (the server on this host writes its data folder with it)
        let own = self.paths.installed_binary();
        if let Some(h) = monitor::sha256_of(&own) {
            trusted.push((own, h));
        }
        let mut folders: Vec<PathBuf> = policy.folders.iter().map(|f| rooted(f)).collect();
        // on the server's host its data folder is protected too, whatever the policy lists
        let server_data = self.paths.server_data_dir();
        if server_data.is_dir() && !folders.iter().any(|f| server_data.starts_with(f)) {
            folders.push(server_data);
        }
        // programs blocked before stay blocked (also across restarts and policy changes), until
        // the policy trusts them: how an operator lifts a block
        let blocked = still_blocked(
            self.incidents()
                .into_iter()
                .filter_map(|r| r.incident.blocked_file),
            &trusted,
        );
        Settings {
            folders,
            types: DocumentTypes::new(&policy.document_types, &policy.extra_extensions),
            exclusions,
            trusted,
            mode: policy.mode,
            canaries: policy.canaries,
            quarantine: self.paths.quarantine_dir.join("ransomware"),
            blocked,
        }
    }

    /// Writes the incident file and the event, and wakes the uploader.
    fn record(&self, record: IncidentRecord, kind: &str) {
        let path = self
            .paths
            .incidents_dir()
            .join(format!("{}.json", record.incident.id));
        let json = serde_json::to_vec_pretty(&record).expect("incidents serialize");
        if let Err(e) = write_atomic(&path, &json, 0o600) {
            tracing::error!(error = %e, path = %path.display(), "could not write the incident file");
        }
        let body = serde_json::to_value(&record.incident).expect("incidents serialize");
        if let Err(e) = self.runtime.block_on(self.outbox.push(kind, body)) {
            tracing::error!(error = %e, id = %record.incident.id, "could not write the incident to the outbox");
        }
        (self.wake)();
    }

    /// The protection's state.
    pub fn status(&self) -> ProtectionStatus {
        let running = self.running.lock().expect("running lock");
        let (state, reason) = match running.as_ref() {
            None => (ProtectionState::Off, "starting".to_owned()),
            Some(Running { error: Some(e), .. }) => (ProtectionState::Off, e.clone()),
            Some(Running {
                monitor: Some(m),
                settings,
                ..
            }) => {
                let s = m.status();
                let watched = format!(
                    "{} folder(s) watched, {} document(s) guarded",
                    s.folders, s.documents
                );
                match settings.mode {
                    _ if !s.ready => (
                        ProtectionState::Degraded,
                        format!("starting: walking the protected folders ({watched} so far)"),
                    ),
                    _ if s.folders == 0 => (
                        ProtectionState::Degraded,
                        format!(
                            "none of the protected folders exists ({})",
                            settings.folders.join(", ")
                        ),
                    ),
                    RansomwareMode::Audit => (
                        ProtectionState::Degraded,
                        format!("audit mode: detects and reports, stops nothing; {watched}"),
                    ),
                    RansomwareMode::Block => {
                        (ProtectionState::Enforced, format!("block mode; {watched}"))
                    }
                    RansomwareMode::Strict => (
                        ProtectionState::Enforced,
                        format!("strict mode: only trusted programs change documents; {watched}"),
                    ),
                }
            }
            Some(_) => (ProtectionState::Off, "not running".to_owned()),
        };
        ProtectionStatus {
            name: NAME.to_owned(),
            state,
            reason: Some(reason),
        }
    }

    /// The folders protected now (below the root, the server's data folder on its host
    /// included); none while the protection is not running.
    pub fn protected_folders(&self) -> Vec<PathBuf> {
        self.monitor()
            .map(|(m, _)| m.folders().to_vec())
            .unwrap_or_default()
    }

    /// Opens held for judgement since the protection started, their waits in all (ms), and
    /// the changes waiting to be judged now.
    pub fn held(&self) -> (u64, u64, usize) {
        self.monitor()
            .map(|(m, _)| m.status())
            .map_or((0, 0, 0), |s| (s.held, s.held_ms, s.backlog))
    }

    /// What the monitor reports about itself, while it runs.
    pub fn monitor_status(&self) -> Option<rampart_ransomware::monitor::Status> {
        self.monitor().map(|(m, _)| m.status())
    }

    fn monitor(&self) -> Option<(Arc<Monitor>, RansomwareSettings)> {
        let running = self.running.lock().expect("running lock");
        let r = running.as_ref()?;
        Some((r.monitor.clone()?, r.settings.clone()))
    }

    /// Every incident this agent recorded (also before a restart), oldest first.
    pub fn incidents(&self) -> Vec<IncidentRecord> {
        let mut all: Vec<IncidentRecord> = std::fs::read_dir(self.paths.incidents_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| {
                let text = std::fs::read(e.path()).ok()?;
                match serde_json::from_slice(&text) {
                    Ok(r) => Some(r),
                    Err(err) => {
                        tracing::warn!(path = %e.path().display(), error = %err, "unreadable incident file");
                        None
                    }
                }
            })
            .collect();
        all.sort_by_key(|r: &IncidentRecord| (r.incident.convicted_ms, r.incident.id.clone()));
        all
    }

    /// Restores the files of incident `id` (again: a restore can be repeated). Blocking.
    pub fn restore(&self, id: &str) -> Result<Incident, String> {
        let record = self
            .incidents()
            .into_iter()
            .find(|r| r.incident.id == id)
            .ok_or_else(|| format!("no incident {id:?} on this agent"))?;
        let (incident, plan) = match self.monitor() {
            // this run's incident: with everything its actor did since (audit mode)
            Some((m, _)) => match m.restore(id) {
                Some(incident) => {
                    let plan = m
                        .incidents()
                        .into_iter()
                        .find(|c| c.incident.id == id)
                        .map(|c| c.plan)
                        .unwrap_or(record.plan);
                    (incident, plan)
                }
                None => self.restore_from_record(record)?,
            },
            None => self.restore_from_record(record)?,
        };
        let record = IncidentRecord { incident, plan };
        let incident = record.incident.clone();
        self.record(record, RANSOMWARE_RESTORED);
        Ok(incident)
    }

    /// An incident of an earlier run: its plan, from the vault's copies.
    fn restore_from_record(&self, mut record: IncidentRecord) -> Result<(Incident, Plan), String> {
        let vault = Vault::open(&self.paths.vault_dir, u64::MAX)
            .map_err(|e| format!("opening the vault: {e}"))?;
        let quarantine = self
            .paths
            .quarantine_dir
            .join("ransomware")
            .join(&record.incident.id);
        record.incident.files = record.plan.restore(&vault, &Holds::new(), &quarantine);
        Ok((record.incident, record.plan))
    }

    /// What the vault holds.
    pub fn vault(&self) -> VaultSummary {
        let (settings, status) = match self.monitor() {
            Some((m, s)) => (s, Some(m.status())),
            None => (RansomwareSettings::default(), None),
        };
        let (bytes, copies) = Vault::open(&self.paths.vault_dir, u64::MAX)
            .map(|v| v.usage())
            .unwrap_or((0, 0));
        VaultSummary {
            dir: self.paths.vault_dir.display().to_string(),
            copies,
            bytes,
            max_bytes: settings.vault.max_bytes,
            max_age_hours: settings.vault.max_age_hours,
            max_file_bytes: settings.vault.max_file_bytes,
            documents: status.as_ref().map_or(0, |s| s.documents),
            folders: status.as_ref().map_or(0, |s| s.folders),
        }
    }

    /// Keeps the vault within the policy's limits, at most every [`MAINTAIN_EVERY`]. Blocking.
    pub fn maintain(&self) {
        {
            let mut last = self.maintained.lock().expect("maintained lock");
            if last.is_some_and(|t| t.elapsed() < MAINTAIN_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Some((m, s)) = self.monitor() {
            let age = Duration::from_secs(u64::from(s.vault.max_age_hours) * 3600);
            let removed = m.evict(s.vault.max_bytes, age);
            if removed > 0 {
                tracing::info!(removed, "vault: old copies evicted");
            }
        }
    }

    /// Stops the monitor (the agent is stopping). Blocking.
    pub fn stop(&self) {
        let old = self.running.lock().expect("running lock").take();
        drop(old);
    }
}

/// The programs blocked by earlier incidents that stay blocked: all but those the policy now
/// trusts (by content), once each.
fn still_blocked(
    blocked: impl Iterator<Item = BlockedFile>,
    trusted: &[(PathBuf, String)],
) -> Vec<BlockedFile> {
    let mut out: Vec<BlockedFile> = Vec::new();
    for b in blocked {
        if trusted.iter().any(|(_, h)| *h == b.sha256) {
            tracing::info!(program = %b.path, "a program blocked earlier is trusted by the policy: no longer blocked");
        } else if !out.iter().any(|o| o.sha256 == b.sha256 && o.path == b.path) {
            out.push(b);
        }
    }
    out
}

/// `path` (absolute) below `root`.
pub fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_read_below_the_root() {
        assert_eq!(
            under_root(Path::new("/tmp/t"), "/home"),
            PathBuf::from("/tmp/t/home")
        );
        assert_eq!(under_root(Path::new("/"), "/home"), PathBuf::from("/home"));
    }

    #[test]
    fn a_block_lasts_until_the_policy_trusts_the_program() {
        let file = |path: &str, sha256: &str| BlockedFile {
            path: path.into(),
            sha256: sha256.into(),
            size: 7,
        };
        let earlier = vec![
            file("/tmp/locker", "aa"),
            file("/tmp/locker", "aa"), // two incidents of one program
            file("/home/u/tool", "bb"),
        ];
        let none = still_blocked(earlier.clone().into_iter(), &[]);
        assert_eq!(
            none,
            vec![file("/tmp/locker", "aa"), file("/home/u/tool", "bb")]
        );
        // trusted by content, wherever the policy says it lives
        let trusted = [(PathBuf::from("/opt/tool"), "bb".to_owned())];
        assert_eq!(
            still_blocked(earlier.into_iter(), &trusted),
            vec![file("/tmp/locker", "aa")]
        );
    }
}
