//! Check-ins are recorded in batches: a check-in only notes the agent in memory, and a flusher
//! writes every noted agent in one transaction a few times a second. One commit (one fsync on
//! SQLite) then serves hundreds of check-ins. A report that has not changed since this replica
//! last wrote it costs only its `last_seen` column. Losing the last fraction of a second of
//! `last_seen` in a crash is harmless; events, which must never be lost, do not go this way.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::{CheckinUpdate, Store};

/// How often noted check-ins are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// An unchanged report is written again after this long anyway (another replica may have
/// written a different one meanwhile).
const REWRITE_AFTER_MS: i64 = 10 * 60 * 1000;

#[derive(Default)]
struct Inner {
    /// Agent id → what to write at the next flush.
    pending: HashMap<String, Pending>,
    /// Agent id → (hash of the report last written, when).
    written: HashMap<String, (u64, i64)>,
}

enum Pending {
    /// Only `last_seen` changed.
    Seen(i64),
    /// The whole report.
    Report(CheckinUpdate, u64),
}

/// Notes check-ins and writes them in batches.
#[derive(Default)]
pub struct CheckinRecorder {
    inner: Mutex<Inner>,
}

fn report_hash(u: &CheckinUpdate) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&(&u.identity, &u.protections, &u.components))
        .unwrap_or_default()
        .hash(&mut h);
    u.applied_policy_version.hash(&mut h);
    h.finish()
}

impl CheckinRecorder {
    /// Notes a check-in, to be written at the next flush.
    pub fn record(&self, agent_id: &str, update: CheckinUpdate) {
        let hash = report_hash(&update);
        let mut inner = self.inner.lock().expect("recorder lock");
        let unchanged = matches!(inner.written.get(agent_id),
            Some((h, at)) if *h == hash && update.now_ms - at < REWRITE_AFTER_MS);
        let already_report = matches!(inner.pending.get(agent_id), Some(Pending::Report(..)));
        let pending = if unchanged && !already_report {
            Pending::Seen(update.now_ms)
        } else if unchanged {
            // keep the report waiting, with the newer time
            match inner.pending.remove(agent_id) {
                Some(Pending::Report(mut u, h)) => {
                    u.now_ms = update.now_ms;
                    Pending::Report(u, h)
                }
                _ => Pending::Report(update, hash),
            }
        } else {
            Pending::Report(update, hash)
        };
        inner.pending.insert(agent_id.to_owned(), pending);
    }

    /// Writes everything noted so far in one transaction.
    pub async fn flush(&self, store: &Store) {
        let batch: Vec<(String, Pending)> = {
            let mut inner = self.inner.lock().expect("recorder lock");
            inner.pending.drain().collect()
        };
        if batch.is_empty() {
            return;
        }
        let rows: Vec<(String, i64, Option<CheckinUpdate>)> = batch
            .iter()
            .map(|(id, p)| match p {
                Pending::Seen(t) => (id.clone(), *t, None),
                Pending::Report(u, _) => (id.clone(), u.now_ms, Some(u.clone())),
            })
            .collect();
        match store.record_checkins(&rows).await {
            Ok(()) => {
                let mut inner = self.inner.lock().expect("recorder lock");
                for (id, p) in batch {
                    if let Pending::Report(u, h) = p {
                        inner.written.insert(id, (h, u.now_ms));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, agents = rows.len(), "could not record check-ins; retrying");
                // put them back unless newer ones arrived meanwhile
                let mut inner = self.inner.lock().expect("recorder lock");
                for (id, p) in batch {
                    inner.pending.entry(id).or_insert(p);
                }
            }
        }
    }

    /// Flushes every [`FLUSH_EVERY`] until the task is dropped.
    pub fn spawn_flusher(self: Arc<Self>, store: Store) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.flush(&store).await;
            }
        })
    }
}
