//! The API under bad input: malformed JSON, oversized bodies, wrong credentials, unknown fields
//! and agents get a 4xx with a message, and the server keeps serving.

use rampart_protocol::api;
use rampart_tests::{eventually, StoreKind, TestAgent, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

fn checkin_body() -> Value {
    json!({
        "identity": {"hostname": "h", "os": "o", "kernel": "k", "agent_build": "b"},
        "protections": [],
        "applied_policy_version": null,
        "components": []
    })
}

/// Sends a request; returns status and the error message of the JSON body (if any).
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(text);
    (status, message)
}

#[tokio::test]
async fn bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving() {
    for store in rampart_tests::stores() {
        let server = TestServer::start(store).await;
        let http = client(&server.ca_pem);
        let url = |p: &str| format!("{}{p}", server.url);
        let token = server.enrollment_token("default", 2).await;
        let agent = TestAgent::enroll(&server, &token);
        let cred = agent.credential();
        let bearer = format!("Bearer {cred}");
        let ctx = format!("{store:?}");

        // a good check-in first: 200 with an ETag, then 304 with it
        let resp = http
            .post(url(api::CHECKIN))
            .header("Authorization", &bearer)
            .json(&checkin_body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{ctx}");
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        let resp = http
            .post(url(api::CHECKIN))
            .header("Authorization", &bearer)
            .header("If-None-Match", &etag)
            .json(&checkin_body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{ctx}");
        assert!(resp.bytes().await.unwrap().is_empty());

        // malformed JSON
        let (s, m) = send(
            http.post(url(api::CHECKIN))
                .header("Authorization", &bearer)
                .header("Content-Type", "application/json")
                .body("{\"identity\": "),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ctx}: {m}");
        assert!(m.contains("EOF") || m.contains("parse"), "{ctx}: {m}");
        // unknown field, named
        let mut body = checkin_body();
        body["colour"] = json!("red");
        let (s, m) = send(
            http.post(url(api::CHECKIN))
                .header("Authorization", &bearer)
                .json(&body),
        )
        .await;
        assert!(s.is_client_error(), "{ctx}: {s}");
        assert!(m.contains("unknown field `colour`"), "{ctx}: {m}");
        // not JSON at all
        let (s, m) = send(
            http.post(url(api::CHECKIN))
                .header("Authorization", &bearer)
                .body("hello"),
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ctx}: {m}");
        assert!(m.contains("application/json"), "{ctx}: {m}");
        // oversized bodies
        let big = format!("{{\"x\": \"{}\"}}", "a".repeat(2 << 20));
        let (s, m) = send(
            http.post(url(api::CHECKIN))
                .header("Authorization", &bearer)
                .header("Content-Type", "application/json")
                .body(big),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{ctx}: {m}");
        assert!(m.contains("too large"), "{ctx}: {m}");
        let huge = format!("{{\"events\": [], \"x\": \"{}\"}}", "a".repeat(17 << 20));
        let (s, _) = send(
            http.post(url(api::EVENTS))
                .header("Authorization", &bearer)
                .header("Content-Type", "application/json")
                .body(huge),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{ctx}");
        // too many events in one upload, and a bad kind
        let many: Vec<Value> = (1..=1001)
            .map(|i| json!({"seq": i, "kind": "agent.note", "time_ms": 0, "body": {}}))
            .collect();
        let (s, m) = send(
            http.post(url(api::EVENTS))
                .header("Authorization", &bearer)
                .json(&json!({"events": many})),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{ctx}: {m}");
        assert!(m.contains("at most 1000"), "{ctx}: {m}");
        let bad_kind =
            json!({"events": [{"seq": 1, "kind": "Bad Kind!", "time_ms": 0, "body": {}}]});
        let (s, m) = send(
            http.post(url(api::EVENTS))
                .header("Authorization", &bearer)
                .json(&bad_kind),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ctx}: {m}");
        assert!(m.contains("kind"), "{ctx}: {m}");
        let zero_seq =
            json!({"events": [{"seq": 0, "kind": "agent.note", "time_ms": 0, "body": {}}]});
        let (s, _) = send(
            http.post(url(api::EVENTS))
                .header("Authorization", &bearer)
                .json(&zero_seq),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ctx}");

        // wrong credentials: 401 and nothing else
        let (id, secret) = cred.split_once('.').unwrap();
        let wrong_secret = format!("Bearer {id}.{}", "0".repeat(secret.len()));
        let unknown_agent = format!("Bearer 00000000-0000-4000-8000-000000000000.{secret}");
        for auth in [
            Some(wrong_secret.as_str()),
            Some(unknown_agent.as_str()),
            Some("Bearer nonsense"),
            Some("Basic eDp5"),
            None,
        ] {
            let mut req = http.post(url(api::CHECKIN)).json(&checkin_body());
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{ctx}: {auth:?}");
            assert_eq!(
                resp.text().await.unwrap(),
                r#"{"error":"unauthorized"}"#,
                "{ctx}"
            );
        }
        // an agent credential is no administrator session, and the reverse
        let (s, _) = send(
            http.get(url(api::ADMIN_AGENTS))
                .header("Authorization", &bearer),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{ctx}");
        let (s, _) = send(http.get(url(api::ADMIN_AGENTS))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{ctx}");
        // wrong password and unknown user
        for (u, p) in [("admin", "wrong"), ("nobody", "x")] {
            let (s, m) = send(
                http.post(url(api::ADMIN_LOGIN))
                    .json(&json!({"username": u, "password": p})),
            )
            .await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{ctx}");
            assert_eq!(m, "wrong user name or password");
        }
        // bad enrollment tokens
        let (s, m) = send(
            http.post(url(api::ENROLL))
                .json(&json!({"token": "nodot", "identity": checkin_body()["identity"]})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ctx}: {m}");
        let (s, m) = send(
            http.post(url(api::ENROLL))
                .json(&json!({"token": "00.11", "identity": checkin_body()["identity"]})),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{ctx}: {m}");
        assert!(m.contains("enrollment token"), "{ctx}: {m}");
        // bad administrator input
        let admin_bearer = {
            let (_, login) = server.admin.login("admin", &server.password).await.unwrap();
            format!("Bearer {}", login.token)
        };
        let (s, m) = send(
            http.post(url(api::ADMIN_ENROLLMENT_TOKENS))
                .header("Authorization", &admin_bearer)
                .json(&json!({"group": "default", "expires_in_seconds": 0, "max_uses": 1})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ctx}: {m}");
        assert!(m.contains("expires_in_seconds"), "{ctx}: {m}");
        let (s, m) = send(
            http.post(url(api::ADMIN_GROUPS))
                .header("Authorization", &admin_bearer)
                .json(&json!({"name": "bad name!"})),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ctx}: {m}");
        let (s, m) = send(
            http.post(url(api::ADMIN_GROUPS))
                .header("Authorization", &admin_bearer)
                .json(&json!({"name": "default"})),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{ctx}: {m}");
        let (s, m) = send(
            http.post(url("/api/v1/admin/agents/nope/revoke"))
                .header("Authorization", &admin_bearer),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{ctx}: {m}");
        let (s, m) = send(
            http.get(url("/api/v1/admin/events?limit=minus"))
                .header("Authorization", &admin_bearer),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ctx}: {m}");
        let (s, m) = send(http.get(url("/api/v2/anything"))).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{ctx}");
        assert!(m.contains("/api/v2/anything"), "{ctx}: {m}");

        // and the server still serves: health, a real check-in, the console page
        let health: Value = http
            .get(url(api::HEALTH))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(
            health["store"],
            if store == StoreKind::Sqlite {
                "sqlite"
            } else {
                "postgres"
            }
        );
        let page = http
            .get(url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Rampart console"));
        let mut agent = agent;
        agent.start();
        let id = agent.id.clone();
        eventually(
            std::time::Duration::from_secs(20),
            "agent checks in",
            || async {
                let list = server.admin.agents().await.unwrap();
                list.iter()
                    .any(|a| a.id == id && a.applied_policy_version == Some(1))
                    .then_some(())
            },
        )
        .await;
        agent.stop();
        assert!(
            !server.log().contains("panicked"),
            "{ctx}: {}",
            server.log()
        );
    }
}
