//! The events phase: every simulated agent uploads K events with sequence numbers 1..K in
//! batches, like the agent's outbox upload loop; then one batch per agent is sent again (a
//! retried upload), and every event is read back through the administrator API to prove that
//! exactly agents × K events are stored, none missing and none twice.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_cli::admin_client::AdminClient;
use rampart_protocol::admin::EventsQuery;
use rampart_protocol::api;
use rampart_protocol::events::{Event, EventAck, EventBatch};
use reqwest::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::pool::Pool;
use crate::setup::SimAgent;
use crate::stats::{error_chain, micros, transport_kind, ErrorTally, Latency};

/// The kind of the benchmark's events.
pub const KIND: &str = "bench.synthetic";

/// What the events phase measured and verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsResult {
    /// Agents that uploaded.
    pub agents: u64,
    /// Events per agent.
    pub per_agent: u64,
    /// Events per upload, at most.
    pub batch: u64,
    /// Events sent (agents × per agent).
    pub sent: u64,
    /// Wall time of the uploads, seconds.
    pub seconds: f64,
    /// Events ingested per second.
    pub per_s: f64,
    /// Latency of one upload.
    pub batch_latency: Latency,
    /// Events the server said it stored.
    pub accepted: u64,
    /// Events the server called duplicates on the first upload (0 unless an upload was
    /// retried after its answer was lost).
    pub first_upload_duplicates: u64,
    /// Failed uploads by kind (each one is retried until it succeeds or fails 5 times).
    pub upload_errors: ErrorTally,
    /// Events sent a second time (one batch per agent).
    pub resent: u64,
    /// Of those, how many the server reported as duplicates (should equal `resent`).
    pub resent_duplicates: u64,
    /// Of those, how many the server stored again (should be 0).
    pub resent_accepted: u64,
    /// Events read back through the administrator API.
    pub read_back: u64,
    /// Wall time of the read-back, seconds.
    pub read_seconds: f64,
    /// (agent, seq) pairs sent but not read back.
    pub lost: u64,
    /// (agent, seq) pairs read back more than once.
    pub duplicated: u64,
    /// Events read back that were never sent (sequence number out of range).
    pub unexpected: u64,
    /// Read-back failures by kind.
    pub read_errors: ErrorTally,
    /// Everything sent is stored exactly once, and the re-sent batches changed nothing.
    pub verified: bool,
}

fn events(from: u64, to: u64, host: &str) -> Vec<Event> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    (from..=to)
        .map(|seq| Event {
            seq,
            kind: KIND.to_owned(),
            time_ms: now,
            body: json!({
                "host": host,
                "n": seq,
                "detail": "synthetic event of the check-in load benchmark",
            }),
        })
        .collect()
}

/// Uploads one batch, retrying transport errors and 5xx answers (an upload is idempotent).
async fn upload(
    pool: &Pool,
    agent: &SimAgent,
    batch: &EventBatch,
    errors: &Mutex<ErrorTally>,
    latency_us: &Mutex<Vec<u64>>,
) -> Option<EventAck> {
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let lease = pool.acquire(agent.index).await;
        let sent = Instant::now();
        let result = lease
            .client
            .post(pool.url(api::EVENTS))
            .header(AUTHORIZATION, agent.authorization.clone())
            .json(batch)
            .send()
            .await;
        let failure = match result {
            Ok(resp) if resp.status().is_success() => match resp.json::<EventAck>().await {
                Ok(ack) => {
                    latency_us
                        .lock()
                        .expect("lock")
                        .push(micros(sent.elapsed()));
                    return Some(ack);
                }
                Err(e) => (transport_kind(&e).to_owned(), error_chain(&e)),
            },
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let failure = (format!("http {}", status.as_u16()), text);
                if status.is_client_error() {
                    errors.lock().expect("lock").add(&failure.0, &failure.1);
                    return None;
                }
                failure
            }
            Err(e) => (transport_kind(&e).to_owned(), error_chain(&e)),
        };
        errors.lock().expect("lock").add(&failure.0, &failure.1);
    }
    None
}

