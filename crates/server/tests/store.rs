//! The store against real engines: an SQLite file and a PostgreSQL server
//! (`RAMPART_TEST_POSTGRES_URL`; `scripts/test-postgres.sh start` gives one). Each test runs the
//! same checks on both.

use rampart_protocol::admin::EventsQuery;
use rampart_protocol::checkin::AgentIdentity;
use rampart_protocol::events::Event;
use rampart_protocol::policy::{Policy, UpdateComponents};
use rampart_server::secrets;
use rampart_server::store::{now_ms, EnrollOutcome, Store, StoreError};
use sqlx::Connection;

/// A fresh, empty store on one engine, removed afterwards.
struct Fresh {
    store: Store,
    name: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl Fresh {
    async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin_url, db)) = self.pg_drop {
            let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

async fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    Fresh {
        store: Store::open(&url).await.unwrap(),
        name: "sqlite",
        _dir: Some(dir),
        pg_drop: None,
    }
}

/// The PostgreSQL test server's URL; in CI its absence is a failure, elsewhere a skip.
fn postgres_url() -> Option<String> {
    match std::env::var("RAMPART_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but RAMPART_TEST_POSTGRES_URL is not set: the PostgreSQL store must be tested")
        }
        _ => {
            eprintln!("skipping PostgreSQL: RAMPART_TEST_POSTGRES_URL is not set (scripts/test-postgres.sh start gives one)");
            None
        }
    }
}

async fn postgres() -> Option<Fresh> {
    let admin_url = postgres_url()?;
    let db = format!("rampart_t_{}", secrets::random_hex(6));
    let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut c)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    let url = format!("{base}/{db}");
    Some(Fresh {
        store: Store::open(&url).await.unwrap(),
        name: "postgres",
        _dir: None,
        pg_drop: Some((admin_url, db)),
    })
}

async fn engines() -> Vec<Fresh> {
    let mut v = vec![sqlite().await];
    v.extend(postgres().await);
    v
}

fn identity(host: &str) -> AgentIdentity {
    AgentIdentity {
        hostname: host.into(),
        os: "Debian".into(),
        kernel: "6.1".into(),
        agent_build: "0.1.0".into(),
    }
}

#[tokio::test]
async fn migrations_apply_once_and_record_their_version() {
    for f in engines().await {
        assert_eq!(f.store.schema_version().await.unwrap(), 1, "{}", f.name);
        f.cleanup().await;
    }
    // reopening an existing store leaves it as it is
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let s = Store::open(&url).await.unwrap();
    s.ensure_default_group().await.unwrap();
    s.close().await;
    let s = Store::open(&url).await.unwrap();
    assert_eq!(s.list_groups().await.unwrap().len(), 1);
}

#[tokio::test]
async fn policies_are_versioned_per_group() {
    for f in engines().await {
        let s = &f.store;
        s.ensure_default_group().await.unwrap();
        s.ensure_default_group().await.unwrap();
        s.create_group("servers", &Policy::default(), "t")
            .await
            .unwrap();
        let dup = s.create_group("servers", &Policy::default(), "t").await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{}", f.name);
        let mut p = Policy::default();
        p.update.components = UpdateComponents::PatternFiles;
        assert_eq!(s.set_policy("servers", &p, "t").await.unwrap(), 2);
        let (v, current) = s.current_policy("servers").await.unwrap();
        assert_eq!((v, &current), (2, &p), "{}", f.name);
        assert_eq!(s.current_policy("default").await.unwrap().0, 1);
        assert!(matches!(
            s.set_policy("nope", &p, "t").await,
            Err(StoreError::NotFound(_))
        ));
        let groups = s.list_groups().await.unwrap();
        assert_eq!(groups.len(), 2, "{}", f.name);
        f.cleanup().await;
    }
}

