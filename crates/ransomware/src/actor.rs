//! Who acts: a process, the group it belongs to, and the program it runs.
//!
//! Ransomware rarely works from one process: a script starts one encryptor per file, a program
//! forks workers, a loop runs the same tool again and again. So evidence is gathered on two keys
//! at once — the process group (a pipeline, a script and everything it started) and the program
//! (the executable, or for an interpreter the script it runs) — and an actor is convicted when
//! either has enough. Stopping it stops both: every process of the group, every process running
//! that program, and their descendants.
//!
//! A program of the system (`/usr/bin/tar`, `/usr/bin/gzip`, `openssl`) is no key of its own:
//! it is everyone's tool, and evidence against it would add up what every user and script on
//! the host did with it (and a conviction would stop and undo all of them). What it does counts
//! against its group — the script or pipeline that used it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Programs that run other programs' code: their identity is the script they run.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "fish", "busybox", "python", "python2", "python3", "perl",
    "ruby", "node", "nodejs", "php", "lua", "tclsh", "pwsh",
];

/// Folders of the system's own programs (installed by packages).
const SYSTEM_PROGRAMS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/lib",
    "/usr/libexec",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/share",
];

/// What program a process runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Program {
    /// The executable.
    pub exe: PathBuf,
    /// For an interpreter, the script it was given.
    pub script: Option<PathBuf>,
}

impl Program {
    /// Whether this is an interpreter or shell running no script of its own (`bash -c …`, an
    /// interactive shell): such a program is never stopped or blocked as a whole.
    pub fn is_bare_interpreter(&self) -> bool {
        self.script.is_none() && is_interpreter(&self.exe)
    }

    /// The file that identifies it: the script for an interpreter, else the executable.
    pub fn file(&self) -> &Path {
        self.script.as_deref().unwrap_or(&self.exe)
    }

    /// Whether it is a program of the system's (its file in a folder packages install to):
    /// everyone's tool, never blocked, no key of its own.
    pub fn is_the_systems(&self) -> bool {
        SYSTEM_PROGRAMS.iter().any(|d| self.file().starts_with(d))
    }
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.script {
            Some(s) => write!(f, "{} {}", self.exe.display(), s.display()),
            None => write!(f, "{}", self.exe.display()),
        }
    }
}

/// Whether `exe` is an interpreter or shell (its identity is the script it runs).
pub(crate) fn is_interpreter(exe: &Path) -> bool {
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&name.as_str()) || INTERPRETERS.contains(&base)
}

/// A process, read from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Parent.
    pub ppid: u32,
    /// Process group.
    pub pgid: u32,
    /// Session.
    pub sid: u32,
    /// Command name.
    pub comm: String,
    /// What it runs.
    pub program: Program,
    /// Its command line, as read with the process for an interpreter (it names the script);
    /// empty for other programs — [`Process::command`] reads it.
    pub cmdline: Vec<String>,
}

/// The keys evidence about a process is gathered on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorKey {
    /// A process group.
    Group(u32),
    /// A program, wherever it runs.
    Program(Program),
}

impl Process {
    /// The command line, joined: as read, or read now.
    pub fn command(&self) -> String {
        if self.cmdline.is_empty() {
            command_line(self.pid).join(" ")
        } else {
            self.cmdline.join(" ")
        }
    }

    /// The keys to gather evidence on: the group, and the program unless it is a bare
    /// interpreter (every shell on the host would be one actor) or a program of the system
    /// (every user's `tar` would be one actor).
    pub fn keys(&self) -> Vec<ActorKey> {
        let mut keys = vec![ActorKey::Group(self.pgid)];
        // a program that could not be named (a kernel thread, a process exiting) is no key
        if !self.program.is_bare_interpreter()
            && !self.program.is_the_systems()
            && !self.program.exe.as_os_str().is_empty()
        {
            keys.push(ActorKey::Program(self.program.clone()));
        }
        keys
    }

    /// Whether the process is exiting (a zombie, or on its way there): its program can no
    /// longer be read, so it cannot be told trusted or not from what is left of it. Kernel
    /// threads, which never had a program, are not.
    pub fn is_exiting(&self) -> bool {
        self.program.exe.as_os_str().is_empty() && self.pid != 2 && self.ppid != 2
    }
}

