//! Enrolled agents: their credentials (as hashes), identity and last report.

use rampart_protocol::admin::AgentInfo;
use rampart_protocol::checkin::{AgentIdentity, ComponentVersion, ProtectionStatus};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Store, StoreError, StoreResult};

/// What authenticating an agent needs, read in one query.
#[derive(Debug, Clone)]
pub struct AgentAuthRow {
    /// SHA-256 of the agent's secret.
    pub credential_hash: String,
    /// Revoked agents are refused.
    pub revoked: bool,
    /// The agent's group id.
    pub group_id: String,
    /// The agent's group name.
    pub group_name: String,
    /// The group's current policy version.
    pub policy_version: u64,
}

/// What a check-in changes on the agent's row.
#[derive(Debug, Clone)]
pub struct CheckinUpdate {
    /// When.
    pub now_ms: i64,
    /// Identity as reported.
    pub identity: AgentIdentity,
    /// Protections as reported.
    pub protections: Vec<ProtectionStatus>,
    /// Components as reported.
    pub components: Vec<ComponentVersion>,
    /// Policy version the agent applied.
    pub applied_policy_version: Option<u64>,
}

/// The stored form of an agent's last report.
#[derive(Serialize, Deserialize, Default)]
struct Report {
    protections: Vec<ProtectionStatus>,
    components: Vec<ComponentVersion>,
}

impl Store {
    /// Reads what is needed to authenticate agent `id`.
    pub async fn agent_auth(&self, id: &str) -> StoreResult<Option<AgentAuthRow>> {
        let row = sqlx::query(
            "SELECT a.credential_hash, a.revoked, a.group_id, g.name, g.policy_version
             FROM agents a JOIN groups g ON g.id = a.group_id WHERE a.id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(AgentAuthRow {
                credential_hash: r.try_get("credential_hash")?,
                revoked: r.try_get::<i64, _>("revoked")? != 0,
                group_id: r.try_get("group_id")?,
                group_name: r.try_get("name")?,
                policy_version: r.try_get::<i64, _>("policy_version")? as u64,
            })
        })
        .transpose()
    }

    /// Records a batch of check-ins in one transaction: `(agent id, last seen, report)`, the
    /// report only where it changed.
    pub async fn record_checkins(
        &self,
        rows: &[(String, i64, Option<CheckinUpdate>)],
    ) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        for (id, seen, update) in rows {
            match update {
                None => {
                    sqlx::query("UPDATE agents SET last_seen_ms = $1 WHERE id = $2")
                        .bind(*seen)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                Some(update) => {
                    let report = Report {
                        protections: update.protections.clone(),
                        components: update.components.clone(),
                    };
                    sqlx::query(
                        "UPDATE agents SET last_seen_ms = $1, identity = $2, report = $3,
                                applied_policy_version = $4 WHERE id = $5",
                    )
                    .bind(*seen)
                    .bind(json(&update.identity))
                    .bind(json(&report))
                    .bind(update.applied_policy_version.map(|v| v as i64))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every agent, revoked ones included, by enrollment time.
    pub async fn list_agents(&self) -> StoreResult<Vec<AgentInfo>> {
        let rows = sqlx::query(
            "SELECT a.id, g.name, a.identity, a.report, a.enrolled_ms, a.last_seen_ms,
                    a.revoked, a.applied_policy_version
             FROM agents a JOIN groups g ON g.id = a.group_id
             ORDER BY a.enrolled_ms, a.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let identity: String = r.try_get("identity")?;
                let report: String = r.try_get("report")?;
                let identity = serde_json::from_str(&identity).map_err(corrupt)?;
                let report: Report = serde_json::from_str(&report).map_err(corrupt)?;
                Ok(AgentInfo {
                    id: r.try_get("id")?,
                    group: r.try_get("name")?,
                    identity,
                    enrolled_at_ms: r.try_get("enrolled_ms")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                    revoked: r.try_get::<i64, _>("revoked")? != 0,
                    applied_policy_version: r
                        .try_get::<Option<i64>, _>("applied_policy_version")?
                        .map(|v| v as u64),
                    protections: report.protections,
                    components: report.components,
                })
            })
            .collect()
    }

    /// Revokes agent `id`: from now on it gets 401.
    pub async fn revoke_agent(&self, id: &str) -> StoreResult<()> {
        let n = sqlx::query("UPDATE agents SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("agent {id:?}")));
        }
        Ok(())
    }
}

pub(super) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types always serialize")
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        what: "agent report",
        message: e.to_string(),
    }
}
