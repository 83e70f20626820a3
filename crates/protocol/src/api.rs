//! HTTP paths of the management server's API. Agents and the CLI use these constants, the
//! server routes them, so a path is spelled in exactly one place.

/// The server's CA certificate (PEM). Unauthenticated: agents compare its SHA-256 with the
/// fingerprint carried by their enrollment token before they trust it.
pub const CA_PEM: &str = "/ca.pem";
/// Liveness and version of the server.
pub const HEALTH: &str = "/api/v1/health";
/// Agent enrollment with an enrollment token.
pub const ENROLL: &str = "/api/v1/enroll";
/// Agent check-in: report state, receive desired state (conditional on `If-None-Match`).
pub const CHECKIN: &str = "/api/v1/agent/checkin";
/// Agent event upload from the outbox.
pub const EVENTS: &str = "/api/v1/agent/events";

/// Administrator login with user name and password.
pub const ADMIN_LOGIN: &str = "/api/v1/admin/login";
/// Agent groups: list, create.
pub const ADMIN_GROUPS: &str = "/api/v1/admin/groups";
/// One group's policy: `GET` shows it, `PUT` replaces it (`{group}` is the group name).
pub const ADMIN_GROUP_POLICY: &str = "/api/v1/admin/groups/{group}/policy";
/// Enrollment tokens: create.
pub const ADMIN_ENROLLMENT_TOKENS: &str = "/api/v1/admin/enrollment-tokens";
/// Agents: list.
pub const ADMIN_AGENTS: &str = "/api/v1/admin/agents";
/// Revoke one agent (`{id}` is the agent id).
pub const ADMIN_AGENT_REVOKE: &str = "/api/v1/admin/agents/{id}/revoke";
/// A one-time maintenance token that lifts self-protection on one agent (`{id}`).
pub const ADMIN_AGENT_MAINTENANCE_TOKEN: &str = "/api/v1/admin/agents/{id}/maintenance-token";
/// Lift the server's own self-protection for a while (an administrator's authorization).
pub const ADMIN_SERVER_UNLOAD: &str = "/api/v1/admin/server/unload";
/// Events received from agents, filtered by query parameters.
pub const ADMIN_EVENTS: &str = "/api/v1/admin/events";

/// Fills the `{name}` placeholder of a path template.
pub fn path(template: &str, name: &str, value: &str) -> String {
    template.replace(&format!("{{{name}}}"), value)
}
