//! Endpoints for administrators: login, groups, policies, enrollment tokens, agents, events.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rampart_protocol::admin::{
    AgentInfo, CreateEnrollmentTokenRequest, CreateGroupRequest, EnrollmentTokenCreated,
    EventRecord, EventsQuery, GroupInfo, LoginRequest, LoginResponse, MaintenanceToken,
    MaintenanceTokenRequest, PolicyView,
};
use rampart_protocol::enroll::EnrollmentToken;
use rampart_protocol::policy::{Policy, PolicyError};

use super::errors::{AdminAuth, ApiError, ApiJson, ApiQuery};
use super::AppState;
use crate::secrets;
use crate::store::now_ms;

/// How long an administrator session lasts.
const SESSION_MS: i64 = 12 * 3600 * 1000;

/// `POST /api/v1/admin/login`.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    if req.username.len() > 128 || req.password.len() > 1024 {
        return Err(ApiError::BadRequest(
            "user name or password is too long".into(),
        ));
    }
    let stored = state.store.admin_password_hash(&req.username).await?;
    let known = stored.is_some();
    let phc = stored.unwrap_or_else(|| secrets::decoy_password_hash().to_owned());
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || secrets::password_matches(&password, &phc))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !(ok && known) {
        tracing::warn!(user = %req.username, "administrator login refused");
        return Err(ApiError::Status(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password".into(),
        ));
    }
    let token = secrets::random_hex(32);
    let expires_at_ms = now_ms() + SESSION_MS;
    state
        .store
        .create_admin_session(&secrets::hash_secret(&token), &req.username, expires_at_ms)
        .await?;
    tracing::info!(user = %req.username, "administrator logged in");
    Ok(Json(LoginResponse {
        token,
        expires_at_ms,
    }))
}

/// `GET /api/v1/admin/groups`.
pub async fn list_groups(
    State(state): State<AppState>,
    _admin: AdminAuth,
) -> Result<Json<Vec<GroupInfo>>, ApiError> {
    Ok(Json(state.store.list_groups().await?))
}

fn check_group_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "group name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Replaces a new unload password by its argon2 hash: the plain password is never stored.
async fn seal_unload_password(policy: &mut Policy) -> Result<(), ApiError> {
    if let Some(password) = policy.unload.password.take() {
        let hash = tokio::task::spawn_blocking(move || secrets::hash_password(&password))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        policy.unload.password_hash = Some(hash);
    }
    Ok(())
}

fn policy_error(e: PolicyError) -> ApiError {
    ApiError::Status(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

/// `POST /api/v1/admin/groups`.
pub async fn create_group(
    State(state): State<AppState>,
    admin: AdminAuth,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    check_group_name(&req.name)?;
    let mut parsed = match req.policy {
        Some(value) => Policy::parse_value(value).map_err(policy_error)?,
        None => Policy::parse_json("{}").map_err(policy_error)?,
    };
    seal_unload_password(&mut parsed.policy).await?;
    state
        .store
        .create_group(&req.name, &parsed.policy, &admin.admin)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(PolicyView {
            group: req.name,
            version: 1,
            policy: parsed.policy,
            warnings: parsed.warnings,
        }),
    ))
}

/// `GET /api/v1/admin/groups/{group}/policy`.
pub async fn get_policy(
    State(state): State<AppState>,
    _admin: AdminAuth,
    Path(group): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    let (version, policy) = state.store.current_policy(&group).await?;
    Ok(Json(PolicyView {
        group,
        version,
        policy,
        warnings: Vec::new(),
    }))
}

/// `PUT /api/v1/admin/groups/{group}/policy`: the body is the policy itself. It is validated
/// before anything is stored; a refused policy leaves the current one in force.
pub async fn put_policy(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<PolicyView>, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("policy is not UTF-8 text".into()))?;
    let mut parsed = Policy::parse_json(text).map_err(policy_error)?;
    seal_unload_password(&mut parsed.policy).await?;
    for warning in &parsed.warnings {
        tracing::warn!(%group, "policy: {warning}");
    }
    let version = state
        .store
        .set_policy(&group, &parsed.policy, &admin.admin)
        .await?;
    tracing::info!(%group, version, admin = %admin.admin, "policy changed");
    Ok(Json(PolicyView {
        group,
        version,
        policy: parsed.policy,
        warnings: parsed.warnings,
    }))
}