/// Reads process `pid`; `None` once it is gone.
pub fn process(pid: u32) -> Option<Process> {
    let mut buf = [0u8; 1024];
    let stat = rampart_sys::open::read_small(&format!("/proc/{pid}/stat"), &mut buf).ok()?;
    let stat = std::str::from_utf8(stat).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u32>().ok());
    let (ppid, pgid, sid) = (num(1)?, num(2)?, num(3)?);
    // a group or session whose leader lives outside this PID namespace reads as 0 (a process
    // in a container started by a runtime): the process then counts as a group of its own,
    // never as one group with everything else so placed
    let pgid = if pgid == 0 { pid } else { pgid };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    // the command line only where it names the program (an interpreter's script): reading
    // another process's memory is the dearest part of this, and it is on an opener's way; for
    // an incident it is read when the process is first seen acting (`Process::command`)
    let (cmdline, script) = if is_interpreter(&exe) {
        let cmdline = command_line(pid);
        let script = script_of(&cmdline, pid);
        (cmdline, script)
    } else {
        (Vec::new(), None)
    };
    Some(Process {
        pid,
        ppid,
        pgid,
        sid,
        comm,
        program: Program { exe, script },
        cmdline,
    })
}

/// The command line of process `pid` (its first 8 KiB: enough to name a script and show the
/// command — `xargs cat` gives thousands of arguments); empty once it is gone.
pub fn command_line(pid: u32) -> Vec<String> {
    use std::io::Read;
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/cmdline")) {
        let _ = f.take(CMDLINE_AT_MOST).read_to_end(&mut head);
    }
    head.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// How much of a command line is read.
const CMDLINE_AT_MOST: u64 = 8192;

/// The script an interpreter runs: its first argument that is not an option, as a path
/// relative to the process's working folder; none for `-c` and interactive use.
fn script_of(cmdline: &[String], pid: u32) -> Option<PathBuf> {
    for a in cmdline.iter().skip(1) {
        if a == "-c" || a == "-e" || a == "-m" {
            return None;
        }
        if a.starts_with('-') {
            continue;
        }
        let p = PathBuf::from(a);
        let p = if p.is_absolute() {
            p
        } else {
            std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?.join(p)
        };
        return Some(p);
    }
    None
}

/// Every process, for finding an actor's members.
pub fn all_processes() -> Vec<Process> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process)
        .collect()
}

/// Most processes an actor may have: more means the keys are wrong, and nothing is stopped.
pub const MAX_MEMBERS: usize = 512;

/// The processes an actor consists of: every process whose key is one of `keys`, and every
/// descendant of those. Never `spare` (the agent and its supervisor), nor anything in their
/// sessions, nor their ancestors, nor PID 1 and kernel threads. `None` if that would be more
/// than [`MAX_MEMBERS`] processes (the keys are wrong: nothing is stopped).
pub fn members(keys: &[ActorKey], spare: &[u32]) -> Option<Vec<u32>> {
    let all = all_processes();
    let by_pid: std::collections::HashMap<u32, &Process> = all.iter().map(|p| (p.pid, p)).collect();
    // what is never touched: the agent, its sessions, its ancestors
    let sessions: std::collections::HashSet<u32> = spare
        .iter()
        .filter_map(|s| by_pid.get(s).map(|p| p.sid))
        .filter(|sid| *sid > 0)
        .collect();
    let mut untouchable: std::collections::HashSet<u32> = spare.iter().copied().collect();
    for s in spare {
        let mut at = *s;
        while let Some(p) = by_pid.get(&at) {
            if !untouchable.insert(p.ppid) || p.ppid <= 1 {
                break;
            }
            at = p.ppid;
        }
    }
    let fair = |p: &Process| {
        p.pid > 1
            && !p.program.exe.as_os_str().is_empty()
            && !untouchable.contains(&p.pid)
            && !sessions.contains(&p.sid)
    };
    let mut chosen: std::collections::BTreeSet<u32> = all
        .iter()
        .filter(|p| fair(p) && p.keys().iter().any(|k| keys.contains(k)))
        .map(|p| p.pid)
        .collect();
    // descendants, until none is added
    loop {
        let before = chosen.len();
        for p in &all {
            if fair(p) && chosen.contains(&p.ppid) {
                chosen.insert(p.pid);
            }
        }
        if chosen.len() == before || chosen.len() > MAX_MEMBERS {
            break;
        }
    }
    (chosen.len() <= MAX_MEMBERS).then(|| chosen.into_iter().collect())
}

/// What a process ran, as the kernel announced its exec (the tracepoints of
/// [`creations`](crate::creations)): names a process gone before anyone read `/proc` — a
/// script's `rm` deletes a document and exits in a millisecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// Its parent then.
    pub ppid: u32,
    /// Its process group then.
    pub pgid: u32,
    /// The executable (what `/proc/PID/exe` names): device, as `stat` gives it, and inode.
    pub exe: (u64, u64),
    /// The file given to `execve` (the script, for a `#!` script).
    pub file: PathBuf,
    /// The interpreter a `#!` line named.
    pub interp: Option<PathBuf>,
}

