//! Ransomware protection on a real agent, configured by the server's policy: the simulator's
//! families against a protected folder (the actor stopped, every document back, the incident
//! on the server naming every file), audit mode (reported, nothing stopped, restored later
//! from the CLI, again and again), strict mode (an untrusted writer refused, a trusted one let
//! through). Needs root and fanotify permission events: with `CI=true` their absence fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rampart_protocol::admin::EventsQuery;
use rampart_protocol::ransomware::{FileOutcome, Incident};
use rampart_tests::{eventually, run_cli, StoreKind, TestAgent, TestServer};
use serde_json::{json, Value};

/// The simulator, next to the `rampart` binary under test.
fn simulator() -> PathBuf {
    let bin = rampart_tests::rampart_bin().with_file_name("rampart-ransim");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// Every file below `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// What differs between two snapshots: (changed or gone, new).
fn differences(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let changed = before
        .iter()
        .filter(|(p, c)| after.get(*p) != Some(c))
        .map(|(p, _)| p.clone())
        .collect();
    let extra = after
        .keys()
        .filter(|p| !before.contains_key(*p))
        .cloned()
        .collect();
    (changed, extra)
}

/// Runs `script` with `sh -c` in a session of its own; whether it succeeded.
fn sh(script: &str) -> bool {
    Command::new("setsid")
        .args(["sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The start of a file's content, for a failure message.
fn show(content: &[u8]) -> String {
    let head = &content[..content.len().min(24)];
    format!(
        "{} bytes: {:?}",
        content.len(),
        String::from_utf8_lossy(head)
    )
}

fn policy(mode: &str, trusted: Value) -> Value {
    json!({
        "checkin": {"interval_seconds": 2},
        "ransomware": {"mode": mode, "folders": ["/docs"], "trusted_programs": trusted},
    })
}

/// A server and an agent whose group's policy protects `AGENT_ROOT/docs` (a corpus of 120
/// documents in real formats) in `mode`; `None` when fanotify is missing outside CI.
async fn protected(mode: &str) -> Option<(TestServer, TestAgent, PathBuf)> {
    let server = TestServer::start(StoreKind::Sqlite).await;
    server
        .admin
        .create_group("docs", Some(policy(mode, json!([]))))
        .await
        .unwrap();
    let token = server.enrollment_token("docs", 1).await;
    let mut agent = TestAgent::enroll(&server, &token);
    let docs = agent.root().join("docs");
    let made = Command::new(simulator())
        .arg("corpus")
        .arg(&docs)
        .args(["--count", "120", "--seed", "7"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success(), "making the corpus");
    agent.start();
    let ready = wait_for_mode(&agent, mode).await;
    if ready["status"]["state"] == "off" {
        let why = ready["status"]["reason"].to_string();
        if rampart_tests::in_ci() {
            panic!("CI=true and ransomware protection is off: {why}");
        }
        eprintln!("skipping: ransomware protection is off here: {why}");
        agent.stop();
        return None;
    }
    Some((server, agent, docs))
}

/// `rampart ransomware status --json` once the agent protects its folder in `mode` and has
/// walked it (or once protection reports itself off).
async fn wait_for_mode(agent: &TestAgent, mode: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("ransomware protection ready in {mode} mode"),
        || async {
            let (ok, out, _) = run_cli(agent.root(), &["ransomware", "status", "--json"]);
            let s: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
            let reason = s["status"]["reason"].as_str().unwrap_or_default();
            let off = s["status"]["state"] == "off" && !reason.contains("starting");
            let ready = s["mode"] == mode
                && !reason.contains("starting")
                && reason.contains("folder(s) watched")
                && !reason.contains("none of the protected folders");
            (off || ready).then_some(s)
        },
    )
    .await
}

/// The `ransomware.incident` events the server holds, oldest first.
async fn incidents_on_server(server: &TestServer) -> Vec<Incident> {
    server
        .admin
        .events(&EventsQuery {
            kind: Some("ransomware.incident".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_value(e.body).expect("an incident"))
        .collect()
}

/// Writes a copy of the simulator of its own to `to`: the program, then `tag` (the loader reads
/// no further than the program). A conviction blocks the program by content on the whole host:
/// copies with the same bytes in two tests would stop each other's.
fn simulator_copy(to: &Path, tag: &str) {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(simulator()).unwrap();
    bytes.extend(format!("\nrampart test copy: {tag}\n").as_bytes());
    std::fs::write(to, bytes).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `family` from a fresh copy of the simulator (a program of its own: a blocked one stays
/// blocked), in a session of its own as an attacker's program would run. Returns whether it
/// finished its work and the files it reported done.
fn attack(agent: &TestAgent, family: &str, docs: &Path) -> (bool, BTreeSet<PathBuf>) {
    let copy = agent.root().join(format!("sim-{family}"));
    simulator_copy(&copy, &copy.display().to_string());
    run_simulator(&copy, family, docs)
}

/// Runs the simulator at `program` against `docs`, in a session of its own.
fn run_simulator(program: &Path, family: &str, docs: &Path) -> (bool, BTreeSet<PathBuf>) {
    let out = Command::new("setsid")
        .arg(program)
        .arg(family)
        .arg(docs)
        .args(["--delay-ms", if family == "drip" { "300" } else { "0" }])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let done = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("done "))
        .map(PathBuf::from)
        .collect();
    (out.status.success(), done)
}

/// Waits for the server to hold `count` incidents; returns the last. On a timeout, the failure
/// shows what the agent logged and which incidents it holds itself.
async fn incident_number(
    server: &TestServer,
    agent: &TestAgent,
    count: usize,
    what: &str,
) -> Incident {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = incidents_on_server(server).await;
        if all.len() >= count {
            return all[count - 1].clone();
        }
        if std::time::Instant::now() > deadline {
            let (_, local, _) = run_cli(agent.root(), &["ransomware", "incidents"]);
            let log = agent.log();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "timed out after 60 s waiting for: {what}\n--- the agent's incidents:\n{local}\n--- agent log:\n{}",
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In block mode, each family in turn against the same folder: stopped (unless it was done in
/// microseconds), every document back byte for byte, nothing of the attacker's left, and the
/// incident on the server lists every file the simulator reported done.
#[tokio::test]
async fn every_family_is_stopped_and_undone_and_reported_to_the_server() {
    let Some((server, mut agent, docs)) = protected("block").await else {
        return;
    };
    let families = [
        "inplace",
        "new-file",
        "rename",
        "head",
        "blocks",
        "per-process",
        "workers",
        "mmap",
        "drip",
        "base64",
        "xor",
        "wipe-truncate",
        "wipe-delete",
        "notes",
    ];
    for (n, family) in families.iter().enumerate() {
        let before = snapshot(&docs);
        let (finished, done) = attack(&agent, family, &docs);
        let incident = incident_number(
            &server,
            &agent,
            n + 1,
            &format!("{family}: its incident on the server"),
        )
        .await;
        // families that only delete or drop notes finish in microseconds: nothing is lost,
        // and that is the assertion for them
        let quick = matches!(*family, "wipe-delete" | "notes");
        assert!(
            quick || !finished,
            "{family}: the simulator finished its work instead of being stopped\n{incident:#?}"
        );
        assert_eq!(incident.mode, "block");
        let after = snapshot(&docs);
        let (changed, extra) = differences(&before, &after);
        assert!(
            changed.is_empty() && extra.is_empty(),
            "{family}: not restored: changed {:?}, left {extra:?}\n{incident:#?}",
            changed
                .iter()
                .map(|p| (p, show(&before[p]), after.get(p).map(|a| show(a))))
                .collect::<Vec<_>>()
        );
        let listed: BTreeSet<PathBuf> = incident
            .files
            .iter()
            .map(|f| f.path.clone().into())
            .collect();
        let missing: Vec<&PathBuf> = done.iter().filter(|p| !listed.contains(*p)).collect();
        assert!(
            missing.is_empty(),
            "{family}: the incident does not list {missing:?}\n{incident:#?}"
        );
        assert!(
            incident.files.iter().all(|f| matches!(
                f.outcome,
                FileOutcome::Restored | FileOutcome::Quarantined | FileOutcome::Unchanged
            )),
            "{family}: {incident:#?}"
        );
        eprintln!(
            "{family}: {} document(s) changed before conviction, {} file(s) in the incident",
            incident.changed_before_conviction,
            incident.files.len()
        );
    }
    // after a restart the programs blocked stay blocked, by content: a copy of the first
    // family's program at another path is stopped as it starts, and reported
    agent.stop();
    agent.start();
    wait_for_mode(&agent, "block").await;
    let before = snapshot(&docs);
    let first = agent.root().join(format!("sim-{}", families[0]));
    let copy = agent.root().join("a-renamed-copy");
    simulator_copy(&copy, &first.display().to_string());
    let (finished, _) = run_simulator(&copy, families[0], &docs);
    assert!(
        !finished,
        "a copy of a blocked program ran to its end after a restart"
    );
    let incident = incident_number(
        &server,
        &agent,
        families.len() + 1,
        "the copy's incident on the server",
    )
    .await;
    assert!(
        incident
            .evidence
            .iter()
            .any(|e| e.contains("blocked on this host")),
        "{incident:#?}"
    );
    let (changed, extra) = differences(&before, &snapshot(&docs));
    assert!(
        changed.is_empty() && extra.is_empty(),
        "the copy's work was not undone: {changed:?} {extra:?}\n{incident:#?}"
    );
    // the agent's own list agrees with the server's
    let (ok, out, err) = run_cli(agent.root(), &["ransomware", "incidents", "--json"]);
    assert!(ok, "{out}{err}");
    let local: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(local.len(), families.len() + 1, "{out}");
    agent.stop();
}

/// Audit mode: the same detection and report, nothing stopped or undone; a restore from the
/// CLI brings every document back, and running it again changes nothing.
#[tokio::test]
async fn audit_mode_reports_and_stops_nothing_and_the_cli_restores_repeatably() {
    let Some((server, mut agent, docs)) = protected("audit").await else {
        return;
    };
    let before = snapshot(&docs);
    let (finished, done) = attack(&agent, "inplace", &docs);
    assert!(finished, "audit mode stopped the simulator");
    let incident = incident_number(&server, &agent, 1, "the audit incident on the server").await;
    assert_eq!(incident.mode, "audit");
    assert!(incident.actor.stopped_pids.is_empty(), "{incident:#?}");
    assert!(!incident.program_blocked);
    let (changed, _) = differences(&before, &snapshot(&docs));
    assert_eq!(
        changed.len(),
        done.len(),
        "audit mode changes nothing back by itself"
    );
    // the vault is inside the agent's self-protected area: nobody else changes or removes the
    // originals it keeps (a write is refused; a removal is undone at once)
    let copies: Vec<PathBuf> = std::fs::read_dir(agent.root().join("var/lib/rampart/vault/copies"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(!copies.is_empty(), "audit mode kept no originals");
    let victim = copies[0].clone();
    let kept = std::fs::read(&victim).unwrap();
    assert!(
        !sh(&format!("echo tampered > '{}'", victim.display())),
        "a vault copy was writable by another process"
    );
    let _ = sh(&format!("rm -f '{}'", victim.display()));
    eventually(
        Duration::from_secs(10),
        "the removed vault copy put back",
        || {
            let (victim, kept) = (victim.clone(), kept.clone());
            async move { (std::fs::read(&victim).ok() == Some(kept)).then_some(()) }
        },
    )
    .await;
    for round in 0..2 {
        let (ok, out, err) = run_cli(
            agent.root(),
            &["ransomware", "restore", &incident.id, "--json"],
        );
        assert!(ok, "restore round {round}: {out}{err}");
        let (changed, extra) = differences(&before, &snapshot(&docs));
        assert!(
            changed.is_empty() && extra.is_empty(),
            "round {round}: changed {changed:?}, left {extra:?}\n{out}"
        );
    }
    // the restore was reported too
    eventually(
        Duration::from_secs(30),
        "ransomware.restored events",
        || async {
            let n = rampart_tests::count_events(&server.admin, "ransomware.restored").await;
            (n == 2).then_some(())
        },
    )
    .await;
    // an unknown incident is an error that names it
    let (ok, out, err) = run_cli(agent.root(), &["ransomware", "restore", "rw-nope"]);
    assert!(
        !ok && format!("{out}{err}").contains("rw-nope"),
        "{out}{err}"
    );
    agent.stop();
}

/// Strict mode, set by a policy change: an untrusted program is refused when it opens a
/// document for writing; the program the policy trusts (path and hash) writes it.
#[tokio::test]
async fn strict_mode_refuses_untrusted_writers_and_lets_the_trusted_program_write() {
    let Some((server, mut agent, docs)) = protected("block").await else {
        return;
    };
    let python = std::fs::canonicalize(
        String::from_utf8(
            Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 (scripts/install-deps.sh --for test installs it)")
                .stdout,
        )
        .unwrap()
        .trim(),
    )
    .unwrap();
    let hash = rampart_ransomware::monitor::sha256_of(&python).unwrap();
    server
        .admin
        .set_policy(
            "docs",
            policy(
                "strict",
                json!([{"path": python.display().to_string(), "sha256": hash}]),
            )
            .to_string(),
        )
        .await
        .unwrap();
    wait_for_mode(&agent, "strict").await;
    let doc = snapshot(&docs)
        .into_keys()
        .find(|p| p.extension().is_some_and(|e| e == "txt"));
    let doc = doc.expect("a text document in the corpus");
    let before = std::fs::read(&doc).unwrap();
    assert!(
        !sh(&format!("echo untrusted >> '{}'", doc.display())),
        "strict mode let an untrusted program write a document"
    );
    assert_eq!(std::fs::read(&doc).unwrap(), before);
    assert!(
        sh(&format!(
            "{} -c \"open('{}', 'a').write('trusted\\n')\"",
            python.display(),
            doc.display()
        )),
        "the trusted program was refused"
    );
    assert!(std::fs::read_to_string(&doc)
        .unwrap()
        .ends_with("trusted\n"));
    agent.stop();
}
