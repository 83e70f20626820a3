//! The agent daemon: check in, apply the desired state, and drain the outbox to the server.
//!
//! Two loops run side by side. The check-in loop reports identity and protection states every
//! policy interval (±10 % jitter, so a fleet restarted together spreads out), sending the ETag
//! of the desired state it has so that an unchanged state costs a `304`. The upload loop sends
//! the outbox's oldest events in batches and deletes them only after the server acknowledged
//! them; when the server is away it backs off and the events wait on disk.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rampart_protocol::checkin::{CheckinRequest, DesiredState, ProtectionState, ProtectionStatus};
use rampart_protocol::events::{self, EventBatch};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

use crate::client::{CheckinAnswer, ServerClient};
use crate::config::Enrollment;
use crate::files::write_atomic;
use crate::identity;
use crate::outbox::Outbox;
use crate::paths::AgentPaths;
use crate::status::AgentStatus;

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

/// The protections this build has, and their state on this host.
pub fn protections() -> Vec<ProtectionStatus> {
    ["self-protection", "ransomware", "on-access-scan"]
        .into_iter()
        .map(|name| ProtectionStatus {
            name: name.to_owned(),
            state: ProtectionState::Off,
            reason: Some("not available in this agent build".to_owned()),
        })
        .collect()
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
    let enrollment = Enrollment::load(&paths)?;
    let client = enrollment.client()?;
    let outbox = Outbox::open(&paths.outbox_db())
        .await
        .with_context(|| format!("opening the outbox {}", paths.outbox_db().display()))?;
    let protections = protections();
    outbox
        .push(
            events::AGENT_STARTED,
            json!({"build": identity::AGENT_BUILD, "pid": std::process::id()}),
        )
        .await?;
    outbox
        .push(
            events::PROTECTION_STATUS,
            json!({"protections": protections}),
        )
        .await?;
    tracing::info!(agent_id = %enrollment.config.agent_id, server = %enrollment.config.server_url, "agent started");

    let wake = Arc::new(Notify::new());
    let mut status = AgentStatus {
        pid: std::process::id(),
        started_ms: now_ms(),
        agent_id: enrollment.config.agent_id.clone(),
        group: enrollment.config.group.clone(),
        server_url: enrollment.config.server_url.clone(),
        protections: protections.clone(),
        ..Default::default()
    };
    let uploader = tokio::spawn(upload_loop(client.clone(), outbox.clone(), wake.clone()));
    let checkins = checkin_loop(&paths, &client, &outbox, &wake, &mut status, protections);
    tokio::select! {
        () = checkins => {}
        () = shutdown => {}
    }
    uploader.abort();
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
    outbox.close().await;
    tracing::info!("agent stopped");
    Ok(())
}

async fn checkin_loop(
    paths: &AgentPaths,
    client: &ServerClient,
    outbox: &Outbox,
    wake: &Notify,
    status: &mut AgentStatus,
    protections: Vec<ProtectionStatus>,
) {
    let mut held = load_held(paths);
    loop {
        let request = CheckinRequest {
            identity: identity::current(),
            protections: protections.clone(),
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
                let new = HeldState { etag, desired };
                if let Err(e) = apply(paths, outbox, &new, changed).await {
                    tracing::error!(error = %e, "could not apply the desired state");
                    status.last_error = Some(format!("applying policy {version}: {e}"));
                } else {
                    held = Some(new);
                    // report the applied version at once rather than one interval later
                    again_now = changed;
                    wake.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "check-in failed");
                status.last_error = Some(e.to_string());
            }
        }
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

async fn upload_loop(client: ServerClient, outbox: Outbox, wake: Arc<Notify>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(250);
    const MAX_BACKOFF: Duration = Duration::from_secs(15);
    let mut backoff = FIRST_BACKOFF;
    loop {
        match drain(&client, &outbox).await {
            Ok(_) => {
                backoff = FIRST_BACKOFF;
                // other processes (`rampart agent note`) write too: look at least every second
                let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event upload failed");
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