impl Ran {
    /// The program, as far as the announcement tells: the file given, where it is the
    /// executable (an absolute path to the same inode); for a `#!` script, the script run by
    /// its interpreter; else unnamed (an empty executable: no key of its own).
    pub fn program(&self) -> Program {
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        match &self.interp {
            Some(interp) => Program {
                exe: real(interp),
                script: self.file.is_absolute().then(|| self.file.clone()),
            },
            None if self.file.is_absolute()
                && std::fs::metadata(&self.file).is_ok_and(|m| (m.dev(), m.ino()) == self.exe) =>
            {
                Program {
                    exe: real(&self.file),
                    script: None,
                }
            }
            None => Program {
                exe: PathBuf::new(),
                script: None,
            },
        }
    }

    /// Process `pid` as it was when it ran this.
    pub fn process(&self, pid: u32) -> Process {
        Process {
            pid,
            ppid: self.ppid,
            pgid: if self.pgid == 0 { pid } else { self.pgid },
            sid: 0,
            comm: String::new(),
            program: self.program(),
            cmdline: Vec::new(),
        }
    }
}

/// How many forks [`Lineage`] remembers before it forgets the old ones.
const LINEAGE: usize = 1 << 16;
/// How long a fork is worth remembering: a process gone before its changes were read is gone
/// for milliseconds, not minutes.
const LINEAGE_FOR: Duration = Duration::from_secs(30);

/// Who forked whom, lately, as the kernel announced it: the ancestry of processes gone before
/// anyone could read them (a script's `rm` deletes a document and exits in a millisecond).
#[derive(Debug, Default)]
pub struct Lineage {
    parent: HashMap<u32, (u32, Instant)>,
    ran: HashMap<u32, (Ran, Instant)>,
    /// When the last read of the announcements began.
    read_since: Option<Instant>,
}

impl Lineage {
    /// Records forks.
    pub fn record(&mut self, forks: &[rampart_sys::forks::Fork], now: Instant) {
        bound(&mut self.parent, forks.len(), now);
        for f in forks {
            self.parent.insert(f.child, (f.parent, now));
            // a new process: what an earlier one with its pid ran is not what it runs
            self.ran.remove(&f.child);
        }
    }

    /// Records what processes ran (the last exec of each).
    pub fn record_ran(&mut self, ran: Vec<(u32, Ran)>, now: Instant) {
        bound(&mut self.ran, ran.len(), now);
        for (pid, r) in ran {
            self.parent.insert(pid, (r.ppid, now));
            self.ran.insert(pid, (r, now));
        }
    }

    /// Notes that every creation announced before `since` has been recorded.
    pub fn read_up_to(&mut self, since: Instant) {
        self.read_since = Some(since);
    }

    /// Whether every creation announced before `t` has been recorded.
    pub fn has_read_up_to(&self, t: Instant) -> bool {
        self.read_since.is_some_and(|s| s >= t)
    }

    /// The process that forked `pid`, if that was announced lately.
    pub fn parent(&self, pid: u32) -> Option<u32> {
        self.parent.get(&pid).map(|(p, _)| *p)
    }

    /// What `pid` ran last, if its exec was announced lately.
    pub fn ran(&self, pid: u32) -> Option<&Ran> {
        self.ran.get(&pid).map(|(r, _)| r)
    }
}

