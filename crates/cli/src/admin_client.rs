//! A client for the server's administrator API, and the CLI's saved session.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rampart_protocol::admin::{
    AgentInfo, CreateEnrollmentTokenRequest, CreateGroupRequest, EnrollmentTokenCreated,
    EventRecord, EventsQuery, GroupInfo, LoginRequest, LoginResponse, PolicyView,
};
use rampart_protocol::{api, ErrorBody};
use serde::{Deserialize, Serialize};

/// A logged-in administrator's session, saved by `rampart login` (mode 0600).
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The server, `https://host:port`.
    pub server_url: String,
    /// The server's CA, PEM.
    pub ca_pem: String,
    /// The session token.
    pub token: String,
}

impl Session {
    /// Where the CLI keeps the session below root prefix `root`.
    pub fn path(root: &Path) -> PathBuf {
        root.join("var/lib/rampart/cli/admin-session.json")
    }

    /// Reads the saved session.
    pub fn load(root: &Path) -> Result<Session> {
        let path = Self::path(root);
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "no administrator session at {} — log in first: rampart login --server URL",
                path.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// Saves the session, readable by its owner only.
    pub fn save(&self, root: &Path) -> Result<()> {
        rampart_agent::write_atomic(&Self::path(root), &serde_json::to_vec_pretty(self)?, 0o600)?;
        Ok(())
    }
}

/// The administrator API client.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The error of a failed API call: the HTTP status and the server's message.
#[derive(Debug)]
pub struct HttpError {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// The server's message.
    pub message: String,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server answered {}: {}", self.status, self.message)
    }
}

impl std::error::Error for HttpError {}

impl AdminClient {
    /// A client for `server_url` trusting only `ca_pem`.
    pub fn new(server_url: &str, ca_pem: &str, token: Option<String>) -> Result<AdminClient> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(AdminClient {
            http,
            base: server_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// A client for a saved session.
    pub fn from_session(session: &Session) -> Result<AdminClient> {
        Self::new(
            &session.server_url,
            &session.ca_pem,
            Some(session.token.clone()),
        )
    }

    /// The server URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The session token, when logged in.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let message = match resp.json::<ErrorBody>().await {
                Ok(b) => b.error,
                Err(_) => status.canonical_reason().unwrap_or("error").to_owned(),
            };
            return Err(HttpError { status, message }.into());
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(serde_json::from_str("null")?);
        }
        Ok(resp.json().await?)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Logs in; the returned client carries the session token.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(AdminClient, LoginResponse)> {
        let r: LoginResponse = self
            .send(
                self.http
                    .post(self.url(api::ADMIN_LOGIN))
                    .json(&LoginRequest {
                        username: username.to_owned(),
                        password: password.to_owned(),
                    }),
            )
            .await?;
        let mut c = self.clone();
        c.token = Some(r.token.clone());
        Ok((c, r))
    }

    /// Groups.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>> {
        self.send(self.http.get(self.url(api::ADMIN_GROUPS))).await
    }

    /// Creates a group, with an optional initial policy.
    pub async fn create_group(
        &self,
        name: &str,
        policy: Option<serde_json::Value>,
    ) -> Result<PolicyView> {
        self.send(
            self.http
                .post(self.url(api::ADMIN_GROUPS))
                .json(&CreateGroupRequest {
                    name: name.to_owned(),
                    policy,
                }),
        )
        .await
    }

    /// A group's policy.
    pub async fn policy(&self, group: &str) -> Result<PolicyView> {
        self.send(
            self.http
                .get(self.url(&api::path(api::ADMIN_GROUP_POLICY, "group", group))),
        )
        .await
    }

    /// Replaces a group's policy with `policy_json` (validated by the server).
    pub async fn set_policy(&self, group: &str, policy_json: String) -> Result<PolicyView> {
        self.send(
            self.http
                .put(self.url(&api::path(api::ADMIN_GROUP_POLICY, "group", group)))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(policy_json),
        )
        .await
    }

    /// Creates an enrollment token.
    pub async fn create_enrollment_token(
        &self,
        group: &str,
        expires_in_seconds: u64,
        max_uses: u64,
    ) -> Result<EnrollmentTokenCreated> {
        self.send(self.http.post(self.url(api::ADMIN_ENROLLMENT_TOKENS)).json(
            &CreateEnrollmentTokenRequest {
                group: group.to_owned(),
                expires_in_seconds,
                max_uses,
            },
        ))
        .await
    }

    /// Agents.
    pub async fn agents(&self) -> Result<Vec<AgentInfo>> {
        self.send(self.http.get(self.url(api::ADMIN_AGENTS))).await
    }

    /// Revokes an agent.
    pub async fn revoke(&self, id: &str) -> Result<()> {
        self.send(
            self.http
                .post(self.url(&api::path(api::ADMIN_AGENT_REVOKE, "id", id))),
        )
        .await
    }

    /// A one-time maintenance token that lifts self-protection on agent `id`.
    pub async fn maintenance_token(
        &self,
        id: &str,
        valid_seconds: u64,
    ) -> Result<rampart_protocol::admin::MaintenanceToken> {
        self.send(
            self.http
                .post(self.url(&api::path(api::ADMIN_AGENT_MAINTENANCE_TOKEN, "id", id)))
                .json(&rampart_protocol::admin::MaintenanceTokenRequest {
                    valid_seconds: Some(valid_seconds),
                }),
        )
        .await
    }

    /// Lifts the server's own self-protection for a while.
    pub async fn unload_server(&self) -> Result<serde_json::Value> {
        self.send(self.http.post(self.url(api::ADMIN_SERVER_UNLOAD)))
            .await
    }

    /// Events matching `q`.
    pub async fn events(&self, q: &EventsQuery) -> Result<Vec<EventRecord>> {
        self.send(self.http.get(self.url(api::ADMIN_EVENTS)).query(q))
            .await
    }

    /// Every event matching `q`, page by page.
    pub async fn all_events(&self, q: &EventsQuery) -> Result<Vec<EventRecord>> {
        let mut out = Vec::new();
        loop {
            let page = self
                .events(&EventsQuery {
                    offset: Some(out.len() as u64),
                    limit: Some(10_000),
                    ..q.clone()
                })
                .await?;
            let n = page.len();
            out.extend(page);
            if n < 10_000 {
                return Ok(out);
            }
        }
    }

    /// Server health.
    pub async fn health(&self) -> Result<serde_json::Value> {
        self.send(self.http.get(self.url(api::HEALTH))).await
    }
}

/// Refuses `url` unless it is an https URL.
pub fn check_server_url(url: &str) -> Result<()> {
    if !url.starts_with("https://") {
        bail!("the server URL must start with https:// (got {url:?})");
    }
    Ok(())
}
