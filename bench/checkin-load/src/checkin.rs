//! The check-in phase: every simulated agent checks in on its own schedule, like the real
//! agent's check-in loop, and each check-in's latency and punctuality is recorded.
//!
//! The schedule is open-loop: agent `i` first checks in at a random phase, uniform over one
//! interval (see [`first_phase`]), then every interval ±10 % after its previous *scheduled* time. A slow answer does
//! not slow the offered load down; it makes the next check-ins of that agent late instead, and
//! lateness is reported. Only check-ins scheduled after the warm-up count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::pool::Pool;
use crate::setup::SimAgent;
use crate::stats::{self, error_chain, micros, transport_kind, ErrorTally, Latency};

/// How the check-in phase runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Mean time between two check-ins of one agent.
    pub interval: Duration,
    /// Time from the start whose check-ins are not counted.
    pub warmup: Duration,
    /// Length of the whole phase, warm-up included.
    pub duration: Duration,
    /// A check-in sent later than this after its scheduled time is late.
    pub late_after: Duration,
    /// Check-ins not sent this long after the end are given up (counted as not sent).
    pub grace: Duration,
    /// The server's process id, to measure its CPU time during the window.
    pub server_pid: Option<String>,
    /// The server's port, to count the connections the simulator holds.
    pub server_port: Option<u16>,
}

/// What the check-in phase measured, over the window after the warm-up.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckinResult {
    /// Mean check-in interval per agent, seconds.
    pub interval_s: f64,
    /// Warm-up excluded from the numbers, seconds.
    pub warmup_s: f64,
    /// The measured window, seconds.
    pub window_s: f64,
    /// Agents that took part.
    pub agents: u64,
    /// Check-ins per second the fleet offers: agents / interval.
    pub offered_per_s: f64,
    /// Check-ins scheduled in the window.
    pub scheduled: u64,
    /// Answered with 304 or 200.
    pub ok: u64,
    /// Answered with 304 Not Modified (the steady state).
    pub not_modified: u64,
    /// Answered with 200 and a new desired state.
    pub changed: u64,
    /// Successful check-ins per second: `ok` over the window, or over the time until the last
    /// of them was answered when that is longer (the server fell behind).
    pub achieved_per_s: f64,
    /// The fleet that would produce `achieved_per_s` at a 60 s interval.
    pub fleet_at_60s: f64,
    /// Latency of successful check-ins: request handed to the connection → answer read.
    pub latency: Latency,
    /// Failed check-ins by kind.
    pub errors: ErrorTally,
    /// Check-ins sent more than `late_after_s` after their scheduled time.
    pub late: u64,
    /// Of the late ones, those that fell due while the agent's previous check-in was still
    /// unanswered (an agent has one check-in in flight at a time, like the real one): late
    /// because the server answered slowly, not because the simulator fell behind.
    pub late_behind: u64,
    /// Check-ins that fell due while the agent's previous check-in was still unanswered.
    pub behind: u64,
    /// The lateness threshold, seconds.
    pub late_after_s: f64,
    /// Scheduled time → request sent.
    pub send_lag: Latency,
    /// Largest scheduled time → task woke, over the check-ins whose agent was waiting for them
    /// (not behind): the simulator's own lag.
    pub timer_lag_max_ms: f64,
    /// Largest wait for a free connection (HTTP/1.1 and new-connection modes).
    pub connection_wait_max_ms: f64,
    /// Check-ins given up because the agent was still more than the grace period behind at
    /// the end.
    pub not_sent: u64,
    /// Connections to the server the simulator held at the end.
    pub client_connections: Option<u64>,
    /// Server CPU time used during the window, seconds.
    pub server_cpu_s: Option<f64>,
    /// Server CPU during the window, in cores (1.0 = one core busy).
    pub server_cores: Option<f64>,
    /// Simulator CPU time used during the window, seconds.
    pub client_cpu_s: Option<f64>,
    /// Simulator CPU during the window, in cores.
    pub client_cores: Option<f64>,
    /// The whole machine's busy CPU during the window, in cores: what is beyond the server and
    /// the simulator was used by other processes.
    pub machine_busy_cores: Option<f64>,
}

#[derive(Default)]
struct Collector {
    latency_us: Vec<u64>,
    send_lag_us: Vec<u64>,
    timer_lag_max_us: u64,
    wait_max_us: u64,
    late: u64,
    late_behind: u64,
    behind: u64,
    not_modified: u64,
    changed: u64,
    not_sent: u64,
    errors: ErrorTally,
    last_done: Option<Instant>,
}

#[derive(Default)]
struct Live {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    late: AtomicU64,
}

struct Shared {
    agents: Arc<Vec<SimAgent>>,
    pool: Arc<Pool>,
    url: String,
    start: Instant,
    window_start: Instant,
    end: Instant,
    plan: Plan,
    collector: Mutex<Collector>,
    live: Live,
}

