//! The HTTP API: the agents' endpoints ([`agent`]), the administrator's ([`admin`]) and the
//! browser console ([`console`]). Every error answer is JSON, `{"error": "..."}`, with a 4xx
//! status for a bad request and 500 only for the server's own faults.

mod admin;
mod agent;
pub mod checkins;
mod console;
mod errors;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use rampart_protocol::api;
use rampart_protocol::policy::Policy;

pub use errors::ApiError;

use crate::store::Store;
use crate::tls::CaMaterial;

/// Largest request body in general.
pub const MAX_BODY: usize = 1 << 20;
/// Largest event upload.
pub const MAX_EVENTS_BODY: usize = 16 << 20;

/// Stored policies by (group id, version).
type PolicyCache = HashMap<(String, u64), Arc<Policy>>;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// The CA agents pin.
    pub ca: Arc<CaMaterial>,
    /// Its fingerprint, carried by enrollment tokens.
    pub ca_fingerprint: Arc<str>,
    /// The key that signs maintenance tokens.
    pub signing_key: Arc<ed25519_dalek::SigningKey>,
    /// The server's own self-protection.
    pub guardian: Arc<Mutex<Option<rampart_selfprotect::guardian::Guardian>>>,
    /// Stored policy versions never change, so they are cached by (group id, version).
    policy_cache: Arc<Mutex<PolicyCache>>,
    /// Check-ins noted for the next batched write.
    pub checkins: Arc<checkins::CheckinRecorder>,
    /// Check-ins being answered right now; past the limit the server answers 503 at once
    /// rather than letting requests queue past the agents' timeouts.
    checkins_in_flight: Arc<tokio::sync::Semaphore>,
}

/// Check-ins answered at the same time before the server sheds load.
pub const MAX_CHECKINS_IN_FLIGHT: usize = 1024;

impl AppState {
    /// State over `store` serving under `ca`.
    pub fn new(
        store: Store,
        ca: CaMaterial,
        signing_key: ed25519_dalek::SigningKey,
    ) -> anyhow::Result<Self> {
        let fingerprint = ca.fingerprint()?;
        Ok(AppState {
            store,
            ca: Arc::new(ca),
            ca_fingerprint: fingerprint.into(),
            signing_key: Arc::new(signing_key),
            guardian: Arc::default(),
            policy_cache: Arc::default(),
            checkins: Arc::default(),
            checkins_in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_CHECKINS_IN_FLIGHT)),
        })
    }

    /// A stored policy version, from the cache when it has been read before.
    async fn policy(&self, group_id: &str, version: u64) -> Result<Arc<Policy>, ApiError> {
        let key = (group_id.to_owned(), version);
        if let Some(p) = self.policy_cache.lock().expect("cache lock").get(&key) {
            return Ok(p.clone());
        }
        let policy = Arc::new(self.store.policy_version(group_id, version).await?);
        let mut cache = self.policy_cache.lock().expect("cache lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, policy.clone());
        Ok(policy)
    }
}

/// The whole API as one router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(console::page))
        .route(api::CA_PEM, get(agent::ca_pem))
        .route(api::HEALTH, get(agent::health))
        .route(api::ENROLL, post(agent::enroll))
        .route(api::CHECKIN, post(agent::checkin))
        .route(
            api::EVENTS,
            post(agent::events).layer(DefaultBodyLimit::max(MAX_EVENTS_BODY)),
        )
        .route(api::ADMIN_LOGIN, post(admin::login))
        .route(
            api::ADMIN_GROUPS,
            get(admin::list_groups).post(admin::create_group),
        )
        .route(
            api::ADMIN_GROUP_POLICY,
            get(admin::get_policy).put(admin::put_policy),
        )
        .route(
            api::ADMIN_ENROLLMENT_TOKENS,
            post(admin::create_enrollment_token),
        )
        .route(api::ADMIN_AGENTS, get(admin::list_agents))
        .route(api::ADMIN_AGENT_REVOKE, post(admin::revoke_agent))
        .route(
            api::ADMIN_AGENT_MAINTENANCE_TOKEN,
            post(admin::maintenance_token),
        )
        .route(api::ADMIN_EVENTS, get(admin::list_events))
        .route(api::ADMIN_SERVER_UNLOAD, post(admin::unload_server))
        .fallback(errors::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}
