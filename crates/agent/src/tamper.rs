//! Turns self-protection's tamper reports into `tamper` events in the outbox. Identical attempts
//! within one second (same action, target and actor) become one event with a count, so a flood
//! is aggregated and never dropped silently.

use std::sync::mpsc;
use std::time::Instant;

use rampart_protocol::events::TAMPER;
use rampart_protocol::tamper::TamperAttempt;

use rampart_selfprotect::report::{Aggregator, WINDOW};

use crate::outbox::Outbox;

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
