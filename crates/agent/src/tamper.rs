//! Turns self-protection's tamper reports into `tamper` events in the outbox. Identical attempts
//! within one second (same action, target and actor) become one event with a count, so a flood
//! is aggregated and never dropped silently.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rampart_protocol::events::TAMPER;
use rampart_protocol::tamper::TamperAttempt;

use crate::outbox::Outbox;

/// How long identical attempts are gathered into one event.
const WINDOW: Duration = Duration::from_secs(1);

/// The aggregation key: what makes two attempts the same.
fn key(a: &TamperAttempt) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{:?}",
        a.action, a.target.path, a.target.pid, a.detail, a.actor.pid, a.actor.exe
    )
}

/// Gathers attempts and flushes them to the outbox every [`WINDOW`].
pub struct Aggregator {
    pending: BTreeMap<String, TamperAttempt>,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Aggregator {
            pending: BTreeMap::new(),
        }
    }

    /// Adds one attempt.
    pub fn add(&mut self, a: TamperAttempt) {
        match self.pending.get_mut(&key(&a)) {
            Some(existing) => existing.count += a.count,
            None => {
                self.pending.insert(key(&a), a);
            }
        }
    }

    /// Takes what was gathered.
    pub fn take(&mut self) -> Vec<TamperAttempt> {
        std::mem::take(&mut self.pending).into_values().collect()
    }
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the aggregation on a thread of its own until `reports` closes.
pub fn spawn(
    reports: mpsc::Receiver<TamperAttempt>,
    outbox: Outbox,
    runtime: tokio::runtime::Handle,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("tamper-reports".into())
        .spawn(move || {
            let mut agg = Aggregator::new();
            let mut window_end = Instant::now() + WINDOW;
            loop {
                let wait = window_end.saturating_duration_since(Instant::now());
                match reports.recv_timeout(wait) {
                    Ok(a) => {
                        tracing::warn!(action = ?a.action, actor = %a.actor.comm, pid = a.actor.pid, target = ?a.target.path, "tamper attempt refused");
                        agg.add(a);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        flush(&mut agg, &outbox, &runtime);
                        return;
                    }
                }
                flush(&mut agg, &outbox, &runtime);
                window_end = Instant::now() + WINDOW;
            }
        })
        .expect("spawning the tamper report thread")
}

fn flush(agg: &mut Aggregator, outbox: &Outbox, runtime: &tokio::runtime::Handle) {
    let batch: Vec<_> = agg
        .take()
        .into_iter()
        .map(|a| {
            (
                TAMPER.to_owned(),
                serde_json::to_value(a).expect("attempts serialize"),
            )
        })
        .collect();
    if batch.is_empty() {
        return;
    }
    if let Err(e) = runtime.block_on(outbox.push_many(&batch)) {
        tracing::error!(error = %e, count = batch.len(), "could not write tamper events to the outbox");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_protocol::tamper::{Action, Actor, Outcome, Target, Tier};

    fn attempt(pid: u32) -> TamperAttempt {
        TamperAttempt {
            action: Action::Signal,
            detail: Some(9),
            target: Target {
                path: None,
                pid: Some(1),
            },
            actor: Actor {
                pid,
                comm: "kill".into(),
                ..Default::default()
            },
            tier: Tier::Kernel,
            outcome: Outcome::Refused,
            count: 1,
        }
    }

    #[test]
    fn a_flood_becomes_counts() {
        let mut agg = Aggregator::new();
        for _ in 0..10_000 {
            agg.add(attempt(5));
        }
        agg.add(attempt(6));
        let out = agg.take();
        assert_eq!(out.len(), 2);
        assert_eq!(out.iter().map(|a| a.count).sum::<u64>(), 10_001);
        assert!(agg.take().is_empty());
    }
}
