//! Decodes the kernel's refusal records (`struct rp_event`, src/bpf/selfprotect.h) into
//! [`TamperAttempt`]s naming the actor and the protected path.

use libbpf_rs::MapCore;
use rampart_protocol::tamper::{Action, Outcome, TamperAttempt, Target, Tier};

use crate::procinfo;
use crate::scope::{InodeKey, Resolved};

/// Size of `struct rp_event`.
pub const EVENT_SIZE: usize = 64;

/// Hook numbers of `enum rp_hook`, as actions.
fn action(hook: u32) -> Option<Action> {
    Some(match hook {
        1 => Action::Signal,
        2 => Action::Trace,
        3 => Action::Write,
        4 => Action::Truncate,
        5 | 6 => Action::Delete,
        7 => Action::Rename,
        8 => Action::Link,
        9 => Action::Create,
        10 => Action::Attributes,
        11 => Action::Xattr,
        12 => Action::Flags,
        13 | 14 => Action::Mount,
        15 => Action::Unmount,
        16..=18 => Action::Bpf,
        _ => return None,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Turns records into attempts, naming protected inodes by their paths.
pub struct Decoder {
    scope: Resolved,
}

impl Decoder {
    /// A decoder for `scope`.
    pub fn new(scope: Resolved) -> Self {
        Decoder { scope }
    }

    /// One record, or `None` if it is malformed.
    pub fn decode(&self, b: &[u8]) -> Option<TamperAttempt> {
        if b.len() < EVENT_SIZE {
            return None;
        }
        let action = action(u32_at(b, 0))?;
        let (tid, tgid, ppid, uid, target_tgid) = (
            u32_at(b, 4),
            u32_at(b, 8),
            u32_at(b, 12),
            u32_at(b, 16),
            u32_at(b, 20),
        );
        let detail = u64_at(b, 24) as i64;
        let key = InodeKey {
            dev: u64_at(b, 32),
            ino: u64_at(b, 40),
        };
        let comm_raw = &b[48..64];
        let end = comm_raw.iter().position(|c| *c == 0).unwrap_or(16);
        let comm = String::from_utf8_lossy(&comm_raw[..end]).into_owned();
        let path = self
            .scope
            .path_of(&key)
            .map(|p| p.display().to_string())
            .or_else(|| {
                (key.dev != 0).then(|| format!("inode {} on device {:#x}", key.ino, key.dev))
            });
        Some(TamperAttempt {
            action,
            detail: (detail != 0).then_some(detail),
            target: Target {
                path,
                pid: (target_tgid != 0).then_some(target_tgid),
            },
            actor: procinfo::actor(tgid, tid, uid, &comm, ppid),
            tier: Tier::Kernel,
            outcome: Outcome::Refused,
            count: 1,
            repair_micros: None,
        })
    }
}

/// Refusals the kernel could not put in the ring buffer, summed over CPUs.
pub fn dropped<M: MapCore>(map: &M) -> u64 {
    match map.lookup_percpu(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY) {
        Ok(Some(per_cpu)) => per_cpu
            .iter()
            .filter(|v| v.len() >= 8)
            .map(|v| u64_at(v, 0))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_record() {
        let mut b = vec![0u8; EVENT_SIZE];
        b[0..4].copy_from_slice(&1u32.to_ne_bytes()); // task_kill
        b[4..8].copy_from_slice(&42u32.to_ne_bytes());
        b[8..12].copy_from_slice(&42u32.to_ne_bytes());
        b[20..24].copy_from_slice(&7u32.to_ne_bytes());
        b[24..32].copy_from_slice(&9i64.to_ne_bytes());
        b[48..52].copy_from_slice(b"kill");
        let a = Decoder::new(Resolved::default()).decode(&b).unwrap();
        assert_eq!(a.action, Action::Signal);
        assert_eq!(a.detail, Some(9));
        assert_eq!(a.target.pid, Some(7));
        assert_eq!(a.actor.comm, "kill");
        assert!(Decoder::new(Resolved::default()).decode(&b[..10]).is_none());
    }
}
