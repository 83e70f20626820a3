//! The userspace tier against real attacks, on this machine's kernel: the fanotify file guard and
//! the immutable attribute. Needs root and fanotify permission events (and a filesystem with the
//! immutable attribute for the test folder); with `CI=true` a missing feature fails the test,
//! elsewhere it is skipped with the reason.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, RwLock};
use std::time::Duration;

use rampart_protocol::tamper::{Action, TamperAttempt, Tier};
use rampart_selfprotect::scope::Scope;
use rampart_selfprotect::userspace::guard::FileGuard;
use rampart_selfprotect::userspace::immutable;

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} 2>/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn skip_or_fail(why: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {why}");
    }
    eprintln!("skipping: {why}");
    true
}

struct Fixture {
    dir: tempfile::TempDir,
    install: PathBuf,
    config: PathBuf,
    immutable: Vec<PathBuf>,
    guard: Option<FileGuard>,
    reports: mpsc::Receiver<TamperAttempt>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.guard = None;
        immutable::clear(&self.immutable);
    }
}

fn setup() -> Option<Fixture> {
    // the test folder must be on a filesystem with the immutable attribute (not every tmpfs)
    let dir = tempfile::tempdir_in(
        std::env::var("RAMPART_TEST_DIR").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .unwrap();
    let install = dir.path().join("opt/rampart");
    let config = dir.path().join("etc/rampart");
    std::fs::create_dir_all(install.join("bin")).unwrap();
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(install.join("bin/rampart"), b"the agent binary").unwrap();
    std::fs::write(config.join("agent.toml"), b"server_url = \"https://x\"\n").unwrap();
    let resolved = Scope {
        trees: vec![install.clone(), config.clone()],
        files: vec![],
    }
    .resolve()
    .unwrap();
    let (tx, reports) = mpsc::channel();
    let trusted = Arc::new(RwLock::new(HashSet::from([std::process::id()])));
    let guard = match FileGuard::start(&resolved, trusted, tx) {
        Ok(g) => g,
        Err(e) => {
            skip_or_fail(&format!("fanotify permission events are unavailable: {e}"));
            return None;
        }
    };
    let immutable = match immutable::set(std::slice::from_ref(&install), &[]) {
        Ok(done) => done,
        Err(e) => {
            skip_or_fail(&format!("the immutable attribute is unavailable here: {e}"));
            return None;
        }
    };
    Some(Fixture {
        dir,
        install,
        config,
        immutable,
        guard: Some(guard),
        reports,
    })
}

fn contents(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn refused(f: &Fixture, cmd: &str, reported: Option<Action>) {
    let bin = f.install.join("bin/rampart");
    let conf = f.config.join("agent.toml");
    let before = (contents(&bin), contents(&conf));
    while f.reports.try_recv().is_ok() {}
    assert!(!sh(cmd), "attack succeeded: {cmd}");
    assert_eq!(
        (contents(&bin), contents(&conf)),
        before,
        "changed by: {cmd}"
    );
    if let Some(action) = reported {
        let r = f
            .reports
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("no report for: {cmd}"));
        assert_eq!(r.action, action, "{cmd}: {r:?}");
        assert_eq!(r.tier, Tier::Userspace);
        assert!(r.actor.pid > 0 && !r.actor.comm.is_empty(), "{r:?}");
    }
}

#[test]
fn a_mount_over_a_protected_folder_is_detached_at_once_and_reported() {
    let Some(f) = setup() else { return };
    let (tx, reports) = mpsc::channel();
    let repair = rampart_selfprotect::userspace::mounts::MountRepair::start(
        rampart_selfprotect::userspace::mounts::guarded_points(std::slice::from_ref(&f.config)),
        None,
        tx,
    )
    .unwrap();
    let conf = f.config.join("agent.toml");
    let before = contents(&conf);
    for cmd in [
        format!("mount -t tmpfs tmpfs {}", f.config.display()),
        format!("mount --bind /tmp {}", f.config.display()),
        format!(
            "mount -t tmpfs tmpfs {}",
            f.config.parent().unwrap().display()
        ),
    ] {
        // the mount itself succeeds (fanotify cannot refuse it) and is undone at once
        assert!(sh(&cmd), "{cmd}");
        let r = reports
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("no repair for: {cmd}"));
        assert_eq!(r.action, Action::Mount);
        assert_eq!(r.outcome, rampart_protocol::tamper::Outcome::Repaired);
        // this kernel (6.18) says who mounted: the pid always, the name if the mount process
        // was still there to be looked at
        assert!(r.actor.pid > 0, "{r:?}");
        assert!(matches!(r.actor.comm.as_str(), "mount" | ""), "{r:?}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(&f.dir.path().display().to_string()),
            "still mounted after: {cmd}"
        );
        assert_eq!(contents(&conf), before);
    }
    drop(repair);
}