/// Runs the events phase: uploads, re-sends, and verification.
pub async fn run(
    agents: Arc<Vec<SimAgent>>,
    pool: Arc<Pool>,
    admin: &AdminClient,
    per_agent: u64,
    batch: u64,
    concurrency: usize,
) -> EventsResult {
    let batch = batch.clamp(1, rampart_protocol::events::MAX_BATCH_EVENTS as u64);
    let n = agents.len() as u64;
    let errors = Arc::new(Mutex::new(ErrorTally::default()));
    let latency_us = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));

    // uploads: each agent sends its events in order, one batch after the other
    eprintln!("  uploading {per_agent} events for each of {n} agents in batches of {batch}");
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..agents.len() {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (agents, pool, errors, latency_us, accepted, duplicates) = (
            agents.clone(),
            pool.clone(),
            errors.clone(),
            latency_us.clone(),
            accepted.clone(),
            duplicates.clone(),
        );
        tasks.spawn(async move {
            let agent = &agents[i];
            let host = format!("agent-{i}");
            let mut from = 1;
            while from <= per_agent {
                let to = (from + batch - 1).min(per_agent);
                let body = EventBatch {
                    events: events(from, to, &host),
                };
                if let Some(ack) = upload(&pool, agent, &body, &errors, &latency_us).await {
                    accepted.fetch_add(ack.accepted, Ordering::Relaxed);
                    duplicates.fetch_add(ack.duplicates, Ordering::Relaxed);
                }
                from = to + 1;
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let sent = n * per_agent;
    eprintln!(
        "  uploaded {sent} events in {seconds:.1} s ({:.0} events/s)",
        sent as f64 / seconds.max(1e-9)
    );

    // a retried upload: the first batch of every agent again
    let resend_errors = Arc::new(Mutex::new(ErrorTally::default()));
    let resent_accepted = Arc::new(AtomicU64::new(0));
    let resent_duplicates = Arc::new(AtomicU64::new(0));
    let first = batch.min(per_agent);
    for i in 0..agents.len() {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (agents, pool, errors, acc, dup) = (
            agents.clone(),
            pool.clone(),
            resend_errors.clone(),
            resent_accepted.clone(),
            resent_duplicates.clone(),
        );
        tasks.spawn(async move {
            let agent = &agents[i];
            let body = EventBatch {
                events: events(1, first, &format!("agent-{i}")),
            };
            let unused = Mutex::new(Vec::new());
            if let Some(ack) = upload(&pool, agent, &body, &errors, &unused).await {
                acc.fetch_add(ack.accepted, Ordering::Relaxed);
                dup.fetch_add(ack.duplicates, Ordering::Relaxed);
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let resent = n * first;

    // read every event back, agent by agent
    eprintln!("  reading the events back through the administrator API");
    let read_started = Instant::now();
    let read_gate = Arc::new(Semaphore::new(8));
    let read_errors = Arc::new(Mutex::new(ErrorTally::default()));
    let counts = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64))); // read, lost, duplicated, unexpected
    for agent in agents.iter() {
        let permit = read_gate
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let (admin, read_errors, counts) = (admin.clone(), read_errors.clone(), counts.clone());
        let id = agent.id.clone();
        tasks.spawn(async move {
            let query = EventsQuery {
                agent: Some(id),
                ..EventsQuery::default()
            };
            match admin.all_events(&query).await {
                Ok(records) => {
                    let mut seen = HashSet::with_capacity(records.len());
                    let (mut duplicated, mut unexpected) = (0, 0);
                    for r in &records {
                        if r.seq == 0 || r.seq > per_agent || r.kind != KIND {
                            unexpected += 1;
                        } else if !seen.insert(r.seq) {
                            duplicated += 1;
                        }
                    }
                    let mut c = counts.lock().expect("lock");
                    c.0 += records.len() as u64;
                    c.1 += per_agent - seen.len() as u64;
                    c.2 += duplicated;
                    c.3 += unexpected;
                }
                Err(e) => {
                    read_errors
                        .lock()
                        .expect("lock")
                        .add("read", &format!("{e:#}"));
                    counts.lock().expect("lock").1 += per_agent;
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let read_seconds = read_started.elapsed().as_secs_f64();
    let (read_back, lost, duplicated, unexpected) = *counts.lock().expect("lock");

    let mut upload_errors = errors.lock().expect("lock").clone();
    upload_errors.merge(&resend_errors.lock().expect("lock"));
    let read_errors = read_errors.lock().expect("lock").clone();
    let accepted = accepted.load(Ordering::Relaxed);
    let resent_accepted = resent_accepted.load(Ordering::Relaxed);
    let resent_duplicates = resent_duplicates.load(Ordering::Relaxed);
    // a batch retried after a lost answer comes back as duplicates: stored all the same
    let first_upload_duplicates = duplicates.load(Ordering::Relaxed);
    let batch_latency = Latency::from_micros(&mut latency_us.lock().expect("lock"));
    let verified = read_back == sent
        && lost == 0
        && duplicated == 0
        && unexpected == 0
        && accepted + first_upload_duplicates == sent
        && resent_accepted == 0
        && resent_duplicates == resent
        && read_errors.total() == 0;
    EventsResult {
        agents: n,
        per_agent,
        batch,
        sent,
        seconds,
        per_s: sent as f64 / seconds.max(1e-9),
        batch_latency,
        accepted,
        first_upload_duplicates,
        upload_errors,
        resent,
        resent_duplicates,
        resent_accepted,
        read_back,
        read_seconds,
        lost,
        duplicated,
        unexpected,
        read_errors,
        verified,
    }
}
