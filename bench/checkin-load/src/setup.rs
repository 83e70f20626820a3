//! Setup: one enrollment token for the whole simulated fleet, then every agent enrolls through
//! the real `POST /api/v1/enroll` endpoint and makes its first check-in (without an ETag), which
//! gives it the desired state and the ETag it sends from then on. Credentials stay in memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rampart_protocol::api;
use rampart_protocol::checkin::{
    AgentIdentity, CheckinRequest, DesiredState, ProtectionState, ProtectionStatus,
};
use rampart_protocol::enroll::{EnrollRequest, EnrollResponse, EnrollmentToken};
use reqwest::header::{HeaderValue, AUTHORIZATION, ETAG};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::pool::Pool;
use crate::stats::{error_chain, transport_kind, ErrorTally};

/// One simulated agent, enrolled and checked in once.
pub struct SimAgent {
    /// Index in the fleet; picks the agent's connection.
    pub index: usize,
    /// The agent id the server gave it.
    pub id: String,
    /// `Bearer AGENT_ID.SECRET`.
    pub authorization: HeaderValue,
    /// The ETag of the desired state it holds, for `If-None-Match`.
    pub etag: HeaderValue,
    /// Its steady-state check-in body (JSON of a [`CheckinRequest`] reporting the policy
    /// version it applied).
    pub checkin_body: Vec<u8>,
}

/// How enrollment went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EnrollResult {
    /// Agents asked to enroll.
    pub requested: u64,
    /// Agents enrolled and checked in once.
    pub enrolled: u64,
    /// Wall time of the enrollment phase, seconds.
    pub seconds: f64,
    /// Enrollments (each with its first check-in) per second.
    pub per_s: f64,
    /// Failures by kind.
    pub errors: ErrorTally,
}

/// The identity simulated agent `i` reports: the real agent's OS, kernel and build, with a
/// host name of its own.
pub fn identity(run_tag: &str, i: usize) -> AgentIdentity {
    let mut id = rampart_agent::identity::current();
    id.hostname = format!("bench-{run_tag}-{i:06}");
    id
}

/// The protections a simulated agent reports: the real agent's three, self-protection
/// enforced and the other two off with a reason, so each check-in carries a report of the
/// real size.
pub fn protections() -> Vec<ProtectionStatus> {
    let off = |name: &str| ProtectionStatus {
        name: name.to_owned(),
        state: ProtectionState::Off,
        reason: Some("not available in this agent build".to_owned()),
    };
    vec![
        ProtectionStatus {
            name: "self-protection".to_owned(),
            state: ProtectionState::Enforced,
            reason: None,
        },
        off("ransomware"),
        off("on-access-scan"),
    ]
}

/// Creates the enrollment token: `max_uses` uses, valid for a day, into `group`.
pub async fn create_token(
    admin: &rampart_cli::admin_client::AdminClient,
    group: &str,
    max_uses: u64,
    ca_pem: &str,
) -> Result<EnrollmentToken> {
    let created = admin
        .create_enrollment_token(group, 86_400, max_uses)
        .await
        .context("creating the enrollment token")?;
    let token: EnrollmentToken = created
        .token
        .parse()
        .map_err(|e: String| anyhow!(e))
        .context("reading the enrollment token")?;
    // the same check a real agent makes before it trusts the server
    let pinned = rampart_agent::client::ca_fingerprint(ca_pem)?;
    if pinned != token.ca_sha256 {
        bail!(
            "the CA file (sha256 {pinned}) is not the server's CA (sha256 {}): wrong --ca?",
            token.ca_sha256
        );
    }
    Ok(token)
}

fn fail_kind(status: StatusCode) -> String {
    format!("http {}", status.as_u16())
}

async fn error_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    match resp.json::<rampart_protocol::ErrorBody>().await {
        Ok(b) => format!("{status}: {}", b.error),
        Err(_) => status.to_string(),
    }
}

