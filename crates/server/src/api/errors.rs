//! Error answers and the extractors that produce them: JSON bodies, agent and administrator
//! authentication.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rampart_protocol::ErrorBody;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::secrets;
use crate::store::{AgentAuthRow, StoreError};

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is wrong, the message says how.
    BadRequest(String),
    /// 401, with nothing said about why.
    Unauthorized,
    /// 404: the named thing does not exist.
    NotFound(String),
    /// 409: it exists already, or conflicts.
    Conflict(String),
    /// Another 4xx status with its message (413, 415, 422 …).
    Status(StatusCode, String),
    /// 500: the server's own fault; details go to the log, not to the client.
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::Status(s, m) => (s, m),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the server log has the details".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

/// Answers paths the API does not have.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such API path: {}", uri.path()))
}

/// A JSON body whose rejection is an [`ApiError`] with the parser's message.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let text = rejection.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::Status(
            status,
            "request body is too large for this endpoint".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Status(
            status,
            "send the body as JSON with `Content-Type: application/json`".to_owned(),
        ),
        _ if status.is_client_error() => ApiError::BadRequest(text),
        _ => ApiError::Internal(text),
    }
}

/// Query parameters whose rejection is an [`ApiError`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(ApiQuery(q.0)),
            Err(e) => Err(ApiError::BadRequest(QueryRejection::body_text(&e))),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// An authenticated, not revoked agent.
pub struct AgentAuth {
    /// The agent's id.
    pub agent_id: String,
    /// Its row: group and current policy version.
    pub row: AgentAuthRow,
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let (id, secret) = credential.split_once('.').ok_or(ApiError::Unauthorized)?;
        if id.len() > 64 || secret.len() > 128 {
            return Err(ApiError::Unauthorized);
        }
        let row = state.store.agent_auth(id).await?;
        match row {
            Some(row) if secrets::secret_matches(secret, &row.credential_hash) && !row.revoked => {
                Ok(AgentAuth {
                    agent_id: id.to_owned(),
                    row,
                })
            }
            _ => Err(ApiError::Unauthorized),
        }
    }
}

/// An administrator with a live session.
pub struct AdminAuth {
    /// The administrator's name.
    pub admin: String,
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if token.len() > 128 {
            return Err(ApiError::Unauthorized);
        }
        match state
            .store
            .session_admin(&secrets::hash_secret(token))
            .await?
        {
            Some(admin) => Ok(AdminAuth { admin }),
            None => Err(ApiError::Unauthorized),
        }
    }
}
