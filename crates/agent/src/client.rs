//! The agent's HTTPS client for the management server. It trusts exactly one CA: the one it
//! pinned at enrollment, whose fingerprint came with the enrollment token.

use std::time::Duration;

use rampart_protocol::api;
use rampart_protocol::checkin::{CheckinRequest, DesiredState};
use rampart_protocol::enroll::{EnrollRequest, EnrollResponse, EnrollmentToken};
use rampart_protocol::events::{EventAck, EventBatch};
use rampart_protocol::ErrorBody;
use reqwest::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused our credential: the agent is revoked or unknown.
    #[error("the server refused this agent's credential (revoked or unknown agent)")]
    Unauthorized,
    /// The server answered with an error.
    #[error("server answered {status}: {message}")]
    Server {
        /// HTTP status.
        status: StatusCode,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached, or the connection failed.
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    /// The CA the server presents is not the one the enrollment token names.
    #[error("the server's CA (sha256 {found}) is not the one the enrollment token names (sha256 {expected}); refusing to enroll")]
    CaMismatch {
        /// Fingerprint in the token.
        expected: String,
        /// Fingerprint served.
        found: String,
    },
    /// The CA certificate could not be read.
    #[error("unreadable CA certificate: {0}")]
    BadCa(String),
}

/// The answer to a check-in.
#[derive(Debug)]
pub enum CheckinAnswer {
    /// The agent's desired state is current.
    NotModified,
    /// A new desired state, with its ETag.
    Changed(Box<DesiredState>, String),
}

/// A client that trusts only the pinned CA.
#[derive(Clone, Debug)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
    credential: Option<String>,
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .tls_built_in_root_certs(false)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
}

/// SHA-256 of the first certificate of `pem`, hex.
pub fn ca_fingerprint(pem: &str) -> Result<String, ClientError> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| ClientError::BadCa("no certificate in PEM".into()))?
        .map_err(|e| ClientError::BadCa(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

async fn error_from(resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        return ClientError::Unauthorized;
    }
    let message = match resp.json::<ErrorBody>().await {
        Ok(body) => body.error,
        Err(_) => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    ClientError::Server { status, message }
}

impl ServerClient {
    /// A client for `base` (`https://host:port`) trusting only `ca_pem`, authenticating with
    /// `credential` when given.
    pub fn new(base: &str, ca_pem: &str, credential: Option<String>) -> Result<Self, ClientError> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
            .map_err(|e| ClientError::BadCa(e.to_string()))?;
        Ok(ServerClient {
            http: builder().add_root_certificate(ca).build()?,
            base: base.trim_end_matches('/').to_owned(),
            credential,
        })
    }

    /// Downloads the server's CA and checks it against the fingerprint in `token`, in constant
    /// time. The download itself is not trusted: only the fingerprint match makes it so.
    pub async fn fetch_pinned_ca(
        base: &str,
        token: &EnrollmentToken,
    ) -> Result<String, ClientError> {
        let http = builder().danger_accept_invalid_certs(true).build()?;
        let url = format!("{}{}", base.trim_end_matches('/'), api::CA_PEM);
        let resp = http.get(url).send().await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        let pem = resp.text().await?;
        let found = ca_fingerprint(&pem)?;
        if !bool::from(found.as_bytes().ct_eq(token.ca_sha256.as_bytes())) {
            return Err(ClientError::CaMismatch {
                expected: token.ca_sha256.clone(),
                found,
            });
        }
        Ok(pem)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(c) => req.header(AUTHORIZATION, format!("Bearer {c}")),
            None => req,
        }
    }

    /// Enrolls with the token's id and secret.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        let resp = self
            .http
            .post(self.url(api::ENROLL))
            .json(req)
            .send()
            .await?;
        if !resp.status().is_success() {
            // 401 here means a bad token, not a bad agent credential
            let status = resp.status();
            let message = match resp.json::<ErrorBody>().await {
                Ok(b) => b.error,
                Err(_) => status.to_string(),
            };
            return Err(ClientError::Server { status, message });
        }
        Ok(resp.json().await?)
    }

    /// Checks in; `etag` is the ETag of the desired state the agent has.
    pub async fn checkin(
        &self,
        req: &CheckinRequest,
        etag: Option<&str>,
    ) -> Result<CheckinAnswer, ClientError> {
        let mut builder = self
            .authorized(self.http.post(self.url(api::CHECKIN)))
            .json(req);
        if let Some(tag) = etag {
            builder = builder.header(IF_NONE_MATCH, tag);
        }
        let resp = builder.send().await?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(CheckinAnswer::NotModified),
            s if s.is_success() => {
                let tag = resp
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                Ok(CheckinAnswer::Changed(Box::new(resp.json().await?), tag))
            }
            _ => Err(error_from(resp).await),
        }
    }

    /// Uploads a batch of events.
    pub async fn upload(&self, batch: &EventBatch) -> Result<EventAck, ClientError> {
        let resp = self
            .authorized(self.http.post(self.url(api::EVENTS)))
            .json(batch)
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        Ok(resp.json().await?)
    }
}
