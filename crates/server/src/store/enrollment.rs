//! Enrollment tokens and the enrollment of agents.

use rampart_protocol::checkin::AgentIdentity;
use sqlx::Row;

use super::agents::json;
use super::{now_ms, Store, StoreResult};
use crate::secrets;

/// The result of an enrollment attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollOutcome {
    /// The agent is enrolled into the named group.
    Enrolled {
        /// Group name.
        group: String,
    },
    /// The token is unknown, wrong, expired or used up; nothing was changed.
    Refused,
}

impl Store {
    /// Stores a new enrollment token (its secret as a hash).
    pub async fn create_enrollment_token(
        &self,
        id: &str,
        group_id: &str,
        secret_hash: &str,
        expires_ms: i64,
        max_uses: u64,
        by: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO enrollment_tokens
                 (id, group_id, secret_hash, created_ms, expires_ms, max_uses, uses, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(id)
        .bind(group_id)
        .bind(secret_hash)
        .bind(now_ms())
        .bind(expires_ms)
        .bind(max_uses as i64)
        .bind(by)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Uses one enrollment of token `token_id` if `token_secret` matches and the token is
    /// valid, and stores the new agent with the hash of its credential, atomically.
    pub async fn enroll_agent(
        &self,
        token_id: &str,
        token_secret: &str,
        agent_id: &str,
        credential_hash: &str,
        identity: &AgentIdentity,
    ) -> StoreResult<EnrollOutcome> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        // The write comes first (see the module doc of `store`); a wrong secret rolls it back.
        let row = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1
             WHERE id = $1 AND uses < max_uses AND expires_ms > $2
             RETURNING group_id, secret_hash",
        )
        .bind(token_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(EnrollOutcome::Refused);
        };
        let secret_hash: String = row.try_get("secret_hash")?;
        if !secrets::secret_matches(token_secret, &secret_hash) {
            tx.rollback().await?;
            return Ok(EnrollOutcome::Refused);
        }
        let group_id: String = row.try_get("group_id")?;
        sqlx::query(
            "INSERT INTO agents (id, group_id, credential_hash, enrolled_ms, last_seen_ms, revoked,
                                 identity, report, applied_policy_version)
             VALUES ($1, $2, $3, $4, 0, 0, $5, '{\"protections\":[],\"components\":[]}', NULL)",
        )
        .bind(agent_id)
        .bind(&group_id)
        .bind(credential_hash)
        .bind(now)
        .bind(json(identity))
        .execute(&mut *tx)
        .await?;
        let group: String = sqlx::query("SELECT name FROM groups WHERE id = $1")
            .bind(&group_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("name")?;
        tx.commit().await?;
        Ok(EnrollOutcome::Enrolled { group })
    }
}
