//! Events are never lost and never duplicated: through a server crash in the middle of an
//! upload, and through an outage while agents keep producing events.

use std::collections::BTreeMap;
use std::time::Duration;

use rampart_cli::admin_client::AdminClient;
use rampart_protocol::admin::{EventRecord, EventsQuery};
use rampart_tests::{eventually, stores, TestAgent, TestServer};

async fn events_of(admin: &AdminClient, agent: &str) -> Vec<EventRecord> {
    admin
        .all_events(&EventsQuery {
            agent: Some(agent.to_owned()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Asserts an agent's stored events: sequence numbers 1..=n without gaps (each once, by the
/// store's key), and every note `text` #0..count exactly once.
fn assert_exactly_once(events: &[EventRecord], notes: &[(&str, u32)], context: &str) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            i as u64 + 1,
            "{context}: sequence gap or duplicate at {i}"
        );
    }
    for (text, count) in notes {
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.kind == "agent.note" && e.body["text"] == *text)
        {
            *seen
                .entry(e.body["index"].as_u64().unwrap_or(0))
                .or_default() += 1;
        }
        assert_eq!(
            seen.len() as u32,
            *count,
            "{context}: notes {text:?} missing"
        );
        assert!(
            seen.values().all(|n| *n == 1),
            "{context}: notes {text:?} duplicated"
        );
        assert_eq!(seen.keys().last().copied(), Some(u64::from(*count - 1)));
    }
}

#[tokio::test]
async fn a_server_killed_in_the_middle_of_an_upload_loses_and_duplicates_nothing() {
    const NOTES: u32 = 30_000;
    for store in stores() {
        let mut server = TestServer::start(store).await;
        let token = server.enrollment_token("default", 1).await;
        let mut agent = TestAgent::enroll(&server, &token);
        // a backlog that takes many uploads of 500
        agent.note("backlog", NOTES);
        agent.start();
        let admin = server.admin.clone();
        let id = agent.id.clone();
        let mut kills = 0;
        let mut stored_before = 0;
        // kill -9 twice while uploads are under way: each time once more has arrived since
        for _ in 0..2 {
            let stored = eventually(Duration::from_secs(60), "uploads under way", || async {
                let n = events_of(&admin, &id).await.len() as u32;
                (n > stored_before).then_some(n)
            })
            .await;
            if stored >= NOTES {
                break;
            }
            server.kill9();
            kills += 1;
            stored_before = stored;
            tokio::time::sleep(Duration::from_millis(700)).await;
            server.restart();
        }
        assert!(
            kills >= 1,
            "{store:?}: the upload finished before the server could be killed"
        );
        eventually(
            Duration::from_secs(120),
            "every event delivered",
            || async {
                let e = events_of(&admin, &id).await;
                (e.iter().filter(|e| e.kind == "agent.note").count() as u32 >= NOTES).then_some(())
            },
        )
        .await;
        // let the events written after the backlog (agent.started, …) and any retry land
        tokio::time::sleep(Duration::from_secs(2)).await;
        let events = events_of(&admin, &id).await;
        assert_exactly_once(&events, &[("backlog", NOTES)], &format!("{store:?}"));
        assert_eq!(agent.status()["outbox_pending"], 0);
        agent.stop();
    }
}

#[tokio::test]
async fn events_produced_while_the_server_is_down_arrive_exactly_once_after_it_returns() {
    for store in stores() {
        let mut server = TestServer::start(store).await;
        let token = server.enrollment_token("default", 2).await;
        // while the server is away, an operator stops an agent with the policy's unload password
        let password = "outage unload password";
        server
            .admin
            .set_policy(
                "default",
                serde_json::json!({"unload": {"password": password}}).to_string(),
            )
            .await
            .unwrap();
        let mut a = TestAgent::enroll(&server, &token);
        let mut b = TestAgent::enroll(&server, &token);
        a.unload_password = Some(password.to_owned());
        a.start();
        b.start();
        let admin = server.admin.clone();
        for agent in [&a, &b] {
            eventually(
                Duration::from_secs(20),
                "agent online with the policy",
                || async {
                    let events = events_of(&admin, &agent.id).await;
                    (events.len() >= 3 && events.iter().any(|e| e.kind == "policy.applied"))
                        .then_some(())
                },
            )
            .await;
        }
        server.stop();
        // the agents keep producing events while the server is away
        a.note("outage-1", 250);
        b.note("outage-1", 250);
        tokio::time::sleep(Duration::from_secs(2)).await;
        a.stop(); // agent.stopped while the server is down
        a.note("outage-2", 100);
        a.start(); // agent.started, protection.status
        b.note("outage-2", 100);
        tokio::time::sleep(Duration::from_secs(3)).await;
        for agent in [&a, &b] {
            assert!(
                agent.status()["outbox_pending"].as_u64().unwrap() >= 350,
                "{store:?}: events should wait in the outbox while the server is down"
            );
        }
        server.restart();
        for agent in [&a, &b] {
            let events = eventually(Duration::from_secs(60), "outbox drained", || async {
                let e = events_of(&admin, &agent.id).await;
                (e.iter().filter(|e| e.kind == "agent.note").count() >= 350).then_some(e)
            })
            .await;
            assert_exactly_once(
                &events,
                &[("outage-1", 250), ("outage-2", 100)],
                &format!("{store:?} agent {}", agent.id),
            );
        }
        let a_events = events_of(&admin, &a.id).await;
        let count = |kind: &str| a_events.iter().filter(|e| e.kind == kind).count();
        assert_eq!(count("agent.started"), 2, "{store:?}");
        assert_eq!(count("agent.stopped"), 1, "{store:?}");
        a.stop();
        b.stop();
    }
}
