//! Endpoints agents call: CA download, enrollment, check-in, event upload.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rampart_protocol::checkin::{CheckinRequest, DesiredState, VersionedPolicy};
use rampart_protocol::enroll::{EnrollRequest, EnrollResponse};
use rampart_protocol::events::{EventAck, EventBatch, MAX_BATCH_EVENTS};
use serde_json::json;

use super::errors::{AgentAuth, ApiError, ApiJson};
use super::AppState;
use crate::secrets;
use crate::store::{now_ms, CheckinUpdate, EnrollOutcome};

/// `GET /ca.pem`: the CA certificate agents pin.
pub async fn ca_pem(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca.cert_pem.clone(),
    )
        .into_response()
}

/// `GET /api/v1/health`.
pub async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let schema = state.store.schema_version().await?;
    let protection = state
        .guardian
        .lock()
        .expect("guardian lock")
        .as_ref()
        .map(|g| g.status());
    Ok(Json(json!({
        "status": "ok",
        "self_protection": protection,
        "version": env!("CARGO_PKG_VERSION"),
        "store": format!("{:?}", state.store.backend()).to_lowercase(),
        "schema_version": schema,
    })))
}

/// `POST /api/v1/enroll`: trade an enrollment token for an agent credential.
pub async fn enroll(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let (token_id, token_secret) = req.token.split_once('.').ok_or_else(|| {
        ApiError::BadRequest("`token` must be ID.SECRET from the enrollment token".into())
    })?;
    if token_id.len() > 64 || token_secret.len() > 128 {
        return Err(ApiError::Unauthorized);
    }
    check_identity(&req.identity)?;
    let agent_id = uuid::Uuid::new_v4().to_string();
    let secret = secrets::random_hex(32);
    let outcome = state
        .store
        .enroll_agent(
            token_id,
            token_secret,
            &agent_id,
            &secrets::hash_secret(&secret),
            &req.identity,
        )
        .await?;
    match outcome {
        EnrollOutcome::Enrolled { group } => {
            tracing::info!(%agent_id, %group, hostname = %req.identity.hostname, "agent enrolled");
            Ok(Json(EnrollResponse {
                credential: format!("{agent_id}.{secret}"),
                agent_id,
                group,
                signing_key: rampart_protocol::maintenance::public_key_hex(&state.signing_key),
            }))
        }
        EnrollOutcome::Refused => Err(ApiError::Status(
            StatusCode::UNAUTHORIZED,
            "enrollment token is unknown, expired or used up".into(),
        )),
    }
}

fn check_identity(id: &rampart_protocol::checkin::AgentIdentity) -> Result<(), ApiError> {
    for (field, value) in [
        ("hostname", &id.hostname),
        ("os", &id.os),
        ("kernel", &id.kernel),
        ("agent_build", &id.agent_build),
    ] {
        if value.len() > 256 {
            return Err(ApiError::BadRequest(format!(
                "identity.{field} is longer than 256 bytes"
            )));
        }
    }
    Ok(())
}

/// The ETag of an agent's desired state: it changes when the group's policy changes.
fn desired_etag(group_id: &str, policy_version: u64) -> String {
    format!("\"{group_id}.p{policy_version}\"")
}

/// `POST /api/v1/agent/checkin`: record the report; answer 304 when the agent's desired state
/// (named by `If-None-Match`) is current, else the desired state with its ETag.
pub async fn checkin(
    State(state): State<AppState>,
    auth: AgentAuth,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CheckinRequest>,
) -> Result<Response, ApiError> {
    let Ok(_permit) = state.checkins_in_flight.clone().try_acquire_owned() else {
        let mut busy = ApiError::Status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy; check in again later".into(),
        )
        .into_response();
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(busy);
    };
    check_identity(&req.identity)?;
    if req.protections.len() > 64 || req.components.len() > 64 {
        return Err(ApiError::BadRequest(
            "at most 64 protections and 64 components per check-in".into(),
        ));
    }
    state.checkins.record(
        &auth.agent_id,
        CheckinUpdate {
            now_ms: now_ms(),
            identity: req.identity,
            protections: req.protections,
            components: req.components,
            applied_policy_version: req.applied_policy_version,
        },
    );
    let row = &auth.row;
    let etag = desired_etag(&row.group_id, row.policy_version);
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if current {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let policy = state.policy(&row.group_id, row.policy_version).await?;
    let desired = DesiredState {
        group: row.group_name.clone(),
        policy: VersionedPolicy {
            version: row.policy_version,
            policy: (*policy).clone(),
        },
        components: Vec::new(),
    };
    let mut response = Json(desired).into_response();
    response.headers_mut().insert(
        header::ETAG,
        HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// `POST /api/v1/agent/events`: store a batch from the agent's outbox, idempotently.
pub async fn events(
    State(state): State<AppState>,
    auth: AgentAuth,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<Json<EventAck>, ApiError> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} events in one upload; at most {MAX_BATCH_EVENTS}",
                batch.events.len()
            ),
        ));
    }
    for event in &batch.events {
        event.check().map_err(ApiError::BadRequest)?;
    }
    let (accepted, duplicates) = state
        .store
        .ingest_events(&auth.agent_id, &batch.events, now_ms())
        .await?;
    Ok(Json(EventAck {
        accepted,
        duplicates,
    }))
}
