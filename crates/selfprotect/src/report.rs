//! Gathering tamper attempts for reporting: identical attempts within one window (same action,
//! target and actor) become one report with a count, so a flood is aggregated and never dropped
//! silently.

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_protocol::tamper::TamperAttempt;

/// How long identical attempts are gathered into one event.
pub const WINDOW: Duration = Duration::from_secs(1);

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
            repair_micros: None,
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