/// `POST /api/v1/admin/enrollment-tokens`.
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    admin: AdminAuth,
    ApiJson(req): ApiJson<CreateEnrollmentTokenRequest>,
) -> Result<(StatusCode, Json<EnrollmentTokenCreated>), ApiError> {
    if !(1..=31_536_000).contains(&req.expires_in_seconds) {
        return Err(ApiError::BadRequest(
            "expires_in_seconds must be between 1 and 31536000 (one year)".into(),
        ));
    }
    if !(1..=1_000_000).contains(&req.max_uses) {
        return Err(ApiError::BadRequest(
            "max_uses must be between 1 and 1000000".into(),
        ));
    }
    let group_id = state.store.group_id(&req.group).await?;
    let token = EnrollmentToken {
        id: secrets::random_hex(8),
        secret: secrets::random_hex(32),
        ca_sha256: state.ca_fingerprint.to_string(),
    };
    let expires_at_ms = now_ms() + req.expires_in_seconds as i64 * 1000;
    state
        .store
        .create_enrollment_token(
            &token.id,
            &group_id,
            &secrets::hash_secret(&token.secret),
            expires_at_ms,
            req.max_uses,
            &admin.admin,
        )
        .await?;
    tracing::info!(group = %req.group, id = %token.id, max_uses = req.max_uses, "enrollment token created");
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentTokenCreated {
            token: token.to_string(),
            expires_at_ms,
            max_uses: req.max_uses,
        }),
    ))
}

/// `GET /api/v1/admin/agents`.
pub async fn list_agents(
    State(state): State<AppState>,
    _admin: AdminAuth,
) -> Result<Json<Vec<AgentInfo>>, ApiError> {
    Ok(Json(state.store.list_agents().await?))
}

/// `POST /api/v1/admin/agents/{id}/revoke`.
pub async fn revoke_agent(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.store.revoke_agent(&id).await?;
    tracing::info!(agent_id = %id, admin = %admin.admin, "agent revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/admin/events?agent=&kind=&offset=&limit=`.
pub async fn list_events(
    State(state): State<AppState>,
    _admin: AdminAuth,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<EventRecord>>, ApiError> {
    Ok(Json(state.store.list_events(&query).await?))
}

/// `POST /api/v1/admin/agents/{id}/maintenance-token`: a one-time token, signed by the server,
/// that lifts self-protection on that agent.
pub async fn maintenance_token(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MaintenanceTokenRequest>,
) -> Result<(StatusCode, Json<MaintenanceToken>), ApiError> {
    let valid = req.valid_seconds.unwrap_or(3600);
    if !(60..=86_400).contains(&valid) {
        return Err(ApiError::BadRequest(
            "valid_seconds must be between 60 and 86400".into(),
        ));
    }
    // a revoked agent gets one too: revoking it is how a host is retired, and uninstalling it
    // afterwards needs its self-protection lifted
    if state.store.agent_auth(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("agent {id:?} not found")));
    }
    let now = now_ms();
    let claims = rampart_protocol::maintenance::MaintenanceClaims {
        agent_id: id.clone(),
        nonce: secrets::random_hex(16),
        issued_ms: now,
        expires_ms: now + valid as i64 * 1000,
        issued_by: admin.admin.clone(),
    };
    let token = rampart_protocol::maintenance::issue(&state.signing_key, &claims);
    tracing::warn!(agent_id = %id, admin = %admin.admin, "maintenance token issued");
    Ok((
        StatusCode::CREATED,
        Json(MaintenanceToken {
            token,
            expires_at_ms: claims.expires_ms,
        }),
    ))
}

/// `POST /api/v1/admin/server/unload`: lifts the server's own self-protection for a while, so an
/// operator can stop, upgrade or uninstall it.
pub async fn unload_server(
    State(state): State<AppState>,
    admin: AdminAuth,
) -> Result<Json<serde_json::Value>, ApiError> {
    let guardian = state.guardian.clone();
    let status = tokio::task::spawn_blocking(move || {
        let mut g = guardian.lock().expect("guardian lock");
        g.as_mut().map(|g| {
            g.unload();
            g.status()
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::warn!(admin = %admin.admin, "server self-protection unloaded");
    Ok(Json(serde_json::json!({
        "message": format!(
            "server self-protection lifted for {} minutes (or until the server restarts)",
            rampart_selfprotect::guardian::UNLOAD_PERIOD.as_secs() / 60
        ),
        "self_protection": status,
    })))
}