#[tokio::test]
async fn enrollment_consumes_uses_only_on_success() {
    for f in engines().await {
        let s = &f.store;
        s.ensure_default_group().await.unwrap();
        let gid = s.group_id("default").await.unwrap();
        let secret = secrets::random_hex(32);
        s.create_enrollment_token(
            "t1",
            &gid,
            &secrets::hash_secret(&secret),
            now_ms() + 60_000,
            2,
            "t",
        )
        .await
        .unwrap();
        // wrong secret: refused, use not consumed
        for _ in 0..3 {
            let r = s
                .enroll_agent("t1", "00", "a0", "h", &identity("x"))
                .await
                .unwrap();
            assert_eq!(r, EnrollOutcome::Refused, "{}", f.name);
        }
        for a in ["a1", "a2"] {
            let r = s
                .enroll_agent("t1", &secret, a, &secrets::hash_secret(a), &identity(a))
                .await
                .unwrap();
            assert_eq!(
                r,
                EnrollOutcome::Enrolled {
                    group: "default".into()
                },
                "{}",
                f.name
            );
        }
        // used up
        let r = s
            .enroll_agent("t1", &secret, "a3", "h", &identity("a3"))
            .await
            .unwrap();
        assert_eq!(r, EnrollOutcome::Refused);
        // expired
        s.create_enrollment_token(
            "t2",
            &gid,
            &secrets::hash_secret(&secret),
            now_ms() - 1,
            5,
            "t",
        )
        .await
        .unwrap();
        let r = s
            .enroll_agent("t2", &secret, "a4", "h", &identity("a4"))
            .await
            .unwrap();
        assert_eq!(r, EnrollOutcome::Refused);
        let agents = s.list_agents().await.unwrap();
        assert_eq!(agents.len(), 2, "{}", f.name);
        let auth = s.agent_auth("a1").await.unwrap().unwrap();
        assert!(secrets::secret_matches("a1", &auth.credential_hash));
        s.revoke_agent("a1").await.unwrap();
        assert!(s.agent_auth("a1").await.unwrap().unwrap().revoked);
        assert!(s.agent_auth("a9").await.unwrap().is_none());
        f.cleanup().await;
    }
}

fn event(seq: u64) -> Event {
    Event {
        seq,
        kind: "agent.note".into(),
        time_ms: seq as i64,
        body: serde_json::json!({"text": format!("note {seq}")}),
    }
}

#[tokio::test]
async fn event_ingest_is_idempotent() {
    for f in engines().await {
        let s = &f.store;
        let first: Vec<Event> = (1..=450).map(event).collect();
        assert_eq!(
            s.ingest_events("a", &first, 1).await.unwrap(),
            (450, 0),
            "{}",
            f.name
        );
        // a retried upload overlapping the first
        let retry: Vec<Event> = (400..=600).map(event).collect();
        assert_eq!(
            s.ingest_events("a", &retry, 2).await.unwrap(),
            (150, 51),
            "{}",
            f.name
        );
        // another agent's sequence numbers are its own
        assert_eq!(
            s.ingest_events("b", &first[..10], 3).await.unwrap(),
            (10, 0)
        );
        let all = s
            .list_events(&EventsQuery {
                agent: Some("a".into()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 600, "{}", f.name);
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(all[0].body["text"], "note 1");
        let none = s
            .list_events(&EventsQuery {
                kind: Some("tamper".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
        f.cleanup().await;
    }
}

#[tokio::test]
async fn first_admin_is_created_once_and_sessions_expire() {
    for f in engines().await {
        let s = &f.store;
        assert!(s.create_first_admin("admin", "h1").await.unwrap());
        assert!(!s.create_first_admin("admin", "h2").await.unwrap());
        assert!(!s.create_first_admin("other", "h3").await.unwrap());
        assert_eq!(
            s.admin_password_hash("admin").await.unwrap().as_deref(),
            Some("h1")
        );
        s.create_admin_session("live", "admin", now_ms() + 60_000)
            .await
            .unwrap();
        s.create_admin_session("dead", "admin", now_ms() - 1)
            .await
            .unwrap();
        assert_eq!(
            s.session_admin("live").await.unwrap().as_deref(),
            Some("admin")
        );
        assert_eq!(s.session_admin("dead").await.unwrap(), None);
        s.set_admin_password("admin", "h4").await.unwrap();
        assert_eq!(s.session_admin("live").await.unwrap(), None, "{}", f.name);
        assert_eq!(s.meta_put_if_absent("k", "v1").await.unwrap(), "v1");
        assert_eq!(s.meta_put_if_absent("k", "v2").await.unwrap(), "v1");
        f.cleanup().await;
    }
}
