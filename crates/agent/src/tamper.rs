//! Turns self-protection's tamper reports into `tamper` events in the outbox: the first of its
//! kind at once, identical ones within a second as one more event with their count (see
//! [`rampart_selfprotect::report`]), so a flood is aggregated and never dropped silently.

use std::sync::mpsc;
use std::time::Instant;

use rampart_protocol::events::TAMPER;
use rampart_protocol::tamper::TamperAttempt;

use rampart_selfprotect::report::{Aggregator, WINDOW};

use crate::outbox::Outbox;

/// Runs the aggregation on a thread of its own until `reports` closes. `wake` tells the
/// uploader there is something to send.
pub fn spawn(
    reports: mpsc::Receiver<TamperAttempt>,
    outbox: Outbox,
    runtime: tokio::runtime::Handle,
    wake: Box<dyn Fn() + Send>,
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
                        tracing::warn!(action = ?a.action, outcome = ?a.outcome, actor = %a.actor.comm, pid = a.actor.pid, target = ?a.target.path, "tamper attempt");
                        if let Some(first) = agg.add(a) {
                            push(vec![first], &outbox, &runtime);
                            wake();
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        push(agg.take(), &outbox, &runtime);
                        return;
                    }
                }
                if push(agg.take(), &outbox, &runtime) {
                    wake();
                }
                window_end = Instant::now() + WINDOW;
            }
        })
        .expect("spawning the tamper report thread")
}

/// Writes attempts to the outbox as `tamper` events; true if there were any.
fn push(attempts: Vec<TamperAttempt>, outbox: &Outbox, runtime: &tokio::runtime::Handle) -> bool {
    let batch: Vec<_> = attempts
        .into_iter()
        .map(|a| {
            (
                TAMPER.to_owned(),
                serde_json::to_value(a).expect("attempts serialize"),
            )
        })
        .collect();
    if batch.is_empty() {
        return false;
    }
    if let Err(e) = runtime.block_on(outbox.push_many(&batch)) {
        tracing::error!(error = %e, count = batch.len(), "could not write tamper events to the outbox");
    }
    true
}
