//! Self-protection of a real agent and server: the tier they report, unload tokens, server
//! self-protection. The attack battery itself is in `battery.rs`.

use std::process::Command;
use std::time::Duration;

use rampart_protocol::admin::EventsQuery;
use rampart_protocol::tamper::{Action, TamperAttempt};
use rampart_tests::{eventually, StoreKind, TestAgent, TestServer};

fn sh(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The `tamper` events the server holds, as attempts.
async fn tamper_attempts(server: &TestServer) -> Vec<TamperAttempt> {
    server
        .admin
        .events(&EventsQuery {
            kind: Some("tamper".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_value(e.body).unwrap())
        .collect()
}

#[tokio::test]
async fn on_this_kernel_the_agent_guards_its_files_and_reports_the_tier_it_uses() {
    let server = TestServer::start(StoreKind::Sqlite).await;
    let token = server.enrollment_token("default", 1).await;
    let mut agent = TestAgent::enroll(&server, &token);
    agent.start();
    let status = eventually(
        Duration::from_secs(30),
        "self-protection reported",
        || async {
            let s = agent.status();
            (s["protections"][0]["state"] != serde_json::Value::Null && s["running"] == true)
                .then_some(s)
        },
    )
    .await;
    let state = status["protections"][0]["state"]
        .as_str()
        .unwrap()
        .to_owned();
    let reason = status["protections"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match state.as_str() {
        "enforced" => {}
        "degraded" => assert!(reason.contains("userspace tier"), "{reason}"),
        _ => {
            if rampart_tests::in_ci() {
                panic!("CI=true and self-protection is {state}: {reason}");
            }
            eprintln!("skipping: self-protection is {state} here: {reason}");
            return;
        }
    }
    let conf = agent.root().join("etc/rampart/agent.toml");
    let before = std::fs::read(&conf).unwrap();
    assert!(!sh(&format!("echo evil > {}", conf.display())));
    assert!(!sh(&format!("truncate -s 0 {}", conf.display())));
    assert_eq!(std::fs::read(&conf).unwrap(), before);
    // a harmless signal: refused in the kernel tier, observed with its author in the userspace tier
    let pid = agent.pid().unwrap();
    sh(&format!("kill -CONT {pid}"));
    let tamper = eventually(
        Duration::from_secs(30),
        "tamper events on the server",
        || async {
            let attempts = tamper_attempts(&server).await;
            (attempts
                .iter()
                .filter(|a| a.action == Action::Write)
                .map(|a| a.count)
                .sum::<u64>()
                >= 2
                && attempts
                    .iter()
                    .any(|a| a.action == Action::Signal && a.target.pid == Some(pid)))
            .then_some(attempts)
        },
    )
    .await;
    let writes: Vec<_> = tamper
        .iter()
        .filter(|a| a.action == Action::Write)
        .collect();
    assert!(
        writes
            .iter()
            .all(|a| a.target.path.as_deref() == Some(conf.to_str().unwrap())),
        "{tamper:?}"
    );
    let signal = tamper.iter().find(|a| a.action == Action::Signal).unwrap();
    assert_eq!(signal.detail, Some(18), "{signal:?}");
    // the agent's own state keeps flowing: it is not blocked by its own guard
    agent.note("still working", 3);
    eventually(Duration::from_secs(20), "notes delivered", || async {
        let n = rampart_tests::count_events(&server.admin, "agent.note").await;
        (n == 3).then_some(())
    })
    .await;
    agent.stop();
}

#[tokio::test]
async fn a_maintenance_token_unloads_once_and_only_the_agent_it_names() {
    let server = TestServer::start(StoreKind::Sqlite).await;
    let token = server.enrollment_token("default", 2).await;
    let mut a = TestAgent::enroll(&server, &token);
    let mut b = TestAgent::enroll(&server, &token);
    a.start();
    b.start();
    let for_a = server
        .admin
        .maintenance_token(&a.id, 600)
        .await
        .unwrap()
        .token;
    // another agent refuses it, and so does anyone holding a changed copy
    let (ok, out) = b.unload_with_token(&for_a);
    assert!(!ok && out.contains("another agent"), "{out}");
    // one character of the signature changed
    let at = for_a.len() - 10;
    let c = &for_a[at..at + 1];
    let forged = format!(
        "{}{}{}",
        &for_a[..at],
        if c == "A" { "B" } else { "A" },
        &for_a[at + 1..]
    );
    let (ok, out) = a.unload_with_token(&forged);
    assert!(!ok && out.contains("not signed"), "{out}");
    let (ok, out) = a.unload_with_token("rampart-maint.e30.AAAA");
    assert!(!ok, "{out}");
    // the right agent takes it once
    let (ok, out) = a.unload_with_token(&for_a);
    assert!(ok, "{out}");
    assert_eq!(a.status()["protections"][0]["state"], "off");
    let (ok, out) = a.unload_with_token(&for_a);
    assert!(!ok && out.contains("used already"), "{out}");
    // b is untouched
    assert_ne!(b.status()["protections"][0]["state"], "off");
    // tokens are issued for known agents only
    let err = server
        .admin
        .maintenance_token("no-such-agent", 600)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("404"), "{err:#}");
    let refused = eventually(
        Duration::from_secs(20),
        "unload events on the server",
        || async {
            let events = server.admin.events(&EventsQuery::default()).await.unwrap();
            let refused = events
                .iter()
                .filter(|e| e.kind == "selfprotect.unload-refused")
                .count();
            let unloaded: Vec<_> = events
                .iter()
                .filter(|e| e.kind == "selfprotect.unloaded")
                .collect();
            (refused >= 4 && unloaded.len() == 1).then_some((refused, unloaded[0].body.clone()))
        },
    )
    .await;
    assert!(refused.1["by"]
        .as_str()
        .unwrap()
        .contains("maintenance token issued by admin"));
    a.stop();
    b.stop();
}

#[tokio::test]
async fn the_server_protects_its_data_folder_and_an_administrator_can_lift_it() {
    let server = TestServer::start(StoreKind::Sqlite).await;
    let health = server.admin.health().await.unwrap();
    let state = health["self_protection"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if state == "off" {
        if rampart_tests::in_ci() {
            panic!("CI=true and server self-protection is off: {health}");
        }
        eprintln!("skipping: server self-protection is off here: {health}");
        return;
    }
    let data = server.root().join("var/lib/rampart/server");
    let ca = data.join("ca.pem");
    let before = std::fs::read(&ca).unwrap();
    assert!(!sh(&format!("echo evil > {}", ca.display())));
    assert!(!sh(&format!("truncate -s 0 {}/rampart.db", data.display())));
    assert_eq!(std::fs::read(&ca).unwrap(), before);
    let tamper = eventually(
        Duration::from_secs(20),
        "the server's own tamper events",
        || async {
            let events = server
                .admin
                .events(&EventsQuery {
                    kind: Some("tamper".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            (events.len() >= 2 && events.iter().all(|e| e.agent_id.starts_with("server:")))
                .then_some(events)
        },
    )
    .await;
    assert!(tamper
        .iter()
        .any(|e| e.body["target"]["path"] == ca.display().to_string()));
    // the server keeps working on its own data meanwhile
    let token = server.enrollment_token("default", 1).await;
    TestAgent::enroll(&server, &token);
    // an administrator lifts it
    let lifted = server.admin.unload_server().await.unwrap();
    assert_eq!(lifted["self_protection"]["state"], "off", "{lifted}");
    assert!(sh(&format!(
        "cat {} > /dev/null && touch {}/operator-was-here",
        ca.display(),
        data.display()
    )));
}

/// Uninstalling goes through the unload path: a wrong password is refused (and reported) with
/// nothing removed and the agent running on; the policy's password stops the agent and removes
/// its files.
#[tokio::test]
async fn uninstall_needs_an_authorized_unload_and_then_removes_the_agent() {
    const PASSWORD: &str = "uninstall-me-please";
    let server = TestServer::start(StoreKind::Sqlite).await;
    server
        .admin
        .create_group(
            "leaving",
            Some(serde_json::json!({"checkin": {"interval_seconds": 2}, "unload": {"password": PASSWORD}})),
        )
        .await
        .unwrap();
    let token = server.enrollment_token("leaving", 1).await;
    let mut agent = TestAgent::enroll(&server, &token);
    agent.unload_password = Some(PASSWORD.to_owned());
    agent.start();
    eventually(
        Duration::from_secs(30),
        "the policy with the password held",
        || async { (agent.status()["applied_policy_version"] == 1).then_some(()) },
    )
    .await;
    let uninstall = |password: &str| {
        let out = Command::new(rampart_tests::rampart_bin())
            .arg("--root")
            .arg(agent.root())
            .args(["agent", "uninstall"])
            .env("RAMPART_UNLOAD_PASSWORD", password)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let config = agent.root().join("etc/rampart");
    let state = agent.root().join("var/lib/rampart/agent");
    let (ok, out) = uninstall("not the password");
    assert!(!ok && out.contains("uninstall refused"), "{out}");
    assert!(config.join("agent.toml").exists() && state.exists());
    assert!(
        agent.pid().is_some(),
        "a refused uninstall stopped the agent"
    );
    eventually(
        Duration::from_secs(20),
        "the refusal on the server",
        || async {
            let n = rampart_tests::count_events(&server.admin, "selfprotect.unload-refused").await;
            (n >= 1).then_some(())
        },
    )
    .await;
    let (ok, out) = uninstall(PASSWORD);
    assert!(ok, "{out}");
    assert!(
        rampart_tests::processes_below(agent.root()).is_empty(),
        "processes left after the uninstall: {:?}",
        rampart_tests::processes_below(agent.root())
    );
    for gone in [
        &config,
        &state,
        &agent.root().join("var/lib/rampart/vault"),
        &agent.root().join("var/lib/rampart/quarantine"),
    ] {
        assert!(!gone.exists(), "{} is left: {out}", gone.display());
    }
    // without an agent, nothing is there to check an authorization: uninstall says so
    let (ok, out) = uninstall(PASSWORD);
    assert!(!ok && out.contains("no agent runs"), "{out}");
    agent.stop();
}