enum Outcome {
    NotModified,
    Changed(Option<HeaderValue>),
    Failed(String, String),
}

/// One check-in of `agent` with `etag`.
async fn send(
    shared: &Shared,
    agent: &SimAgent,
    etag: &HeaderValue,
    client: &reqwest::Client,
) -> Outcome {
    let result = client
        .post(&shared.url)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, agent.authorization.clone())
        .header(IF_NONE_MATCH, etag.clone())
        .body(agent.checkin_body.clone())
        .send()
        .await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(transport_kind(&e).to_owned(), error_chain(&e)),
    };
    let status = resp.status();
    let new_etag = resp.headers().get(ETAG).cloned();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(transport_kind(&e).to_owned(), error_chain(&e)),
    };
    match status {
        StatusCode::NOT_MODIFIED => Outcome::NotModified,
        StatusCode::OK => Outcome::Changed(new_etag),
        s => Outcome::Failed(
            format!("http {}", s.as_u16()),
            String::from_utf8_lossy(&body).into_owned(),
        ),
    }
}

/// The check-in loop of simulated agent `index`.
async fn agent_loop(shared: Arc<Shared>, index: usize, phase: f64) {
    let agent = &shared.agents[index];
    let mut etag = agent.etag.clone();
    let interval = shared.plan.interval;
    let give_up = shared.end + shared.plan.grace;
    let mut scheduled = shared.start + interval.mul_f64(phase);
    while scheduled < shared.end {
        let counted = scheduled >= shared.window_start;
        // due already: the previous check-in was answered after this one's time
        let behind = Instant::now() >= scheduled;
        tokio::time::sleep_until(scheduled).await;
        let woke = Instant::now();
        if woke > give_up {
            if counted {
                shared.collector.lock().expect("collector lock").not_sent += 1;
            }
            scheduled += interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1));
            continue;
        }
        let lease = shared.pool.acquire(agent.index).await;
        let sent = Instant::now();
        shared.live.sent.fetch_add(1, Ordering::Relaxed);
        shared.live.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = send(&shared, agent, &etag, &lease.client).await;
        let done = Instant::now();
        drop(lease);
        shared.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        let lag = sent - scheduled;
        let late = lag > shared.plan.late_after;
        if late {
            shared.live.late.fetch_add(1, Ordering::Relaxed);
        }
        match &outcome {
            Outcome::Failed(..) => shared.live.failed.fetch_add(1, Ordering::Relaxed),
            _ => shared.live.ok.fetch_add(1, Ordering::Relaxed),
        };
        if let Outcome::Changed(Some(tag)) = &outcome {
            etag = tag.clone();
        }
        if counted {
            let mut c = shared.collector.lock().expect("collector lock");
            c.send_lag_us.push(micros(lag));
            if !behind {
                c.timer_lag_max_us = c.timer_lag_max_us.max(micros(woke - scheduled));
            }
            c.wait_max_us = c.wait_max_us.max(micros(sent - woke));
            c.late += u64::from(late);
            c.late_behind += u64::from(late && behind);
            c.behind += u64::from(behind);
            match outcome {
                Outcome::NotModified => {
                    c.not_modified += 1;
                    c.latency_us.push(micros(done - sent));
                    c.last_done = Some(c.last_done.map_or(done, |d| d.max(done)));
                }
                Outcome::Changed(_) => {
                    c.changed += 1;
                    c.latency_us.push(micros(done - sent));
                    c.last_done = Some(c.last_done.map_or(done, |d| d.max(done)));
                }
                Outcome::Failed(kind, message) => c.errors.add(&kind, &message),
            }
        }
        scheduled += interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1));
    }
}

/// When an agent first checks in, in intervals from the start: a random phase, uniform over
/// one (jittered) interval. The interval it falls in is drawn in proportion to its length, as
/// for an agent that has been running for long (the stationary start of a renewal process), so
/// the fleet offers agents / interval check-ins per second from the first second on; with a
/// plain uniform phase over [0, 1) the ±10 % jitter would thin out the load around the end of
/// the first interval.
fn first_phase(rng: &mut impl Rng) -> f64 {
    // the interval's length J is uniform over [0.9, 1.1); length-biased, its density is
    // proportional to j, with distribution function (j² − 0.81) / 0.4
    let length = (0.81 + 0.4 * rng.gen::<f64>()).sqrt();
    rng.gen::<f64>() * length
}

/// CPU seconds of the server (if known), of this process, and of the whole machine.
fn cpu_now(server_pid: Option<&str>) -> [Option<f64>; 3] {
    [
        server_pid.and_then(stats::cpu_seconds),
        stats::cpu_seconds("self"),
        stats::machine_busy_seconds(),
    ]
}

