//! The self-protection battery: one list of attacks, run as root with real tools against a
//! real agent enrolled to a real server, in each tier the machine offers — the userspace tier
//! on this kernel, the kernel tier (BPF LSM) in the QEMU guest of `vm/kernel-tier-tests.sh`.
//!
//! Each attack asserts what its tier promises: the attempt was refused (the command failed),
//! repaired (undone at once) or, where nothing can refuse it, observed; the agent still runs —
//! the same process, or in the userspace tier for SIGKILL a new one its supervisor started —
//! and is not stopped; the protected files are byte-identical (the state database the same
//! inode); and a `tamper` event with that action and outcome reached the server. The few
//! attempts a tier refuses without being able to say who tried (the immutable attribute's
//! refusals in the userspace tier) are marked `Silent`. The whole list runs again after the
//! agent was started again, then an authorized unload lifts protection.
//!
//! The table in the README ("Self-protection") is this list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rampart_protocol::admin::EventsQuery;
use rampart_protocol::tamper::{Action, Outcome, TamperAttempt};
use rampart_tests::{eventually, StoreKind, TestAgent, TestServer};
use serde_json::json;

const PASSWORD: &str = "battery unload password";

/// What a tier does about an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The command fails; a `refused` event.
    Refused,
    /// A signal the userspace tier's supervisor holds back (or that the supervisor ignores):
    /// `kill` itself succeeds, the signal never arrives; a `refused` event.
    Held,
    /// The change is undone at once; a `repaired` event (the command may have succeeded).
    Repaired,
    /// SIGKILL in the userspace tier: the agent is started again by its supervisor; the signal
    /// is observed with its sender and the restart reported (`process-lost`, `repaired`).
    Restarted,
    /// The command fails, and nothing can say who tried (no event).
    Silent,
}

use Want::*;

