//! The agent daemon: check in, apply the desired state, and drain the outbox to the server.
//!
//! Two loops run side by side. The check-in loop reports identity and protection states every
//! policy interval (±10 % jitter, so a fleet restarted together spreads out), sending the ETag
//! of the desired state it has so that an unchanged state costs a `304`. The upload loop sends
//! the outbox's oldest events in batches and deletes them only after the server acknowledged
//! them; when the server is away it backs off and the events wait on disk.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rampart_protocol::checkin::{CheckinRequest, DesiredState, ProtectionState, ProtectionStatus};
use rampart_protocol::events::{self, EventBatch};
use rampart_protocol::policy::RansomwareSettings;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::client::{CheckinAnswer, ServerClient};
use crate::config::Enrollment;
use crate::control::{self, Reply, Request};
use crate::files::write_atomic;
use crate::identity;
use crate::outbox::Outbox;
use crate::paths::AgentPaths;
use crate::protection::Protection;
use crate::ransomware::Ransomware;
use crate::status::AgentStatus;
use crate::tamper;

/// Events per upload.
const BATCH_EVENTS: usize = 500;
/// Bytes of event bodies per upload, about.
const BATCH_BYTES: usize = 4 << 20;
/// Check-in interval before any policy arrived.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The desired state the agent holds, as saved in the state folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeldState {
    etag: String,
    desired: DesiredState,
}

fn load_held(paths: &AgentPaths) -> Option<HeldState> {
    let text = std::fs::read(paths.desired_state_file()).ok()?;
    match serde_json::from_slice(&text) {
        Ok(held) => Some(held),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable saved desired state");
            None
        }
    }
}

/// The protections this build does not have yet, and their state.
fn other_protections() -> Vec<ProtectionStatus> {
    ["on-access-scan"]
        .into_iter()
        .map(|name| ProtectionStatus {
            name: name.to_owned(),
            state: ProtectionState::Off,
            reason: Some("not available in this agent build".to_owned()),
        })
        .collect()
}

/// What the loops and the control socket share.
struct Shared {
    paths: AgentPaths,
    outbox: Outbox,
    wake: Arc<Notify>,
    held: Mutex<Option<HeldState>>,
    protection: Arc<Mutex<Protection>>,
    ransomware: Arc<Ransomware>,
}

impl Shared {
    fn protections(&self) -> Vec<ProtectionStatus> {
        let mut v = vec![
            self.protection.lock().expect("protection lock").status(),
            self.ransomware.status(),
        ];
        v.extend(other_protections());
        v
    }

    /// The ransomware section of the policy in force (the default before any arrived).
    fn ransomware_settings(&self) -> RansomwareSettings {
        self.held
            .lock()
            .expect("held lock")
            .as_ref()
            .map(|h| h.desired.policy.policy.ransomware.clone())
            .unwrap_or_default()
    }

