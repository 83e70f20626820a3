//! The kernel tier against real attacks, in a kernel that loads BPF LSM programs.
//!
//! These tests need root and a kernel with BPF LSM active and loadable, so they are ignored in a
//! plain `cargo test`; `vm/kernel-tier-tests.sh` boots a stock Debian kernel in QEMU and runs
//! them there with `--ignored` (scripts/test.sh does, so CI does). Each attack is a real command
//! run by an untrusted child process (busybox in the guest); each must fail, change nothing, and
//! be reported with its actor.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use rampart_protocol::tamper::{Action, TamperAttempt, Tier};
use rampart_selfprotect::kernel::{KernelTier, TASK_PROTECTED};
use rampart_selfprotect::scope::Scope;

struct Fixture {
    _dir: tempfile::TempDir,
    base: PathBuf,
    install: PathBuf,
    config: PathBuf,
    unit: PathBuf,
    victim: Child,
    tier: Option<KernelTier>,
    reports: mpsc::Receiver<TamperAttempt>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // the tier goes first, so the victim can be killed
        if let Some(t) = self.tier.take() {
            t.unload();
        }
        let _ = self.victim.kill();
        let _ = self.victim.wait();
    }
}

fn setup() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary folder");
    let base = dir.path().to_path_buf();
    let install = base.join("opt/rampart");
    let config = base.join("etc/rampart");
    std::fs::create_dir_all(install.join("bin")).unwrap();
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(install.join("bin/rampart"), b"the agent binary").unwrap();
    std::fs::write(config.join("agent.toml"), b"server_url = \"https://x\"\n").unwrap();
    let unit = base.join("rampart-agent.service");
    std::fs::write(
        &unit,
        b"[Service]\nExecStart=/opt/rampart/bin/rampart agent run\n",
    )
    .unwrap();
    // the protected process stands in for the agent: protected, but not trusted
    // in a process group of its own, like the agent: a group kill reaches it and nothing else
    let victim = std::os::unix::process::CommandExt::process_group(&mut Command::new("sleep"), 0)
        .arg("1000")
        .spawn()
        .expect("sleep");
    let scope = Scope {
        trees: vec![install.clone(), config.clone()],
        files: vec![unit.clone()],
    }
    .resolve()
    .unwrap();
    let (tx, reports) = mpsc::channel();
    let tier = KernelTier::start(&scope, &[std::process::id()], tx)
        .expect("the kernel tier must load in this kernel (run through vm/kernel-tier-tests.sh)");
    tier.protect_task(victim.id(), TASK_PROTECTED);
    std::thread::sleep(Duration::from_millis(200));
    Fixture {
        _dir: dir,
        base,
        install,
        config,
        unit,
        victim,
        tier: Some(tier),
        reports,
    }
}

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn snapshot(paths: &[&Path]) -> Vec<(PathBuf, Vec<u8>, u32)> {
    paths
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).unwrap();
            (
                p.to_path_buf(),
                std::fs::read(p).unwrap(),
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()),
            )
        })
        .collect()
}

/// Runs `cmd` as an attacker: it must fail, leave everything as it was, and be reported.
fn refused(f: &Fixture, cmd: &str, action: Action) {
    let bin = f.install.join("bin/rampart");
    let conf = f.config.join("agent.toml");
    let before = snapshot(&[&bin, &conf, &f.unit]);
    while f.reports.try_recv().is_ok() {}
    let (ok, out) = sh(cmd);
    assert!(!ok, "attack succeeded: {cmd}\n{out}");
    assert_eq!(
        snapshot(&[&bin, &conf, &f.unit]),
        before,
        "attack changed files: {cmd}"
    );
    let victim = f.victim.id();
    let state = std::fs::read_to_string(format!("/proc/{victim}/stat")).expect("victim alive");
    let state = state
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        state == "S" || state == "R",
        "victim is {state} after: {cmd}"
    );
    let report = f
        .reports
        .recv_timeout(Duration::from_secs(3))
        .unwrap_or_else(|_| panic!("no tamper report for: {cmd}"));
    assert_eq!(report.action, action, "{cmd}: {report:?}");
    assert_eq!(report.tier, Tier::Kernel);
    assert!(
        report.actor.pid > 0 && !report.actor.comm.is_empty(),
        "{report:?}"
    );
    assert!(!report.actor.parents.is_empty(), "{report:?}");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU guest (vm/kernel-tier-tests.sh)"]