/// One attack: a shell command with `{r}` (the agent's root), `{pid}` (the agent), `{pgid}`
/// (its process group), `{sup}` (its supervisor), `{x}` (a scratch folder outside the root),
/// and what each tier does (`None`: not run there, see the README).
struct Attack {
    cmd: &'static str,
    kernel: Option<(Want, &'static [Action])>,
    userspace: Option<(Want, &'static [Action])>,
}

const fn both(want: Want, actions: &'static [Action]) -> (Want, &'static [Action]) {
    (want, actions)
}

const SIGNAL: &[Action] = &[Action::Signal];
const TRACE: &[Action] = &[Action::Trace];
const WRITE: &[Action] = &[Action::Write, Action::Truncate];
const DELETE: &[Action] = &[Action::Delete];
const RENAME: &[Action] = &[Action::Rename];
const LINK: &[Action] = &[Action::Link];
const ATTRS: &[Action] = &[Action::Attributes, Action::Xattr];
const FLAGS: &[Action] = &[Action::Flags];
const CREATE: &[Action] = &[Action::Create, Action::Write];
const MOUNT: &[Action] = &[Action::Mount];
const LOST: &[Action] = &[Action::ProcessLost];

fn attacks() -> Vec<Attack> {
    let a = |cmd, kernel, userspace| Attack {
        cmd,
        kernel,
        userspace,
    };
    let refused = |actions| Some(both(Refused, actions));
    let held = Some(both(Held, SIGNAL));
    vec![
        // the agent's process
        a("kill -9 {pid}", refused(SIGNAL), Some(both(Restarted, SIGNAL))),
        a("kill -15 {pid}", refused(SIGNAL), held),
        a("kill -STOP {pid}", refused(SIGNAL), held),
        a("kill -HUP {pid}", refused(SIGNAL), held),
        a("/bin/kill -INT {pid}", refused(SIGNAL), held),
        a("/bin/kill -9 -- -{pgid}", refused(SIGNAL), Some(both(Restarted, SIGNAL))),
        a("pkill -TERM -f -- '--root {r} agent [r]un'", refused(SIGNAL), held),
        a("pkill -9 -f -- '--root {r} agent [r]un'", refused(SIGNAL), Some(both(Restarted, SIGNAL))),
        // every process named rampart on the host: only where nothing else runs (the guest)
        a("killall rampart", refused(SIGNAL), None),
        a("strace -p {pid} -o /dev/null", refused(TRACE), Some(both(Silent, TRACE))),
        a("gdb -p {pid} -batch -ex 'info threads' 2>&1 | grep -q '^\\*'", None, Some(both(Silent, TRACE))),
        // the userspace tier's supervisor
        a("kill -9 {sup}", None, Some(both(Repaired, LOST))),
        a("kill -STOP {sup}", None, Some(both(Repaired, SIGNAL))),
        a("kill -TERM {sup}", None, held),
        a("strace -p {sup} -o /dev/null & sleep 0.3; kill %1 2>/dev/null", None, Some(both(Repaired, TRACE))),
        // the configuration store
        a("echo evil > {r}/etc/rampart/agent.toml", refused(WRITE), refused(WRITE)),
        a("echo evil >> {r}/etc/rampart/agent.toml", refused(WRITE), refused(WRITE)),
        a("truncate -s 0 {r}/etc/rampart/agent.toml", refused(WRITE), refused(WRITE)),
        a("dd if=/dev/zero of={r}/etc/rampart/agent.toml bs=1 count=4 conv=notrunc", refused(WRITE), refused(WRITE)),
        a("cp /bin/sh {r}/etc/rampart/agent.toml", refused(WRITE), refused(WRITE)),
        a("echo evil > {x}/new && install -m 600 {x}/new {r}/etc/rampart/agent.credential", Some(both(Refused, &[Action::Delete, Action::Write, Action::Rename])), Some(both(Repaired, &[Action::Delete, Action::Rename, Action::Create]))),
        a("rm -f {r}/etc/rampart/agent.credential", refused(DELETE), Some(both(Repaired, DELETE))),
        a("mv {r}/etc/rampart/agent.credential {x}/stolen", refused(RENAME), Some(both(Repaired, RENAME))),
        a("echo evil > {x}/evil && mv {x}/evil {r}/etc/rampart/agent.toml", refused(RENAME), Some(both(Repaired, RENAME))),
        // the userspace tier does not see a hard link made elsewhere (no notification says so); the
        // file stays guarded through it, as the next attempt shows
        a("ln {r}/etc/rampart/agent.toml {x}/hard", refused(LINK), None),
        a("ln -s {r}/etc/rampart/agent.toml {x}/soft && echo evil > {x}/soft", refused(WRITE), refused(WRITE)),
        a("ln {r}/etc/rampart/server-ca.pem {x}/hard2 && echo evil >> {x}/hard2", refused(LINK), refused(WRITE)),
        a("chmod 000 {r}/etc/rampart/server-ca.pem", refused(ATTRS), Some(both(Repaired, ATTRS))),
        a("chown 1:1 {r}/etc/rampart/server-ca.pem", refused(ATTRS), Some(both(Repaired, ATTRS))),
        a("touch -d 2000-01-01 {r}/etc/rampart/agent.toml", refused(ATTRS), Some(both(Repaired, ATTRS))),
        a("setfattr -n user.evil -v 1 {r}/etc/rampart/agent.toml", refused(ATTRS), Some(both(Repaired, ATTRS))),
        a("chattr +i {r}/etc/rampart/agent.toml", refused(FLAGS), refused(FLAGS)),
        // the userspace tier refuses the open, but O_CREAT has made the file by then (touch may
        // then succeed through utimensat): removed at once
        a("touch {r}/etc/rampart/planted", refused(CREATE), Some(both(Repaired, CREATE))),
        a("mkdir {r}/etc/rampart/planted.d", refused(CREATE), Some(both(Repaired, CREATE))),
        a("mv {r}/etc/rampart {r}/etc/gone", refused(RENAME), Some(both(Repaired, RENAME))),
        a("rm -rf {r}/etc/rampart", refused(DELETE), Some(both(Repaired, DELETE))),
        // the state folder and database
        a("rm -f {r}/var/lib/rampart/agent/outbox.db", refused(DELETE), Some(both(Repaired, DELETE))),
        a("truncate -s 0 {r}/var/lib/rampart/agent/outbox.db", refused(WRITE), refused(WRITE)),
        a("mv {r}/var/lib/rampart/agent {r}/var/lib/rampart/gone", refused(RENAME), Some(both(Repaired, RENAME))),
        a("mv {r}/var/lib/rampart {r}/var/lib/gone", refused(RENAME), Some(both(Repaired, RENAME))),
        a("rm -rf {r}/var/lib/rampart/agent", refused(DELETE), Some(both(Repaired, DELETE))),
        // the install folder (immutable in the userspace tier)
        a("echo evil > {r}/opt/rampart/bin/rampart", refused(WRITE), Some(both(Silent, WRITE))),
        a("rm -f {r}/opt/rampart/bin/rampart", refused(DELETE), Some(both(Silent, DELETE))),
        a("mv {r}/opt/rampart/bin/rampart {x}/stolen-bin", refused(RENAME), Some(both(Silent, RENAME))),
        a("chmod 777 {r}/opt/rampart/bin/rampart", refused(ATTRS), Some(both(Silent, ATTRS))),
        a("chattr -i {r}/opt/rampart/bin/rampart", refused(FLAGS), refused(FLAGS)),
        a("touch {r}/opt/rampart/bin/planted", refused(CREATE), Some(both(Silent, CREATE))),
        // the service unit: edited, and masked the way systemctl mask does
        a("echo ExecStart=/bin/true >> {r}/etc/systemd/system/rampart-agent.service", refused(WRITE), Some(both(Silent, WRITE))),
        a("ln -sf /dev/null {r}/etc/systemd/system/rampart-agent.service", refused(&[Action::Delete, Action::Rename]), Some(both(Silent, DELETE))),
        // mounts over protected folders and their parents
        a("mount -t tmpfs tmpfs {r}/etc/rampart", refused(MOUNT), Some(both(Repaired, MOUNT))),
        a("mount -o bind {x} {r}/var/lib/rampart/agent", refused(MOUNT), Some(both(Repaired, MOUNT))),
        a("mkdir -p {x}/up {x}/work && mount -t overlay overlay -o lowerdir={r}/opt/rampart,upperdir={x}/up,workdir={x}/work {r}/opt/rampart", refused(MOUNT), Some(both(Repaired, MOUNT))),
        a("mount -t tmpfs tmpfs {r}/etc", refused(MOUNT), Some(both(Repaired, MOUNT))),
    ]
}

/// Which tier the agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TierKind {
    Kernel,
    Userspace,
}

fn sh(cmd: &str) -> bool {
    Command::new("timeout")
        .args(["10", "sh", "-c"])
        .arg(format!("{cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The files that must stay byte-identical, and the state database's inode.
fn protected_state(root: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut files = BTreeMap::new();
    for rel in [
        "etc/rampart/agent.toml",
        "etc/rampart/agent.credential",
        "etc/rampart/server-ca.pem",
        "etc/rampart/server-signing-key",
        "var/lib/rampart/agent/desired-state.json",
        "opt/rampart/bin/rampart",
        "etc/systemd/system/rampart-agent.service",
    ] {
        let p = root.join(rel);
        files.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
    }
    let ino = std::fs::metadata(root.join("var/lib/rampart/agent/outbox.db"))
        .map(|m| m.ino())
        .unwrap_or(0);
    (files, ino)
}

fn filesystem_available(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn pgid_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn tamper_events(server: &TestServer, agent: &str) -> Vec<(u64, TamperAttempt)> {
    server
        .admin
        .events(&EventsQuery {
            agent: Some(agent.to_owned()),
            kind: Some("tamper".into()),
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, serde_json::from_value(e.body).unwrap()))
        .collect()
}

fn outcome_of(want: Want) -> Outcome {
    match want {
        Refused | Held | Silent => Outcome::Refused,
        Repaired => Outcome::Repaired,
        Restarted => Outcome::Observed,
    }
}

/// Sets up a server and an agent with an install folder and a service unit below its root.
async fn scene() -> (TestServer, TestAgent) {
    let server = TestServer::start(StoreKind::Sqlite).await;
    server
        .admin
        .set_policy(
            "default",
            json!({"checkin": {"interval_seconds": 5}, "unload": {"password": PASSWORD}})
                .to_string(),
        )
        .await
        .unwrap();
    let token = server.enrollment_token("default", 1).await;
    let mut agent = TestAgent::enroll(&server, &token);
    agent.unload_password = Some(PASSWORD.to_owned());
    let root = agent.root().to_path_buf();
    std::fs::create_dir_all(root.join("opt/rampart/bin")).unwrap();
    std::fs::write(root.join("opt/rampart/bin/rampart"), b"the installed agent").unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::fs::write(
        root.join("etc/systemd/system/rampart-agent.service"),
        format!(
            "[Service]\nExecStart={}/opt/rampart/bin/rampart agent run\nRestart=always\n",
            root.display()
        ),
    )
    .unwrap();
    agent.start();
    (server, agent)
}

/// Waits until the agent holds the policy and reports its tier.
async fn ready(agent: &TestAgent) -> TierKind {
    let status = eventually(Duration::from_secs(30), "protection and policy", || async {
        let s = agent.status();
        (s["applied_policy_version"] == 2 && s["protections"][0]["state"] != "off").then_some(s)
    })
    .await;
    match status["protections"][0]["state"].as_str() {
        Some("enforced") => TierKind::Kernel,
        _ => TierKind::Userspace,
    }
}

/// Runs every attack of `tier`; returns how many ran.
async fn run_battery(server: &TestServer, agent: &TestAgent, tier: TierKind, pass: &str) -> usize {
    let root = agent.root().to_path_buf();
    let scratch = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for attack in attacks() {
        let Some((want, actions)) = (match tier {
            TierKind::Kernel => attack.kernel,
            TierKind::Userspace => attack.userspace,
        }) else {
            continue;
        };
        if attack.cmd.contains("-t overlay") && !filesystem_available("overlay") {
            eprintln!(
                "[{pass}] not run: this kernel has no overlay filesystem: {}",
                attack.cmd
            );
            continue;
        }
        ran += 1;
        let pid = agent.pid().expect("the agent runs");
        let sup = rampart_tests::processes_below(&root)
            .into_iter()
            .find(|(_, a)| a.iter().any(|w| w == "selfprotect-supervisor"))
            .map(|(p, _)| p)
            .unwrap_or(0);
        let cmd = attack
            .cmd
            .replace("{r}", &root.display().to_string())
            .replace("{x}", &scratch.path().display().to_string())
            .replace("{pgid}", &pgid_of(pid).to_string())
            .replace("{pid}", &pid.to_string())
            .replace("{sup}", &sup.to_string());
        let label = format!("[{pass}, {tier:?} tier] {cmd}");
        let before_state = protected_state(&root);
        let seen = tamper_events(server, &agent.id)
            .await
            .last()
            .map_or(0, |(seq, _)| *seq);
        let succeeded = sh(&cmd);
        if matches!(want, Refused | Silent) {
            assert!(!succeeded, "attack succeeded: {label}");
        }
        // the agent still runs
        if want == Restarted {
            eventually(
                Duration::from_secs(5),
                &format!("a new agent after {label}"),
                || async { agent.pid().filter(|p| *p != pid) },
            )
            .await;
        } else {
            // a thread may be in its signal stop for the moment the supervisor takes to let it
            // go on ('t'); stopped for good ('T') or gone is a failure
            eventually(
                Duration::from_secs(2),
                &format!("the agent running after {label}"),
                || async {
                    let state =
                        state_of(pid).unwrap_or_else(|| panic!("agent gone after: {label}"));
                    matches!(state, 'S' | 'R' | 'D').then_some(())
                },
            )
            .await;
        }
        // the protected files are as they were (a repair may take a moment)
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = protected_state(&root);
            if now == before_state {
                break;
            }
            if std::time::Instant::now() > deadline {
                let changed: Vec<String> = before_state
                    .0
                    .iter()
                    .filter(|(p, b)| now.0.get(*p) != Some(b))
                    .map(|(p, b)| {
                        format!(
                            "{} ({} bytes, now {:?})",
                            p.display(),
                            b.len(),
                            now.0.get(p).map(Vec::len)
                        )
                    })
                    .collect();
                panic!(
                    "protected files changed after {label}: {changed:?}; outbox.db inode {} -> {}\n{}",
                    before_state.1,
                    now.1,
                    agent.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // and the server was told
        if want != Silent {
            let outcome = outcome_of(want);
            eventually(
                Duration::from_secs(15),
                &format!("a {actions:?} {outcome:?} event for {label}"),
                || async {
                    let events = tamper_events(server, &agent.id).await;
                    let new: Vec<&TamperAttempt> = events
                        .iter()
                        .filter(|(s, _)| *s > seen)
                        .map(|(_, a)| a)
                        .collect();
                    let found = new
                        .iter()
                        .any(|a| actions.contains(&a.action) && a.outcome == outcome);
                    let restart = new.iter().find(|a| a.action == Action::ProcessLost);
                    (found && (want != Restarted || restart.is_some()))
                        .then(|| restart.and_then(|a| a.repair_micros))
                },
            )
            .await
            .inspect(|micros| {
                // the supervisor's own measure: from the death to the new process traced
                eprintln!("{label}: started again within {micros} µs");
            });
        }
        // what an attack left outside the root goes
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umount {x}/* 2>/dev/null; rm -rf {x}/*",
                x = scratch.path().display()
            ))
            .status();
    }
    eprintln!("[{pass}] {ran} attacks in the {tier:?} tier");
    ran
}

async fn battery(tier_wanted: TierKind) {
    let (server, mut agent) = scene().await;
    let tier = ready(&agent).await;
    if tier != tier_wanted {
        let why = format!("the agent runs the {tier:?} tier here, not the {tier_wanted:?} tier");
        if tier_wanted == TierKind::Kernel
            || rampart_tests::in_ci()
                && tier_wanted == TierKind::Userspace
                && tier == TierKind::Kernel
        {
            panic!("{why}");
        }
        eprintln!("skipping: {why}");
        return;
    }
    let n = run_battery(&server, &agent, tier, "first pass").await;
    assert!(n >= 40, "only {n} attacks ran in the {tier:?} tier");
    // all of it again after the agent started again: in the userspace tier it was killed and
    // started again by its supervisor along the way; here it is also stopped and started the
    // authorized way
    agent.stop();
    agent.start();
    ready(&agent).await;
    run_battery(&server, &agent, tier, "after a restart").await;
    // a wrong unload password is refused and reported; the right one lifts protection
    let (ok, out) = agent.unload("guess");
    assert!(!ok && out.contains("wrong unload password"), "{out}");
    let (ok, out) = agent.unload(PASSWORD);
    assert!(ok, "{out}");
    assert_eq!(agent.status()["protections"][0]["state"], "off");
    let root = agent.root().to_path_buf();
    assert!(sh(&format!(
        "echo operator >> {}/etc/rampart/agent.toml",
        root.display()
    )));
    assert!(sh(&format!(
        "rm -f {}/opt/rampart/bin/rampart",
        root.display()
    )));
    agent.stop();
    // and the server, which protects itself the same way, after an administrator lifts it
    let lifted = server.admin.unload_server().await.unwrap();
    assert_eq!(lifted["self_protection"]["state"], "off", "{lifted}");
}

#[tokio::test]
async fn the_userspace_tier_refuses_or_repairs_every_attack_and_reports_it() {
    battery(TierKind::Userspace).await;
}

#[tokio::test]
#[ignore = "needs BPF LSM: runs in the QEMU guest (vm/kernel-tier-tests.sh)"]
async fn the_kernel_tier_refuses_every_attack_and_reports_it() {
    battery(TierKind::Kernel).await;
}