/// Enrolls agent `i` and makes its first check-in.
async fn enroll_one(
    pool: &Pool,
    i: usize,
    token: &str,
    identity: AgentIdentity,
) -> Result<SimAgent, (String, String)> {
    let lease = pool.acquire(i).await;
    let transport = |e: reqwest::Error| (transport_kind(&e).to_owned(), error_chain(&e));
    let resp = lease
        .client
        .post(pool.url(api::ENROLL))
        .json(&EnrollRequest {
            token: token.to_owned(),
            identity: identity.clone(),
        })
        .send()
        .await
        .map_err(transport)?;
    if !resp.status().is_success() {
        return Err((
            format!("enroll {}", fail_kind(resp.status())),
            error_message(resp).await,
        ));
    }
    let enrolled: EnrollResponse = resp.json().await.map_err(transport)?;
    let authorization = HeaderValue::from_str(&format!("Bearer {}", enrolled.credential))
        .map(|mut v| {
            v.set_sensitive(true);
            v
        })
        .map_err(|e| ("credential".to_owned(), e.to_string()))?;
    let protections = protections();
    let first = CheckinRequest {
        identity: identity.clone(),
        protections: protections.clone(),
        applied_policy_version: None,
        components: Vec::new(),
    };
    let resp = lease
        .client
        .post(pool.url(api::CHECKIN))
        .header(AUTHORIZATION, authorization.clone())
        .json(&first)
        .send()
        .await
        .map_err(transport)?;
    if resp.status() != StatusCode::OK {
        return Err((
            format!("first check-in {}", fail_kind(resp.status())),
            error_message(resp).await,
        ));
    }
    let etag = resp.headers().get(ETAG).cloned().ok_or_else(|| {
        (
            "first check-in".to_owned(),
            "no ETag in the answer".to_owned(),
        )
    })?;
    let desired: DesiredState = resp.json().await.map_err(transport)?;
    let steady = CheckinRequest {
        identity,
        protections,
        applied_policy_version: Some(desired.policy.version),
        components: Vec::new(),
    };
    Ok(SimAgent {
        index: i,
        id: enrolled.agent_id,
        authorization,
        etag,
        checkin_body: serde_json::to_vec(&steady).expect("wire types serialize"),
    })
}

/// Enrolls `n` agents with `token`, `concurrency` at a time, reporting progress on stderr.
pub async fn enroll_all(
    pool: Arc<Pool>,
    token: &EnrollmentToken,
    n: usize,
    concurrency: usize,
    run_tag: &str,
) -> (Vec<SimAgent>, EnrollResult) {
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(ErrorTally::default()));
    let progress = {
        let done = done.clone();
        let errors = errors.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let d = done.load(Ordering::Relaxed);
                let failed = errors.lock().expect("tally lock").total();
                eprintln!(
                    "  enrolled {d}/{n} ({:.0}/s), failed {failed}",
                    d as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let credential: Arc<str> = token.credential().into();
    let mut tasks = JoinSet::new();
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let pool = pool.clone();
        let credential = credential.clone();
        let done = done.clone();
        let errors = errors.clone();
        let identity = identity(run_tag, i);
        tasks.spawn(async move {
            let result = enroll_one(&pool, i, &credential, identity).await;
            drop(permit);
            match result {
                Ok(agent) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    Some(agent)
                }
                Err((kind, message)) => {
                    errors.lock().expect("tally lock").add(&kind, &message);
                    None
                }
            }
        });
        // collect finished ones as we go so the set stays small
        while let Some(joined) = tasks.try_join_next() {
            agents.extend(joined.ok().flatten());
        }
    }
    while let Some(joined) = tasks.join_next().await {
        agents.extend(joined.ok().flatten());
    }
    progress.abort();
    agents.sort_by_key(|a| a.index);
    let seconds = started.elapsed().as_secs_f64();
    let errors = errors.lock().expect("tally lock").clone();
    let result = EnrollResult {
        requested: n as u64,
        enrolled: agents.len() as u64,
        seconds,
        per_s: agents.len() as f64 / seconds.max(1e-9),
        errors,
    };
    eprintln!(
        "  enrolled {}/{n} in {seconds:.1} s ({:.0}/s), failed {}",
        result.enrolled,
        result.per_s,
        result.errors.total()
    );
    (agents, result)
}
