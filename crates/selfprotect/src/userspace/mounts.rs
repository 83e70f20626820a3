//! Mount repair: the kernel tells us when the mount table changes (`POLLPRI` on
//! `/proc/self/mountinfo`); a new mount onto a protected folder or one of its ancestors (which
//! would hide or replace what the agent relies on) is detached at once and reported as repaired.
//! Mounts that existed when protection started are left alone. On kernels that report mounts
//! through fanotify (6.15 and later), each repair names the process that mounted.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rampart_protocol::tamper::{Action, Actor, Outcome, TamperAttempt, Target, Tier};

use crate::sys;

/// One line of mountinfo: the mount id and where it is mounted.
fn parse(text: &str) -> Vec<(u64, PathBuf)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let id = f.next()?.parse().ok()?;
            let point = f.nth(3)?;
            Some((id, PathBuf::from(unescape(point))))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_all(f: &mut std::fs::File) -> String {
    let mut s = String::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_string(&mut s);
    s
}

/// The running repairer.
pub struct MountRepair {
    baseline: Vec<u64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MountRepair {
    /// Watches for mounts onto `guarded` paths (protected folders and their ancestors). Mounts
    /// in `baseline` (ids) are left alone; without one, the mounts there now are the baseline.
    /// Anything else already mounted over a guarded path is detached at once.
    pub fn start(
        guarded: Vec<PathBuf>,
        baseline: Option<Vec<u64>>,
        reports: mpsc::Sender<TamperAttempt>,
    ) -> std::io::Result<MountRepair> {
        let mut mountinfo = std::fs::File::open("/proc/self/mountinfo")?;
        let baseline: HashSet<u64> = match baseline {
            Some(b) => b.into_iter().collect(),
            None => parse(&read_all(&mut mountinfo))
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        };
        let mut listed: Vec<u64> = baseline.iter().copied().collect();
        listed.sort_unstable();
        let guarded: HashSet<PathBuf> = guarded.into_iter().collect();
        // The group is made, and what is mounted already repaired, before `start` returns: a
        // mount after that is announced with its author (a first repair in the thread raced a
        // mount made right after `start`, and reported it as by nobody).
        // Kernels that say who mounts (6.15+) name the actor; older ones only announce that
        // the mount table changed.
        let group = sys::fanotify_mount_group();
        repair(&mut mountinfo, &baseline, &guarded, &reports, None);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("selfprotect-mounts".into())
            .spawn(move || match group {
                Ok(group) => {
                    let mut buf = vec![0u8; 16 * 1024];
                    while !flag.load(Ordering::SeqCst) {
                        if !sys::poll_readable(&group, 200) {
                            continue;
                        }
                        let mut mounter = None;
                        while let Ok(n) = sys::read_fd(&group, &mut buf) {
                            if n < 24 {
                                break;
                            }
                            // the last mount of the batch: its author is named
                            let mut at = 0;
                            while at + 24 <= n {
                                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
                                let pid = i32::from_ne_bytes(buf[at + 20..at + 24].try_into().expect("4"));
                                if len < 24 {
                                    break;
                                }
                                mounter = Some(actor_of(pid.max(0) as u32));
                                at += len;
                            }
                        }
                        repair(&mut mountinfo, &baseline, &guarded, &reports, mounter);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "mount notifications unavailable; watching mountinfo");
                    while !flag.load(Ordering::SeqCst) {
                        if !sys::poll_mount_change(&mountinfo, 200) {
                            continue;
                        }
                        repair(&mut mountinfo, &baseline, &guarded, &reports, None);
                    }
                }
            })?;
        Ok(MountRepair {
            baseline: listed,
            stop,
            thread: Some(thread),
        })
    }

    /// The mount ids that were there before protection began.
    pub fn baseline(&self) -> &[u64] {
        &self.baseline
    }
}

/// The process `pid`, named from `/proc` while it is there.
fn actor_of(pid: u32) -> Actor {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let uid = field("Uid:")
        .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
        .unwrap_or(0);
    let ppid = field("PPid:").and_then(|v| v.parse().ok()).unwrap_or(0);
    crate::procinfo::actor(pid, pid, uid, &field("Name:").unwrap_or_default(), ppid)
}

fn repair(
    mountinfo: &mut std::fs::File,
    baseline: &HashSet<u64>,
    guarded: &HashSet<PathBuf>,
    reports: &mpsc::Sender<TamperAttempt>,
    mounter: Option<Actor>,
) {
    let noticed = std::time::Instant::now();
    // stacked mounts come off one at a time
    for _ in 0..16 {
        let intruders: Vec<PathBuf> = parse(&read_all(mountinfo))
            .into_iter()
            .filter(|(id, point)| !baseline.contains(id) && guarded.contains(point))
            .map(|(_, point)| point)
            .collect();
        if intruders.is_empty() {
            return;
        }
        for point in intruders {
            match sys::detach_mount(&point) {
                Ok(()) => {
                    tracing::warn!(path = %point.display(), "detached a mount over a protected folder");
                    let _ = reports.send(TamperAttempt {
                        action: Action::Mount,
                        detail: None,
                        target: Target {
                            path: Some(point.display().to_string()),
                            pid: None,
                        },
                        actor: mounter.clone().unwrap_or_else(|| Actor {
                            comm: "unknown".into(),
                            ..Default::default()
                        }),
                        tier: Tier::Userspace,
                        outcome: Outcome::Repaired,
                        count: 1,
                        repair_micros: Some(noticed.elapsed().as_micros() as u64),
                    });
                }
                Err(e) => {
                    tracing::error!(path = %point.display(), error = %e, "could not detach a mount over a protected folder");
                    return;
                }
            }
        }
    }
}

impl Drop for MountRepair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Protected folders and all their ancestors: where a mount would hide protected files.
pub fn guarded_points(trees: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for t in trees {
        let mut p: Option<&Path> = Some(t.as_path());
        while let Some(dir) = p {
            out.push(dir.to_path_buf());
            p = dir.parent();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    98 22 0:50 / /etc/ram\\040part rw - tmpfs tmpfs rw\n";
        let m = parse(text);
        assert_eq!(m[0], (22, PathBuf::from("/")));
        assert_eq!(m[1], (98, PathBuf::from("/etc/ram part")));
        let g = guarded_points(&[PathBuf::from("/etc/rampart")]);
        assert!(g.contains(&PathBuf::from("/etc")) && g.contains(&PathBuf::from("/")));
    }
}
