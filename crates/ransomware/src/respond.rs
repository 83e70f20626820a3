//! Stopping a convicted actor: every process of its group, every process running its program,
//! and their descendants — frozen first (SIGSTOP, so none can start another while the rest are
//! found), then killed, again until none is left.

use std::time::{Duration, Instant};

use crate::actor::{self, ActorKey};

/// Stops every process of the actor `keys` names (see [`actor::members`] for what is never
/// touched). Returns the processes stopped.
pub fn stop(keys: &[ActorKey], spare: &[u32]) -> Vec<u32> {
    let mut stopped = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let Some(members) = actor::members(keys, spare) else {
            tracing::error!(
                ?keys,
                "an actor with this many processes is not stopped: its keys are wrong"
            );
            break;
        };
        if members.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in &members {
            let _ = rampart_sys::kill(*pid, libc::SIGSTOP);
        }
        // what they started meanwhile is found on the next round
        for pid in &members {
            let _ = rampart_sys::kill(*pid, libc::SIGKILL);
            if !stopped.contains(pid) {
                stopped.push(*pid);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    stopped
}
