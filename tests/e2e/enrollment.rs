//! Enrollment: tokens, pinned CA, credentials, revocation.

use rampart_tests::{run_cli, stores, TestAgent, TestServer};

/// `rampart agent enroll` below `root`: (success, stdout, stderr).
fn enroll_in(root: &std::path::Path, url: &str, token: &str) -> (bool, String, String) {
    run_cli(
        root,
        &["agent", "enroll", "--server", url, "--token", token],
    )
}

#[tokio::test]
async fn agents_enroll_with_a_token_and_check_in() {
    for store in stores() {
        let server = TestServer::start(store).await;
        let token = server.enrollment_token("default", 2).await;
        let mut a = TestAgent::enroll(&server, &token);
        let b = TestAgent::enroll(&server, &token);
        assert_ne!(a.id, b.id);
        // the token is used up
        let dir = tempfile::tempdir().unwrap();
        let (ok, _, err) = enroll_in(dir.path(), &server.url, &token);
        assert!(!ok && err.contains("used up"), "{store:?}: {err}");
        assert!(!dir.path().join("etc/rampart/agent.toml").exists());

        // the credential is stored 0600 and the server keeps only its hash
        let cred = a.credential();
        let mode = std::fs::metadata(a.root().join("etc/rampart/agent.credential"))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap();
        assert_eq!(mode, 0o600);
        let secret = cred.split_once('.').unwrap().1;
        if let Some(db) = server.database_url() {
            let dump = std::process::Command::new("pg_dump")
                .arg(&db)
                .output()
                .unwrap();
            assert!(
                dump.status.success(),
                "{}",
                String::from_utf8_lossy(&dump.stderr)
            );
            assert!(!String::from_utf8_lossy(&dump.stdout).contains(secret));
        } else {
            let db =
                std::fs::read(server.root().join("var/lib/rampart/server/rampart.db")).unwrap();
            assert!(!String::from_utf8_lossy(&db).contains(secret));
        }

        a.start();
        let agents = rampart_tests::eventually(
            std::time::Duration::from_secs(20),
            "agent's first check-in",
            || async {
                let list = server.admin.agents().await.unwrap();
                list.iter()
                    .any(|x| x.id == a.id && x.last_seen_ms > 0)
                    .then_some(list)
            },
        )
        .await;
        let me = agents.iter().find(|x| x.id == a.id).unwrap();
        assert_eq!(me.group, "default");
        assert!(!me.identity.hostname.is_empty());
        assert!(!me.identity.kernel.is_empty());
        assert_eq!(me.identity.agent_build, env!("CARGO_PKG_VERSION"));
        assert_eq!(me.protections.len(), 3, "{store:?}: {:?}", me.protections);
        a.stop();
    }
}

#[tokio::test]
async fn enrollment_refuses_a_server_whose_ca_is_not_the_one_in_the_token() {
    let server = TestServer::start(rampart_tests::StoreKind::Sqlite).await;
    let token = server.enrollment_token("default", 1).await;
    // same token, other CA fingerprint: as if a machine in the middle answered
    let (head, fp) = token.rsplit_once('.').unwrap();
    let flipped: String = fp
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == '0' {
                    '1'
                } else {
                    '0'
                }
            } else {
                c
            }
        })
        .collect();
    let forged = format!("{head}.{flipped}");
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = enroll_in(dir.path(), &server.url, &forged);
    assert!(!ok);
    assert!(
        err.contains("not the one the enrollment token names"),
        "{err}"
    );
    assert!(!dir.path().join("etc/rampart").exists());
    // the genuine token still works: the refused attempt used nothing
    TestAgent::enroll(&server, &token);
}

#[tokio::test]
async fn a_revoked_agent_is_refused_and_its_events_wait() {
    for store in stores() {
        let server = TestServer::start(store).await;
        let token = server.enrollment_token("default", 1).await;
        let mut agent = TestAgent::enroll(&server, &token);
        agent.start();
        rampart_tests::eventually(
            std::time::Duration::from_secs(20),
            "first events",
            || async {
                let n = server
                    .admin
                    .events(&rampart_protocol::admin::EventsQuery {
                        agent: Some(agent.id.clone()),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .len();
                (n >= 3).then_some(())
            },
        )
        .await;
        server.admin.revoke(&agent.id).await.unwrap();
        agent.note("after revocation", 5);
        rampart_tests::eventually(
            std::time::Duration::from_secs(20),
            "upload refused",
            || async {
                agent
                    .log()
                    .contains("refused this agent's credential")
                    .then_some(())
            },
        )
        .await;
        let notes = server
            .admin
            .events(&rampart_protocol::admin::EventsQuery {
                kind: Some("agent.note".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            notes.is_empty(),
            "{store:?}: a revoked agent's events were stored"
        );
        // nothing is lost on the agent: the notes wait in its outbox
        assert!(agent.status()["outbox_pending"].as_u64().unwrap() >= 5);
        let list = server.admin.agents().await.unwrap();
        assert!(list.iter().find(|a| a.id == agent.id).unwrap().revoked);
        agent.stop();
    }
}
