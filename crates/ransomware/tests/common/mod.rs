//! What the monitor's integration tests share: the simulator binary and tree snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The simulator (`rampart-ransim`), built beside the test binaries.
pub fn simulator() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("rampart-ransim");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p rampart-ransim)",
        bin.display()
    );
    bin
}

/// Writes a copy of the simulator of its own to `to`: the program, then `tag` (the loader reads
/// no further than the program). A conviction blocks the convicted program by content on the
/// whole host, so two tests whose copies had the same bytes would stop each other's; the same
/// `tag` gives the same bytes.
pub fn simulator_copy(to: &Path, tag: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(simulator()).unwrap();
    bytes.extend(format!("\nrampart test copy: {tag}\n").as_bytes());
    std::fs::write(to, bytes).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every file below `dir` with its content.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap_or_default());
            }
        }
    }
    out
}

/// The monitor's log on the test's output, as `RUST_LOG` says (`RUST_LOG=rampart_ransomware=debug`
/// to follow every change it judges); nothing without it.
pub fn log() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// With `CI=true` a missing feature or tool fails the test; elsewhere it is skipped, saying why.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {why}");
    }
    eprintln!("skipping: {why}");
}

/// Whether every tool is installed (else skipped or failed, see [`skip_or_fail`]).
pub fn needs(tools: &[&str]) -> bool {
    for t in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            skip_or_fail(&format!(
                "{t} is not installed (scripts/install-deps.sh installs it)"
            ));
            return false;
        }
    }
    true
}

/// Waits until `monitor`'s folders are calm — no one under suspicion for a moment, documents
/// guarded by leases and their opens costing no permission event — the state an attack on a
/// quiet host meets.
pub fn wait_calm(monitor: &rampart_ransomware::monitor::Monitor) {
    wait_calm_folders(monitor, 1);
}

