//! Gathering tamper attempts for reporting: the first attempt of its kind (same action, target
//! and actor) is reported at once; identical ones within the same window are counted and
//! reported as one more report with the count when the window ends. A flood is aggregated,
//! never dropped silently, and the first word of an attack never waits.

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_protocol::tamper::TamperAttempt;

/// How long identical attempts are gathered into one event.
pub const WINDOW: Duration = Duration::from_secs(1);

/// The aggregation key: what makes two attempts the same.
fn key(a: &TamperAttempt) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}",
        a.action, a.outcome, a.target.path, a.target.pid, a.detail, a.actor.pid, a.actor.exe
    )
}

/// Gathers attempts within a window.
pub struct Aggregator {
    /// Kinds seen in this window, with the repeats gathered since the first (count 0: none).
    pending: BTreeMap<String, TamperAttempt>,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Aggregator {
            pending: BTreeMap::new(),
        }
    }

    /// Adds one attempt; returns it when it is the first of its kind in this window (to be
    /// reported now).
    pub fn add(&mut self, a: TamperAttempt) -> Option<TamperAttempt> {
        match self.pending.get_mut(&key(&a)) {
            Some(existing) => {
                existing.count += a.count;
                None
            }
            None => {
                let mut repeats = a.clone();
                repeats.count = 0;
                self.pending.insert(key(&a), repeats);
                Some(a)
            }
        }
    }

    /// Ends the window: the repeats gathered since each first report, with their counts.
    pub fn take(&mut self) -> Vec<TamperAttempt> {
        std::mem::take(&mut self.pending)
            .into_values()
            .filter(|a| a.count > 0)
            .collect()
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
    fn a_flood_becomes_counts_and_the_first_is_reported_at_once() {
        let mut agg = Aggregator::new();
        let mut now = Vec::new();
        for _ in 0..10_000 {
            now.extend(agg.add(attempt(5)));
        }
        now.extend(agg.add(attempt(6)));
        assert_eq!(now.len(), 2, "the first of each kind at once");
        let later = agg.take();
        assert_eq!(later.len(), 1, "the repeats in one report");
        assert_eq!(later[0].count, 9_999);
        let total: u64 = now.iter().chain(&later).map(|a| a.count).sum();
        assert_eq!(total, 10_001, "nothing dropped");
        assert!(agg.take().is_empty());
        // a new window reports the first at once again
        assert!(agg.add(attempt(5)).is_some());
    }
}