/// Makes room in `map` for `adding` more: the old entries go, all of them if that is not enough.
fn bound<T>(map: &mut HashMap<u32, (T, Instant)>, adding: usize, now: Instant) {
    if map.len() + adding > LINEAGE {
        map.retain(|_, (_, at)| now.duration_since(*at) < LINEAGE_FOR);
        if map.len() + adding > LINEAGE {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_are_known_by_name() {
        assert!(is_interpreter(Path::new("/usr/bin/python3.11")));
        assert!(is_interpreter(Path::new("/bin/bash")));
        assert!(!is_interpreter(Path::new("/usr/bin/openssl")));
        let bare = Program {
            exe: "/bin/bash".into(),
            script: None,
        };
        assert!(bare.is_bare_interpreter());
        let script = Program {
            exe: "/usr/bin/python3".into(),
            script: Some("/tmp/x.py".into()),
        };
        assert!(!script.is_bare_interpreter());
    }

    #[test]
    fn a_program_of_the_systems_is_no_key_of_its_own() {
        let tar = Process {
            pid: 10,
            ppid: 1,
            pgid: 10,
            sid: 10,
            comm: "tar".into(),
            program: Program {
                exe: "/usr/bin/tar".into(),
                script: None,
            },
            cmdline: Vec::new(),
        };
        assert!(tar.program.is_the_systems());
        assert_eq!(tar.keys(), vec![ActorKey::Group(10)]);
        // a script an interpreter of the system runs is its own program; so is a binary elsewhere
        let script = Program {
            exe: "/usr/bin/python3".into(),
            script: Some("/home/u/x.py".into()),
        };
        assert!(!script.is_the_systems());
        let dropped = Process {
            program: Program {
                exe: "/tmp/.x/enc".into(),
                script: None,
            },
            ..tar.clone()
        };
        assert_eq!(
            dropped.keys(),
            vec![
                ActorKey::Group(10),
                ActorKey::Program(dropped.program.clone())
            ]
        );
    }

    #[test]
    fn lineage_remembers_forks_and_forgets_old_ones_past_its_bound() {
        use rampart_sys::forks::Fork;
        let start = Instant::now();
        let mut l = Lineage::default();
        l.record(
            &[
                Fork {
                    parent: 1,
                    child: 2,
                },
                Fork {
                    parent: 2,
                    child: 3,
                },
            ],
            start,
        );
        assert_eq!(l.parent(3), Some(2));
        assert_eq!(l.parent(2), Some(1));
        assert_eq!(l.parent(1), None);
        let many: Vec<Fork> = (10..10 + LINEAGE as u32)
            .map(|c| Fork {
                parent: 4,
                child: c,
            })
            .collect();
        l.record(&many, start + LINEAGE_FOR + Duration::from_secs(1));
        assert_eq!(l.parent(3), None, "the old forks are forgotten");
        assert_eq!(l.parent(10), Some(4));
    }

    #[test]
    fn what_a_process_ran_names_it_until_its_pid_is_given_to_another() {
        use rampart_sys::forks::Fork;
        let now = Instant::now();
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let m = std::fs::metadata(&sh).unwrap();
        let mut l = Lineage::default();
        let ran = |file: &str, interp: Option<&str>| Ran {
            ppid: 1,
            pgid: 7,
            exe: (m.dev(), m.ino()),
            file: file.into(),
            interp: interp.map(PathBuf::from),
        };
        l.record_ran(
            vec![
                (7, ran(sh.to_str().unwrap(), None)),
                (8, ran("/home/u/lock.sh", Some("/bin/sh"))),
                (9, ran("./relative", None)),
            ],
            now,
        );
        assert_eq!(l.parent(7), Some(1));
        // a binary given by its path: the executable
        let p = l.ran(7).unwrap().process(7);
        assert_eq!(p.pgid, 7);
        assert_eq!(p.program.exe, sh);
        // a #! script: the script, run by its interpreter
        let script = l.ran(8).unwrap().program();
        assert_eq!(script.exe, sh);
        assert_eq!(script.script, Some(PathBuf::from("/home/u/lock.sh")));
        assert_eq!(
            l.ran(8).unwrap().process(8).keys(),
            vec![ActorKey::Group(7), ActorKey::Program(script)]
        );
        // a path that cannot be told to be the executable: no program key
        assert_eq!(
            l.ran(9).unwrap().process(9).keys(),
            vec![ActorKey::Group(7)]
        );
        // pid 8 given to a new process
        l.record(
            &[Fork {
                parent: 1,
                child: 8,
            }],
            now,
        );
        assert!(l.ran(8).is_none());
    }

    #[test]
    fn this_process_and_its_keys() {
        let me = process(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        // the session may read 0 (its leader outside this PID namespace); the group never does
        assert!(me.pgid > 0);
        assert_eq!(me.keys()[0], ActorKey::Group(me.pgid));
        assert!(script_of(&["bash".into(), "-c".into(), "x".into()], 1).is_none());
        assert_eq!(
            script_of(&["python3".into(), "-u".into(), "/a/b.py".into()], 1),
            Some(PathBuf::from("/a/b.py"))
        );
    }
}

#[cfg(test)]
mod members_tests {
    use super::*;

    #[test]
    fn an_actor_in_a_session_of_its_own_is_found_with_its_children() {
        let me = process(std::process::id()).unwrap();
        let mut child = std::process::Command::new("setsid")
            .args(["sh", "-c", "sleep 3 & sleep 3"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let found = process(child.id())
            .filter(|p| p.sid != me.sid && p.pgid != me.pgid)
            .map(|p| members(&[ActorKey::Group(p.pgid)], &[me.pid]).unwrap());
        // stop them by pid only (never by group: a mistake there would reach the test runner)
        for pid in found.iter().flatten() {
            let _ = rampart_sys::kill(*pid, libc::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        let found = found.expect("the child runs in a session of its own");
        assert!(found.contains(&child.id()), "{found:?}");
        assert_eq!(found.len(), 3, "{found:?}");
        // the test's own session is never touched
        assert!(members(&[ActorKey::Group(me.pgid)], &[me.pid])
            .unwrap()
            .is_empty());
    }
}
