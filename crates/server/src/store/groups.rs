//! Agent groups and their versioned policies.

use rampart_protocol::admin::GroupInfo;
use rampart_protocol::policy::Policy;
use sqlx::Row;

use super::{now_ms, Store, StoreError, StoreResult};

/// The group every server has, which `rampart up` enrolls its local agent into.
pub const DEFAULT_GROUP: &str = "default";

impl Store {
    /// Creates a group with its first policy (version 1).
    pub async fn create_group(&self, name: &str, policy: &Policy, by: &str) -> StoreResult<()> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO groups (id, name, policy_version, created_ms) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&id)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "agent group {name:?} already exists"
            )));
        }
        sqlx::query(
            "INSERT INTO policies (group_id, version, body, created_ms, created_by)
             VALUES ($1, 1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(policy.to_value().to_string())
        .bind(now)
        .bind(by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates the default group unless it exists.
    pub async fn ensure_default_group(&self) -> StoreResult<()> {
        match self
            .create_group(DEFAULT_GROUP, &Policy::default(), "server")
            .await
        {
            Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// All groups, by name, with their policy version and number of agents.
    pub async fn list_groups(&self) -> StoreResult<Vec<GroupInfo>> {
        let rows = sqlx::query(
            "SELECT g.name, g.policy_version,
                    (SELECT COUNT(*) FROM agents a WHERE a.group_id = g.id AND a.revoked = 0) AS agents
             FROM groups g ORDER BY g.name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GroupInfo {
                    name: r.try_get("name")?,
                    policy_version: r.try_get::<i64, _>("policy_version")? as u64,
                    agents: r.try_get::<i64, _>("agents")? as u64,
                })
            })
            .collect()
    }

    /// The id of the group called `name`.
    pub async fn group_id(&self, name: &str) -> StoreResult<String> {
        sqlx::query("SELECT id FROM groups WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.try_get::<String, _>("id"))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("agent group {name:?}")))
    }

    /// The current policy of the group called `name`: version and stored JSON text.
    pub async fn current_policy(&self, name: &str) -> StoreResult<(u64, Policy)> {
        let row = sqlx::query(
            "SELECT p.version, p.body FROM groups g
             JOIN policies p ON p.group_id = g.id AND p.version = g.policy_version
             WHERE g.name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("agent group {name:?}")))?;
        let version = row.try_get::<i64, _>("version")? as u64;
        let body: String = row.try_get("body")?;
        Ok((version, parse_stored(&body)?))
    }

    /// Replaces the policy of the group called `name`; returns the new version.
    pub async fn set_policy(&self, name: &str, policy: &Policy, by: &str) -> StoreResult<u64> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "UPDATE groups SET policy_version = policy_version + 1 WHERE name = $1
             RETURNING id, policy_version",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("agent group {name:?}")))?;
        let id: String = row.try_get("id")?;
        let version: i64 = row.try_get("policy_version")?;
        sqlx::query(
            "INSERT INTO policies (group_id, version, body, created_ms, created_by)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(version)
        .bind(policy.to_value().to_string())
        .bind(now_ms())
        .bind(by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version as u64)
    }

    /// One stored policy version of a group (versions never change once written).
    pub async fn policy_version(&self, group_id: &str, version: u64) -> StoreResult<Policy> {
        let row = sqlx::query("SELECT body FROM policies WHERE group_id = $1 AND version = $2")
            .bind(group_id)
            .bind(version as i64)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("policy version {version}")))?;
        parse_stored(&row.try_get::<String, _>("body")?)
    }
}

fn parse_stored(body: &str) -> StoreResult<Policy> {
    Policy::parse_json(body)
        .map(|p| p.policy)
        .map_err(|e| StoreError::Corrupt {
            what: "policy",
            message: e.to_string(),
        })
}
