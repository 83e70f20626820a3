//! Several stateless server replicas on one PostgreSQL database.

use std::time::Duration;

use rampart_tests::{eventually, postgres_admin_url, TestAgent, TestServer};
use serde_json::json;

#[tokio::test]
async fn two_replicas_on_one_postgres_serve_the_same_fleet() {
    if postgres_admin_url().is_none() {
        return;
    }
    let a = TestServer::start(rampart_tests::StoreKind::Postgres).await;
    let b = TestServer::start_on(a.database_url(), None).await;
    // one CA for the whole deployment: an agent pinned to one trusts the other
    assert_eq!(a.ca_pem, b.ca_pem);
    assert!(
        b.password.is_empty(),
        "the second replica must not create another administrator"
    );
    let (b_admin, _) = b.admin.login("admin", &a.password).await.unwrap();

    let token = a.enrollment_token("default", 1).await;
    let mut agent = TestAgent::enroll(&a, &token);
    agent.start();
    agent.note("via replica a", 10);
    eventually(
        Duration::from_secs(20),
        "replica b sees the agent's events",
        || async {
            let n = rampart_tests::count_events(&b_admin, "agent.note").await;
            (n == 10).then_some(())
        },
    )
    .await;
    // a policy set through replica b reaches the agent talking to replica a
    b_admin
        .set_policy(
            "default",
            json!({"checkin": {"interval_seconds": 1}}).to_string(),
        )
        .await
        .unwrap();
    // the agent checks in at the old 60 s interval once more; restart it to check in now
    agent.stop();
    agent.start();
    eventually(Duration::from_secs(20), "policy 2 applied", || async {
        let list = a.admin.agents().await.unwrap();
        (list[0].applied_policy_version == Some(2)).then_some(())
    })
    .await;
    agent.stop();
}