/// Waits until at least `folders` of `monitor`'s folders are calm.
pub fn wait_calm_folders(monitor: &rampart_ransomware::monitor::Monitor, folders: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while monitor.status().calm_folders < folders {
        assert!(
            std::time::Instant::now() < deadline,
            "the folders did not become calm: {:?}",
            monitor.status()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A monitor's judge starved of CPU: its thread at `SCHED_IDLE` beside two busy loops, until
/// dropped (then the loops are stopped and the judge's class is given back); the reader of
/// process creations too, with [`StarvedJudge::with_forks`]. How a test makes
/// the monitor judge changes long after they happened.
pub struct StarvedJudge {
    threads: Vec<String>,
    busy: Vec<std::process::Child>,
}

impl StarvedJudge {
    pub fn new(monitor: &rampart_ransomware::monitor::Monitor) -> StarvedJudge {
        StarvedJudge::of(&[monitor.judge_thread()])
    }

    /// The judge and the reader of process creations starved: a process gone before its changes
    /// are judged is also gone before its exec is read.
    #[allow(dead_code)] // (not every test crate uses it)
    pub fn with_forks(monitor: &rampart_ransomware::monitor::Monitor) -> StarvedJudge {
        StarvedJudge::of(&[monitor.judge_thread(), monitor.forks_thread()])
    }

    /// These threads of this monitor (other tests' monitors run in this process too).
    fn of(tids: &[u32]) -> StarvedJudge {
        let threads: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
        for t in &threads {
            assert_ne!(t, "0", "the monitor's thread runs");
            chrt(t, "--idle");
        }
        let busy = (0..2)
            .map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .unwrap()
            })
            .collect();
        StarvedJudge { threads, busy }
    }
}

impl Drop for StarvedJudge {
    fn drop(&mut self) {
        for c in &mut self.busy {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            for t in &self.threads {
                chrt(t, "--other");
            }
        }
    }
}

/// Puts thread `tid` in scheduling class `class` (`chrt --idle`, `--other`).
fn chrt(tid: &str, class: &str) {
    let ok = std::process::Command::new("chrt")
        .args([class, "-p", "0", tid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "chrt {class} on thread {tid}");
}

/// A process killed (and reaped) when dropped.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A monitor's judge held at its next open of a file in `folders` until dropped: a fanotify
/// permission group of the test's own answers every other open there at once and keeps the
/// judge's waiting — how a test makes the monitor judge changes after the files at their names
/// changed again, whatever the scheduler gives the judge (starved, it still caught up at times).
#[allow(dead_code)] // (not every test crate uses it)
pub struct JudgeHeld {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    holding: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[allow(dead_code)]
impl JudgeHeld {
    pub fn new(monitor: &rampart_ransomware::monitor::Monitor, folders: &[PathBuf]) -> JudgeHeld {
        use std::sync::atomic::{AtomicBool, Ordering};
        let judge = monitor.judge_thread();
        assert_ne!(judge, 0, "the monitor's judge runs");
        let group = rampart_sys::fanotify_permission_group().expect("a fanotify permission group");
        for f in folders {
            rampart_sys::fanotify_mark_inode(
                &group,
                libc::FAN_OPEN_PERM | libc::FAN_EVENT_ON_CHILD,
                f,
            )
            .expect("a mark on the folder");
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let holding = std::sync::Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, holding) = (stop.clone(), holding.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if !rampart_sys::poll_readable(&group, 20) {
                        continue;
                    }
                    let Ok(n) = rampart_sys::read_fd(&group, &mut buf) else {
                        continue;
                    };
                    // struct fanotify_event_metadata: event_len u32, vers u8, reserved u8,
                    // metadata_len u16, mask u64, fd i32, pid i32
                    let mut at = 0;
                    while at + 24 <= n {
                        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                        let fd = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap());
                        let tid = u32::from_ne_bytes(buf[at + 20..at + 24].try_into().unwrap());
                        if tid == judge {
                            holding.store(true, Ordering::SeqCst);
                            held.push(fd);
                        } else {
                            let _ = rampart_sys::fanotify_answer(&group, fd, true);
                            rampart_sys::close_raw(fd);
                        }
                        at += len.max(24);
                    }
                }
                for fd in held {
                    let _ = rampart_sys::fanotify_answer(&group, fd, true);
                    rampart_sys::close_raw(fd);
                }
            })
        };
        JudgeHeld {
            stop,
            holding,
            thread: Some(thread),
        }
    }

    /// Whether the judge waits at an open now (it stays waiting until this is dropped).
    pub fn holding(&self) -> bool {
        self.holding.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for JudgeHeld {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A journaled ext4 of its own (`mkfs.ext4` defaults), loop-mounted, unmounted when dropped:
/// such a filesystem gives a freed inode number to the next file at once (this VM's root, with
/// no journal, holds numbers back for a minute).
#[allow(dead_code)] // (not every test crate uses it)
pub struct Ext4 {
    dir: Option<tempfile::TempDir>,
}

#[allow(dead_code)]
impl Ext4 {
    pub fn new() -> Option<Ext4> {
        let run = |cmd: &str, args: &[&str]| {
            std::process::Command::new(cmd)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let (img, mnt) = (dir.path().join("ext4.img"), dir.path().join("mnt"));
        std::fs::create_dir(&mnt).unwrap();
        let made = std::fs::File::create(&img)
            .and_then(|f| f.set_len(256 << 20))
            .is_ok()
            && run("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()])
            && run(
                "mount",
                &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()],
            );
        if !made {
            skip_or_fail("a journaled ext4 needs root, loop devices and mkfs.ext4 (e2fsprogs)");
            return None;
        }
        Some(Ext4 { dir: Some(dir) })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().join("mnt")
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let mnt = self.path();
        let _ = std::process::Command::new("umount").arg(&mnt).status();
        if std::process::Command::new("mountpoint")
            .arg("-q")
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success())
        {
            // still mounted (busy): leave the folder rather than delete into the mount
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&mnt)
                .status();
            std::mem::forget(self.dir.take());
        }
    }
}

/// A copy of `rm` in `dir` (`cleanup-rm`), with its SHA-256: a program for a policy to trust.
#[allow(dead_code)]
pub fn trusted_remover(dir: &Path) -> (PathBuf, String) {
    let cleanup = dir.join("cleanup-rm");
    let rm = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v rm"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::copy(rm.trim(), &cleanup).unwrap();
    let hash = rampart_ransomware::monitor::sha256_of(&cleanup).unwrap();
    (cleanup, hash)
}

/// The count a test script printed as `reused N` (how many new files took a freed inode
/// number); 0 if it printed none.
#[allow(dead_code)] // (not every test crate uses it)
pub fn reused(out: &str) -> usize {
    out.split_whitespace()
        .skip_while(|w| *w != "reused")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