fn attacks_on_processes_are_refused_in_the_kernel() {
    let f = setup();
    let pid = f.victim.id();
    for sig in ["9", "15", "STOP", "HUP", "INT", "USR1"] {
        refused(&f, &format!("kill -{sig} {pid}"), Action::Signal);
    }
    refused(
        &f,
        &format!("kill -9 -- -$(cut -d' ' -f5 /proc/{pid}/stat)"),
        Action::Signal,
    );
    refused(&f, "killall -9 sleep", Action::Signal);
    refused(&f, "pkill -9 sleep", Action::Signal);
    refused(&f, &format!("cat /proc/{pid}/mem"), Action::Trace);
    refused(&f, &format!("strace -p {pid} -o /dev/null"), Action::Trace);
    // reading harmless process facts stays allowed
    assert!(sh(&format!("cat /proc/{pid}/status")).0);
    let report = f.reports.try_iter().next();
    assert!(report.is_none(), "a harmless read was reported: {report:?}");
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU guest (vm/kernel-tier-tests.sh)"]
fn attacks_on_files_and_folders_are_refused_in_the_kernel() {
    let f = setup();
    let bin = f.install.join("bin/rampart").display().to_string();
    let conf = f.config.join("agent.toml").display().to_string();
    let unit = f.unit.display().to_string();
    let install = f.install.display().to_string();
    let config = f.config.display().to_string();
    let base = f.base.display().to_string();
    let cases: Vec<(String, Action)> = vec![
        (format!("echo evil > {bin}"), Action::Write),
        (format!("echo evil >> {conf}"), Action::Write),
        (format!("truncate -s 0 {bin}"), Action::Write),
        (
            format!("dd if=/dev/zero of={bin} bs=1 count=4 conv=notrunc"),
            Action::Write,
        ),
        (format!("cp /bin/busybox {bin}"), Action::Write),
        (format!("rm -f {bin}"), Action::Delete),
        (format!("rm -rf {install}"), Action::Delete),
        (format!("mv {bin} {base}/stolen"), Action::Rename),
        (
            format!("mv {base}/../ {base}/x 2>/dev/null; mv {install} {base}/moved"),
            Action::Rename,
        ),
        (format!("mv {base}/opt {base}/opt2"), Action::Rename),
        (
            format!("echo x > {base}/new && mv {base}/new {conf}"),
            Action::Rename,
        ),
        (format!("ln {bin} {base}/hardlink"), Action::Link),
        (format!("touch {install}/bin/planted"), Action::Create),
        (format!("mkdir {config}/planted"), Action::Create),
        (
            format!("ln -s /etc/passwd {config}/agent.link"),
            Action::Create,
        ),
        (format!("chmod 777 {bin}"), Action::Attributes),
        (format!("chown 1:1 {conf}"), Action::Attributes),
        (
            format!("touch -d '2000-01-01 00:00' {unit}"),
            Action::Attributes,
        ),
        (format!("chattr +i {conf}"), Action::Flags),
        (
            format!("setfattr -n trusted.rampart -v 1 {conf}"),
            Action::Xattr,
        ),
        (format!("setfattr -x trusted.none {bin}"), Action::Xattr),
        (format!("echo '[Service]' > {unit}"), Action::Write),
        (format!("rm {unit}"), Action::Delete),
        (format!("mount -t tmpfs tmpfs {config}"), Action::Mount),
        (format!("mount -o bind /tmp {install}"), Action::Mount),
        (format!("mount -t tmpfs tmpfs {base}/etc"), Action::Mount),
    ];
    for (cmd, action) in &cases {
        refused(&f, cmd, *action);
    }
    // the agent itself (a trusted process) still writes its own files
    std::fs::write(f.config.join("agent.toml"), b"rewritten by the agent\n").unwrap();
    std::fs::write(f.config.join("state.json"), b"{}").unwrap();
    // a file the agent created later is protected through its folder
    refused(
        &f,
        &format!("echo evil > {config}/state.json"),
        Action::Write,
    );
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU guest (vm/kernel-tier-tests.sh)"]
fn the_kernel_tier_protects_its_own_programs() {
    let f = setup();
    let ids = f.tier.as_ref().unwrap().bpf_ids().to_vec();
    assert!(ids.len() > 10, "{ids:?}");
    let bpftool = Path::new("/usr/bin/bpftool");
    if !bpftool.exists() {
        panic!("bpftool was not copied into the guest");
    }
    // every program of ours is out of reach of anyone else: bpftool cannot get hold of them
    let (_, out) = sh("bpftool prog show");
    assert!(!out.contains("rp_task_kill"), "{out}");
    while f.reports.try_recv().is_ok() {}
    for id in &ids {
        let (ok, _) = sh(&format!("bpftool link detach id {id}"));
        assert!(!ok);
    }
    let report = f
        .reports
        .recv_timeout(Duration::from_secs(3))
        .expect("bpf report");
    assert_eq!(report.action, Action::Bpf);
}

#[test]
#[ignore = "needs BPF LSM: runs in the QEMU guest (vm/kernel-tier-tests.sh)"]
fn after_unload_everything_is_allowed_again() {
    let mut f = setup();
    let conf = f.config.join("agent.toml").display().to_string();
    refused(&f, &format!("echo evil > {conf}"), Action::Write);
    f.tier.take().unwrap().unload();
    assert!(sh(&format!("echo fine > {conf}")).0);
    assert!(sh(&format!("kill -STOP {0} && kill -CONT {0}", f.victim.id())).0);
}