/// Runs the check-in phase for `agents` over `pool` and returns what it measured.
pub async fn run(agents: Arc<Vec<SimAgent>>, pool: Arc<Pool>, plan: Plan) -> CheckinResult {
    let n = agents.len();
    // a moment to spawn every agent before the first one is due
    let start = Instant::now() + Duration::from_millis(500);
    let shared = Arc::new(Shared {
        url: pool.url(rampart_protocol::api::CHECKIN),
        agents,
        pool,
        start,
        window_start: start + plan.warmup,
        end: start + plan.duration,
        plan: plan.clone(),
        collector: Mutex::default(),
        live: Live::default(),
    });

    // CPU and connections at the window's edges
    let sampler = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let pid = shared.plan.server_pid.as_deref();
            tokio::time::sleep_until(shared.window_start).await;
            let before = cpu_now(pid);
            tokio::time::sleep_until(shared.end).await;
            let after = cpu_now(pid);
            let connections = shared.plan.server_port.map(stats::established_to_port);
            let diff = |i: usize| Some(after[i]? - before[i]?);
            ([diff(0), diff(1), diff(2)], connections)
        })
    };
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(10), Duration::from_secs(10));
            loop {
                tick.tick().await;
                let l = &shared.live;
                let t = start.elapsed().as_secs_f64();
                let phase = if Instant::now() < shared.window_start {
                    " (warm-up)"
                } else {
                    ""
                };
                eprintln!(
                    "  t={t:.0}s{phase}: sent {}, ok {}, failed {}, in flight {}, late {}",
                    l.sent.load(Ordering::Relaxed),
                    l.ok.load(Ordering::Relaxed),
                    l.failed.load(Ordering::Relaxed),
                    l.in_flight.load(Ordering::Relaxed),
                    l.late.load(Ordering::Relaxed),
                );
            }
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tasks.spawn(agent_loop(
            shared.clone(),
            i,
            first_phase(&mut rand::thread_rng()),
        ));
    }
    while tasks.join_next().await.is_some() {}
    progress.abort();
    let ([server_cpu, client_cpu, machine_cpu], connections) =
        sampler.await.unwrap_or(([None; 3], None));

    let window = plan.duration.saturating_sub(plan.warmup).as_secs_f64();
    let mut c = std::mem::take(&mut *shared.collector.lock().expect("collector lock"));
    let ok = c.not_modified + c.changed;
    let busy = c
        .last_done
        .map(|d| {
            d.saturating_duration_since(shared.window_start)
                .as_secs_f64()
        })
        .unwrap_or(0.0);
    let achieved = ok as f64 / window.max(busy).max(1e-9);
    let offered = n as f64 / plan.interval.as_secs_f64();
    CheckinResult {
        interval_s: plan.interval.as_secs_f64(),
        warmup_s: plan.warmup.as_secs_f64(),
        window_s: window,
        agents: n as u64,
        offered_per_s: offered,
        scheduled: ok + c.errors.total() + c.not_sent,
        ok,
        not_modified: c.not_modified,
        changed: c.changed,
        achieved_per_s: achieved,
        fleet_at_60s: achieved * 60.0,
        latency: Latency::from_micros(&mut c.latency_us),
        errors: c.errors,
        late: c.late,
        late_behind: c.late_behind,
        behind: c.behind,
        late_after_s: plan.late_after.as_secs_f64(),
        send_lag: Latency::from_micros(&mut c.send_lag_us),
        timer_lag_max_ms: c.timer_lag_max_us as f64 / 1000.0,
        connection_wait_max_ms: c.wait_max_us as f64 / 1000.0,
        not_sent: c.not_sent,
        client_connections: connections,
        server_cpu_s: server_cpu,
        server_cores: server_cpu.map(|s| s / window.max(1e-9)),
        client_cpu_s: client_cpu,
        client_cores: client_cpu.map(|s| s / window.max(1e-9)),
        machine_busy_cores: machine_cpu.map(|s| s / window.max(1e-9)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates the schedule of many agents and counts check-ins per slice of time: with the
    /// stationary start every slice gets agents × slice / interval, the first interval too.
    /// The generator is seeded (a chance failure would be a flaky test, not a finding) and the
    /// bound is five standard deviations of the count (each agent falls into a slice at most
    /// once, with probability 0.1): a start at a uniform phase puts 25 % more into the slices
    /// around the first interval's end, far outside it.
    #[test]
    fn schedule_offers_a_steady_rate_from_the_start() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_c4ec);
        let agents = 200_000;
        let mut per_tenth = [0u64; 30];
        for _ in 0..agents {
            let mut t = first_phase(&mut rng);
            while t < 3.0 {
                per_tenth[(t * 10.0) as usize] += 1;
                t += rng.gen_range(0.9..1.1);
            }
        }
        let expected = agents as f64 / 10.0;
        let bound = 5.0 * (agents as f64 * 0.1 * 0.9).sqrt();
        for (i, &n) in per_tenth.iter().enumerate() {
            assert!(
                (n as f64 - expected).abs() < bound,
                "slice {i}: {n} check-ins, expected {expected} ± {bound:.0}"
            );
        }
    }
}
