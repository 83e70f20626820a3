//! Names the actor of an attempt from `/proc`: executable, command line, parent chain. Read
//! right after the attempt; a process that is already gone keeps only what the kernel reported.

use rampart_protocol::tamper::{Actor, ProcessRef};

fn read(pid: u32, what: &str) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/{what}"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The executable of `pid`.
pub fn exe(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = read(pid, "cmdline")?;
    let joined = raw.trim_end_matches('\0').replace('\0', " ");
    (!joined.is_empty()).then_some(joined)
}

/// Command name and parent of `pid`, from `/proc/PID/stat`.
fn comm_and_parent(pid: u32) -> Option<(String, u32)> {
    let stat = read(pid, "stat")?;
    // "PID (COMM) STATE PPID …": COMM may hold spaces and parentheses
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let ppid = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
    Some((comm, ppid))
}

/// The parent chain of `pid`, nearest first, up to PID 1 (at most 16 steps).
pub fn parents(mut ppid: u32) -> Vec<ProcessRef> {
    let mut chain = Vec::new();
    while ppid > 0 && chain.len() < 16 {
        let Some((comm, next)) = comm_and_parent(ppid) else {
            chain.push(ProcessRef {
                pid: ppid,
                ..Default::default()
            });
            break;
        };
        chain.push(ProcessRef {
            pid: ppid,
            comm,
            exe: exe(ppid),
        });
        if ppid == 1 {
            break;
        }
        ppid = next;
    }
    chain
}

/// Everything known about the actor `tgid` (thread `tid`), completing what the kernel reported.
pub fn actor(tgid: u32, tid: u32, uid: u32, comm: &str, ppid: u32) -> Actor {
    Actor {
        pid: tgid,
        tid,
        uid,
        comm: comm.to_owned(),
        exe: exe(tgid),
        cmdline: cmdline(tgid),
        parents: parents(ppid),
    }
}

/// The processes whose command line names `root` as their root prefix (`--root ROOT`), with
/// their arguments: every agent, server and supervisor of one Rampart installation.
pub fn processes_below(root: &std::path::Path) -> Vec<(u32, Vec<String>)> {
    let root = root.display().to_string();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.windows(2).any(|w| w[0] == "--root" && w[1] == root) {
            out.push((pid, args));
        }
    }
    out
}

/// The process below `root` running `rampart … WORDS…` (`["agent", "run"]`, `["server"]`).
pub fn running_below(root: &std::path::Path, words: &[&str]) -> Option<u32> {
    processes_below(root)
        .into_iter()
        .find(|(_, args)| args.windows(words.len()).any(|w| w == words))
        .map(|(pid, _)| pid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_this_process() {
        let me = std::process::id();
        let (comm, ppid) = super::comm_and_parent(me).unwrap();
        assert!(!comm.is_empty());
        let a = super::actor(me, me, 0, &comm, ppid);
        assert!(a.exe.is_some() && a.cmdline.is_some());
        assert!(!a.parents.is_empty());
    }
}