#[test]
fn the_file_guard_and_the_immutable_attribute_refuse_changes() {
    let Some(f) = setup() else { return };
    let bin = f.install.join("bin/rampart").display().to_string();
    let conf = f.config.join("agent.toml").display().to_string();
    let base = f.dir.path().display().to_string();
    // opens that would change a file: refused by fanotify, and reported
    for cmd in [
        format!("echo evil > {conf}"),
        format!("echo evil >> {conf}"),
        format!("truncate -s 0 {conf}"),
        format!("dd if=/dev/zero of={conf} bs=1 count=4 conv=notrunc"),
        format!("cp /bin/sh {conf}"),
        format!("ln -s {conf} {base}/link && echo evil > {base}/link"),
    ] {
        refused(&f, &cmd, Some(Action::Write));
    }
    // chattr must open the file first: refused, so the immutable attribute stays
    refused(&f, &format!("chattr -i {bin}"), Some(Action::Flags));
    assert!(immutable::is_set(&f.install.join("bin/rampart")));
    // the install files refuse the rest even for root (the kernel says EPERM; fanotify sees none)
    for cmd in [
        format!("echo evil > {bin}"),
        format!("rm -f {bin}"),
        format!("mv {bin} {base}/stolen"),
        format!("chmod 777 {bin}"),
        format!("chown 1:1 {bin}"),
        format!("touch -d '2000-01-01' {bin}"),
        format!("ln {bin} {base}/hard"),
        format!("touch {}/planted", f.install.join("bin").display()),
        format!("setfattr -n user.x -v 1 {bin}"),
    ] {
        refused(&f, &cmd, None);
    }
    // reading stays allowed, and the agent itself writes its configuration
    assert!(sh(&format!("cat {conf} > /dev/null")));
    std::fs::write(f.config.join("agent.toml"), b"rewritten by the agent\n").unwrap();
    // a file the agent creates later is guarded through its folder
    std::fs::write(f.config.join("state.json"), b"{}").unwrap();
    refused(
        &f,
        &format!("echo evil > {}/state.json", f.config.display()),
        Some(Action::Write),
    );
}

#[test]
fn signals_aimed_at_a_protected_process_are_observed_with_their_author() {
    use rampart_selfprotect::userspace::observer::Observer;
    let mut victim =
        std::os::unix::process::CommandExt::process_group(&mut Command::new("sleep"), 0)
            .arg("100")
            .spawn()
            .unwrap();
    let pid = victim.id();
    let (tx, reports) = mpsc::channel();
    let observed =
        std::sync::Arc::new(|_: &TamperAttempt| rampart_protocol::tamper::Outcome::Observed);
    let observer = match Observer::start(vec![pid], vec![std::process::id()], tx, observed) {
        Ok(o) => o,
        Err(e) => {
            let _ = victim.kill();
            let _ = victim.wait();
            skip_or_fail(&format!("the tp_btf observer does not load here: {e}"));
            return;
        }
    };
    let expect = |cmd: &str, action: Action, detail: Option<i64>, comm: &[&str]| {
        while reports.try_recv().is_ok() {}
        sh(cmd);
        let r = reports
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("nothing observed for: {cmd}"));
        assert_eq!(r.action, action, "{cmd}: {r:?}");
        assert_eq!(r.outcome, rampart_protocol::tamper::Outcome::Observed);
        assert_eq!(r.tier, Tier::Userspace);
        assert_eq!(r.target.pid, Some(pid), "{r:?}");
        if detail.is_some() {
            assert_eq!(r.detail, detail, "{cmd}: {r:?}");
        }
        assert!(comm.contains(&r.actor.comm.as_str()), "{cmd}: {r:?}");
    };
    expect(
        &format!("kill -STOP {pid}"),
        Action::Signal,
        Some(19),
        &["sh", "kill"],
    );
    expect(
        &format!("kill -CONT {pid}"),
        Action::Signal,
        Some(18),
        &["sh", "kill"],
    );
    expect(
        &format!("/bin/kill -HUP {pid}; true"),
        Action::Signal,
        Some(1),
        &["kill"],
    );
    drop(observer);
    let _ = victim.kill();
    let _ = victim.wait();
}