    /// Puts the policy's ransomware section in force (off the async threads).
    async fn apply_ransomware(&self) {
        let settings = self.ransomware_settings();
        let ransomware = self.ransomware.clone();
        let _ = tokio::task::spawn_blocking(move || ransomware.apply(&settings)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `base` ± 10 %.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
}

/// Runs the agent until `shutdown` completes.
pub async fn run(paths: AgentPaths, shutdown: impl Future<Output = ()>) -> Result<()> {
    // protection first: whatever was changed while no agent guarded its files (by someone who
    // killed the last one, say) is put back before anything here reads them, and every file
    // made from here on is the agent's own
    for dir in [
        paths.state_dir.clone(),
        paths.vault_dir.join("copies"),
        paths.quarantine_dir.clone(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match rampart_sys::raise_open_files_limit() {
        Ok(n) => tracing::debug!(limit = n, "open files"),
        Err(e) => tracing::warn!(error = %e, "could not raise the limit of open files"),
    }
    let (protection, tamper_reports) = Protection::start(crate::protection::target(&paths));
    let enrollment = Enrollment::load(&paths)?;
    let client = enrollment.client()?;
    let outbox = Outbox::open(&paths.outbox_db())
        .await
        .with_context(|| format!("opening the outbox {}", paths.outbox_db().display()))?;
    let _ = std::fs::remove_file(paths.control_socket());
    let control = tokio::net::UnixListener::bind(paths.control_socket())
        .with_context(|| format!("listening on {}", paths.control_socket().display()))?;
    std::fs::set_permissions(
        paths.control_socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let wake = Arc::new(Notify::new());
    let ransomware = {
        let wake = wake.clone();
        Ransomware::new(
            paths.clone(),
            outbox.clone(),
            tokio::runtime::Handle::current(),
            Arc::new(move || wake.notify_one()),
        )
    };
    let shared = Arc::new(Shared {
        paths: paths.clone(),
        outbox: outbox.clone(),
        wake,
        held: Mutex::new(load_held(&paths)),
        protection: Arc::new(Mutex::new(protection)),
        ransomware,
    });
    // documents are protected from the start, with the policy held from the last run
    shared.apply_ransomware().await;
    outbox
        .push(
            events::AGENT_STARTED,
            json!({"build": identity::AGENT_BUILD, "pid": std::process::id()}),
        )
        .await?;
    outbox
        .push(
            events::PROTECTION_STATUS,
            json!({"protections": shared.protections()}),
        )
        .await?;
    tracing::info!(agent_id = %enrollment.config.agent_id, server = %enrollment.config.server_url, "agent started");

    let mut status = AgentStatus {
        pid: std::process::id(),
        started_ms: now_ms(),
        agent_id: enrollment.config.agent_id.clone(),
        group: enrollment.config.group.clone(),
        server_url: enrollment.config.server_url.clone(),
        protections: shared.protections(),
        ..Default::default()
    };
    let waker = shared.clone();
    let tamper = tamper::spawn(
        tamper_reports,
        outbox.clone(),
        tokio::runtime::Handle::current(),
        Box::new(move || waker.wake.notify_one()),
    );
    let uploader = tokio::spawn(upload_loop(client.clone(), shared.clone()));
    let controller = tokio::spawn(control_loop(control, shared.clone()));
    let checkins = checkin_loop(&client, &shared, &mut status);
    tokio::select! {
        () = checkins => {}
        () = shutdown => {}
    }
    uploader.abort();
    controller.abort();
    let ransomware = shared.ransomware.clone();
    tokio::task::spawn_blocking(move || ransomware.stop()).await?;
    // lift the kernel tier before the process goes, so nothing outlives it
    let protection = shared.protection.clone();
    tokio::task::spawn_blocking(move || protection.lock().expect("protection lock").unload())
        .await?;
    drop(tamper);
    outbox
        .push(
            events::AGENT_STOPPED,
            json!({"reason": "stopped by signal"}),
        )
        .await?;
    // one last attempt to deliver; whatever is not delivered stays in the outbox
    match tokio::time::timeout(Duration::from_secs(3), drain(&client, &outbox)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::info!(error = %e, "events stay in the outbox until the next start"),
        Err(_) => tracing::info!("events stay in the outbox until the next start"),
    }
    status.pid = 0;
    status.outbox_pending = outbox.pending().await.unwrap_or(0);
    let _ = status.save(&paths);
    let _ = std::fs::remove_file(paths.control_socket());
    outbox.close().await;
    tracing::info!("agent stopped");
    Ok(())
}

async fn checkin_loop(client: &ServerClient, shared: &Shared, status: &mut AgentStatus) {
    let paths = &shared.paths;
    let outbox = &shared.outbox;
    let mut reported = shared.protections();
    loop {
        // an unload period that ended locks again by itself
        let protection = shared.protection.clone();
        let _ = tokio::task::spawn_blocking(move || {
            protection.lock().expect("protection lock").relock_if_due()
        })
        .await;
        let protections = shared.protections();
        if protections != reported {
            let _ = outbox
                .push(
                    events::PROTECTION_STATUS,
                    json!({"protections": protections}),
                )
                .await;
            shared.wake.notify_one();
            reported = protections.clone();
        }
        status.protections = protections.clone();
        let ransomware = shared.ransomware.clone();
        let _ = tokio::task::spawn_blocking(move || ransomware.maintain()).await;
        let held = shared.held.lock().expect("held lock").clone();
        let request = CheckinRequest {
            identity: identity::current(),
            protections,
            applied_policy_version: held.as_ref().map(|h| h.desired.policy.version),
            components: Vec::new(),
        };
        let mut again_now = false;
        match client
            .checkin(&request, held.as_ref().map(|h| h.etag.as_str()))
            .await
        {
            Ok(CheckinAnswer::NotModified) => {
                status.last_checkin_ms = now_ms();
                status.last_error = None;
            }
            Ok(CheckinAnswer::Changed(desired, etag)) => {
                status.last_checkin_ms = now_ms();
                status.last_error = None;
                let version = desired.policy.version;
                let changed = held.as_ref().map(|h| h.desired.policy.version) != Some(version);
                let new = HeldState {
                    etag,
                    desired: *desired,
                };
                if let Err(e) = apply(paths, outbox, &new, changed).await {
                    tracing::error!(error = %e, "could not apply the desired state");
                    status.last_error = Some(format!("applying policy {version}: {e}"));
                } else {
                    *shared.held.lock().expect("held lock") = Some(new);
                    shared.apply_ransomware().await;
                    // report the applied version at once rather than one interval later
                    again_now = changed;
                    shared.wake.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "check-in failed");
                status.last_error = Some(e.to_string());
            }
        }
        let held = shared.held.lock().expect("held lock").clone();
        status.applied_policy_version = held.as_ref().map(|h| h.desired.policy.version);
        status.outbox_pending = outbox.pending().await.unwrap_or(status.outbox_pending);
        if let Err(e) = status.save(paths) {
            tracing::warn!(error = %e, "could not write the status file");
        }
        if again_now {
            continue;
        }
        let interval = held
            .as_ref()
            .map(|h| Duration::from_secs(h.desired.policy.policy.checkin.interval_seconds.into()))
            .unwrap_or(DEFAULT_INTERVAL);
        tokio::time::sleep(jittered(interval)).await;
    }
}

/// Puts a new desired state in force: saved first, so a restart keeps it.
async fn apply(paths: &AgentPaths, outbox: &Outbox, held: &HeldState, changed: bool) -> Result<()> {
    write_atomic(
        &paths.desired_state_file(),
        &serde_json::to_vec_pretty(held)?,
        0o600,
    )?;
    if changed {
        let version = held.desired.policy.version;
        tracing::info!(version, group = %held.desired.group, "policy applied");
        outbox
            .push(events::POLICY_APPLIED, json!({"version": version}))
            .await?;
    }
    Ok(())
}

/// Sends everything in the outbox, oldest first; returns how many events were sent.
async fn drain(client: &ServerClient, outbox: &Outbox) -> Result<u64> {
    let mut sent = 0;
    loop {
        let batch = outbox.oldest(BATCH_EVENTS, BATCH_BYTES).await?;
        let Some(last) = batch.last().map(|e| e.seq) else {
            return Ok(sent);
        };
        let n = batch.len() as u64;
        client.upload(&EventBatch { events: batch }).await?;
        // only now, with the server's acknowledgement, may the events go
        outbox.acknowledge_through(last).await?;
        sent += n;
    }
}

async fn upload_loop(client: ServerClient, shared: Arc<Shared>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(250);
    const MAX_BACKOFF: Duration = Duration::from_secs(15);
    let mut backoff = FIRST_BACKOFF;
    loop {
        match drain(&client, &shared.outbox).await {
            Ok(_) => {
                backoff = FIRST_BACKOFF;
                // events also arrive from other tasks: look at least every second
                let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake.notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event upload failed");
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Serves the local control socket: root only.
async fn control_loop(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
            let reply = if uid != 0 && uid != effective_uid() {
                Reply::refused("only root may control the agent")
            } else {
                match control::read_request(&mut stream).await {
                    Some(request) => handle(request, &shared).await,
                    None => Reply::refused("not a request"),
                }
            };
            control::write_reply(&mut stream, &reply).await;
        });
    }
}

/// This process's effective user id, from /proc (no unsafe call needed).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0)
}

async fn handle(request: Request, shared: &Shared) -> Reply {
    match request {
        Request::Note { text, count } => {
            if count == 0 || count > 1_000_000 {
                return Reply::refused("count must be between 1 and 1000000");
            }
            let notes: Vec<_> = (0..count)
                .map(|i| {
                    let body = if count == 1 {
                        json!({"text": text})
                    } else {
                        json!({"text": text, "index": i})
                    };
                    (events::AGENT_NOTE.to_owned(), body)
                })
                .collect();
            for chunk in notes.chunks(10_000) {
                if let Err(e) = shared.outbox.push_many(chunk).await {
                    return Reply::refused(&format!("writing to the outbox: {e}"));
                }
            }
            shared.wake.notify_one();
            Reply::done(format!("{count} note(s) written to the outbox"))
        }
        Request::Unload { password } => unload(password, shared).await,
        Request::UnloadWithToken { token } => unload_with_token(&token, shared).await,
        Request::Status => match shared.outbox.pending().await {
            Ok(n) => Reply {
                ok: true,
                message: format!("{n} event(s) waiting"),
                pending: Some(n),
                protections: Some(shared.protections()),
                data: None,
            },
            Err(e) => Reply::refused(&e.to_string()),
        },
        Request::RansomwareStatus => {
            let status = shared.ransomware.status();
            let incidents = shared.ransomware.incidents().len();
            let settings = shared.ransomware_settings();
            let (held, held_ms, backlog) = shared.ransomware.held();
            let monitor = shared.ransomware.monitor_status();
            // `folders` as the policy lists them, `protected` as protected on this host
            Reply::with_data(
                status.reason.clone().unwrap_or_default(),
                json!({"status": status, "incidents": incidents, "mode": settings.mode, "folders": settings.folders,
                       "protected": shared.ransomware.protected_folders(),
                       "held": {"opens": held, "ms": held_ms}, "backlog": backlog,
                       "calm": monitor.map(|m| json!({"folders": m.calm_folders, "guarded": m.guarded,
                           "permission_events": m.permission_events, "lease_breaks": m.lease_breaks,
                           "lease_break_ms": m.lease_break_ms,
                           "refused_unasked": m.refused_unasked, "changes_lost": m.changes_lost,
                           "let_through": m.let_through, "processes": m.creations.to_string()}))}),
            )
        }
        Request::RansomwareIncidents => {
            let incidents: Vec<_> = shared
                .ransomware
                .incidents()
                .into_iter()
                .map(|r| r.incident)
                .collect();
            Reply::with_data(format!("{} incident(s)", incidents.len()), json!(incidents))
        }
        Request::RansomwareRestore { id } => {
            let ransomware = shared.ransomware.clone();
            let done = tokio::task::spawn_blocking(move || ransomware.restore(&id)).await;
            shared.wake.notify_one();
            match done {
                Ok(Ok(incident)) => Reply::with_data(
                    format!("incident {} restored", incident.id),
                    json!(incident),
                ),
                Ok(Err(e)) => Reply::refused(&e),
                Err(e) => Reply::refused(&format!("restoring: {e}")),
            }
        }
        Request::RansomwareVault => {
            let ransomware = shared.ransomware.clone();
            match tokio::task::spawn_blocking(move || ransomware.vault()).await {
                Ok(v) => Reply::with_data(format!("{} copies", v.copies), json!(v)),
                Err(e) => Reply::refused(&e.to_string()),
            }
        }
    }
}

async fn refuse_unload(shared: &Shared, reason: &str) -> Reply {
    let _ = shared
        .outbox
        .push(events::UNLOAD_REFUSED, json!({ "reason": reason }))
        .await;
    shared.wake.notify_one();
    // slow down guessing
    tokio::time::sleep(Duration::from_secs(1)).await;
    Reply::refused(reason)
}

async fn lift(shared: &Shared, by: String) -> Reply {
    let protection = shared.protection.clone();
    let _ =
        tokio::task::spawn_blocking(move || protection.lock().expect("protection lock").unload())
            .await;
    let minutes = crate::protection::UNLOAD_PERIOD.as_secs() / 60;
    let _ = shared
        .outbox
        .push(events::UNLOADED, json!({"by": by, "minutes": minutes}))
        .await;
    let _ = shared
        .outbox
        .push(
            events::PROTECTION_STATUS,
            json!({"protections": shared.protections()}),
        )
        .await;
    shared.wake.notify_one();
    Reply::done(format!(
        "self-protection lifted for {minutes} minutes (or until the agent restarts)"
    ))
}

async fn unload_with_token(token: &str, shared: &Shared) -> Reply {
    let paths = &shared.paths;
    let Ok(key) = std::fs::read_to_string(paths.server_signing_key_file()) else {
        return Reply::refused(
            "this agent has no server signing key (enrolled by an older server)",
        );
    };
    let agent_id = match crate::config::Enrollment::load(paths) {
        Ok(e) => e.config.agent_id,
        Err(e) => return Reply::refused(&format!("{e:#}")),
    };
    let claims = match rampart_protocol::maintenance::verify(token, &key, &agent_id, now_ms()) {
        Ok(c) => c,
        Err(e) => return refuse_unload(shared, &e.to_string()).await,
    };
    // once only: the nonce is recorded before the unload takes effect
    let used_file = paths.used_tokens_file();
    let mut used = std::fs::read_to_string(&used_file).unwrap_or_default();
    if used.lines().any(|n| n == claims.nonce) {
        return refuse_unload(shared, "this maintenance token was used already").await;
    }
    used.push_str(&claims.nonce);
    used.push('\n');
    if let Err(e) = write_atomic(&used_file, used.as_bytes(), 0o600) {
        return Reply::refused(&format!("recording the token: {e}"));
    }
    lift(
        shared,
        format!("maintenance token issued by {}", claims.issued_by),
    )
    .await
}

async fn unload(password: String, shared: &Shared) -> Reply {
    let hash = shared
        .held
        .lock()
        .expect("held lock")
        .as_ref()
        .and_then(|h| h.desired.policy.policy.unload.password_hash.clone());
    let Some(hash) = hash else {
        return Reply::refused("this agent's policy has no unload password");
    };
    let ok =
        tokio::task::spawn_blocking(move || rampart_protocol::passwords::matches(&password, &hash))
            .await
            .unwrap_or(false);
    if !ok {
        return refuse_unload(shared, "wrong unload password").await;
    }
    lift(shared, "unload password".to_owned()).await
}
