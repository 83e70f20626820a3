//! Policies: validated before they are stored, versioned, applied by every agent of the group
//! within one check-in interval.

use std::time::{Duration, Instant};

use rampart_protocol::admin::EventsQuery;
use rampart_protocol::policy::UpdateComponents;
use rampart_tests::{eventually, run_cli, stores, TestAgent, TestServer};
use serde_json::json;

const INTERVAL: u64 = 3;

#[tokio::test]
async fn two_agents_apply_a_policy_change_within_one_interval() {
    for store in stores() {
        let server = TestServer::start(store).await;
        server
            .admin
            .create_group(
                "fleet",
                Some(json!({"checkin": {"interval_seconds": INTERVAL}})),
            )
            .await
            .unwrap();
        let token = server.enrollment_token("fleet", 2).await;
        let mut agents = [
            TestAgent::enroll(&server, &token),
            TestAgent::enroll(&server, &token),
        ];
        for a in agents.iter_mut() {
            a.start();
        }
        let applied = |version: u64| {
            let server = &server;
            async move {
                let list = server.admin.agents().await.unwrap();
                (list.len() == 2
                    && list
                        .iter()
                        .all(|a| a.applied_policy_version == Some(version)))
                .then_some(())
            }
        };
        eventually(Duration::from_secs(20), "both agents on policy 1", || {
            applied(1)
        })
        .await;

        let changed = server
            .admin
            .set_policy(
                "fleet",
                json!({"checkin": {"interval_seconds": INTERVAL}, "update": {"components": "pattern-files"}})
                    .to_string(),
            )
            .await
            .unwrap();
        assert_eq!(changed.version, 2);
        let t0 = Instant::now();
        eventually(Duration::from_secs(30), "both agents on policy 2", || {
            applied(2)
        })
        .await;
        let took = t0.elapsed();
        // one interval with its +10 % jitter, plus a second for the round trips
        let limit = Duration::from_secs_f64(INTERVAL as f64 * 1.1 + 1.0);
        assert!(
            took <= limit,
            "{store:?}: policy applied after {took:?}, more than one interval"
        );

        for a in &agents {
            let status = a.status();
            assert_eq!(status["applied_policy_version"], 2, "{store:?}");
            let saved: serde_json::Value = serde_json::from_slice(
                &std::fs::read(a.root().join("var/lib/rampart/agent/desired-state.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                saved["desired"]["policy"]["policy"]["update"]["components"],
                "pattern-files"
            );
        }
        // each agent reported the application as an event
        let applied_events =
            eventually(Duration::from_secs(15), "policy.applied events", || async {
                let e = server
                    .admin
                    .events(&EventsQuery {
                        kind: Some("policy.applied".into()),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                (e.iter().filter(|e| e.body["version"] == 2).count() == 2).then_some(e)
            })
            .await;
        assert_eq!(
            applied_events
                .iter()
                .filter(|e| e.body["version"] == 1)
                .count(),
            2
        );
        for a in agents.iter_mut() {
            a.stop();
        }
    }
}

#[tokio::test]
async fn a_bad_policy_is_refused_with_the_key_named_and_nothing_changes() {
    for store in stores() {
        let server = TestServer::start(store).await;
        let before = server.admin.policy("default").await.unwrap();
        for (body, expect) in [
            (r#"{"update": {"component": "all"}}"#, "update.component"),
            (
                r#"{"update": {"components": "everything"}}"#,
                "pattern-files",
            ),
            (
                r#"{"checkin": {"interval_seconds": 0}}"#,
                "checkin.interval_seconds",
            ),
            (r#"{"checkin": "#, "not valid JSON"),
            (r#"[]"#, "JSON object"),
        ] {
            let err = server
                .admin
                .set_policy("default", body.to_owned())
                .await
                .unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains("422") || text.contains("400"),
                "{store:?} {body}: {text}"
            );
            assert!(text.contains(expect), "{store:?} {body}: {text}");
        }
        let after = server.admin.policy("default").await.unwrap();
        assert_eq!(
            before, after,
            "{store:?}: a refused policy changed what was stored"
        );
        let err = server
            .admin
            .set_policy("no-such-group", "{}".into())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("404"), "{err:#}");
    }
}

#[tokio::test]
async fn legacy_self_protection_switches_are_accepted_ignored_and_never_stored() {
    for store in stores() {
        let server = TestServer::start(store).await;
        let legacy = json!({
            "protect_services": false,
            "ProtectInstallFiles": false,
            "self_protection": {"protectConfig": false, "protect-processes": "off"},
            "update": {"components": "pattern-files"}
        });
        let view = server
            .admin
            .set_policy("default", legacy.to_string())
            .await
            .unwrap();
        assert_eq!(view.warnings.len(), 4, "{store:?}: {:?}", view.warnings);
        assert!(view.warnings.iter().all(|w| w.contains("always on")));
        let stored = server.admin.policy("default").await.unwrap();
        assert_eq!(
            stored.policy.update.components,
            UpdateComponents::PatternFiles
        );
        let text = serde_json::to_string(&stored.policy)
            .unwrap()
            .to_lowercase();
        assert!(!text.contains("protect"), "{store:?}: {text}");
    }
}

#[tokio::test]
async fn the_cli_shows_sets_and_validates_policies() {
    let server = TestServer::start(rampart_tests::StoreKind::Sqlite).await;
    let cli_root = tempfile::tempdir().unwrap();
    let ca = cli_root.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let out = std::process::Command::new(rampart_tests::rampart_bin())
        .arg("--root")
        .arg(cli_root.path())
        .args(["login", "--server", &server.url, "--ca"])
        .arg(&ca)
        .env("RAMPART_PASSWORD", &server.password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = cli_root.path().join("policy.toml");
    std::fs::write(
        &file,
        "protect_services = false\n[update]\ncomponents = \"pattern-files\"\n",
    )
    .unwrap();
    let (ok, out, err) = run_cli(cli_root.path(), &["policy", "set", file.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("version 2"), "{out}");
    assert!(err.contains("warning: `protect_services` ignored"), "{err}");
    let (ok, out, _) = run_cli(cli_root.path(), &["policy", "show"]);
    assert!(ok);
    assert!(out.contains("components = \"pattern-files\""), "{out}");
    std::fs::write(&file, "[update]\ncolour = 1\n").unwrap();
    let (ok, _, err) = run_cli(cli_root.path(), &["policy", "set", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("unknown policy key `update.colour`"), "{err}");
    // a wrong session token gives the documented exit code 3
    let session = cli_root
        .path()
        .join("var/lib/rampart/cli/admin-session.json");
    let mut s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    s["token"] = json!("0".repeat(64));
    std::fs::write(&session, s.to_string()).unwrap();
    let out = std::process::Command::new(rampart_tests::rampart_bin())
        .arg("--root")
        .arg(cli_root.path())
        .args(["policy", "show"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
