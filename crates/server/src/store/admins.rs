//! Administrators (argon2 password hashes) and their API sessions (token hashes).

use sqlx::Row;

use super::{now_ms, Store, StoreResult};

impl Store {
    /// Creates administrator `name` unless any administrator exists; true if created.
    pub async fn create_first_admin(&self, name: &str, password_hash: &str) -> StoreResult<bool> {
        let n = sqlx::query(
            "INSERT INTO admins (name, password_hash, created_ms)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM admins)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now_ms())
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The argon2 hash of administrator `name`'s password.
    pub async fn admin_password_hash(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query("SELECT password_hash FROM admins WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?
                .map(|r| r.try_get::<String, _>("password_hash"))
                .transpose()?,
        )
    }

    /// Replaces administrator `name`'s password hash and ends its sessions.
    pub async fn set_admin_password(&self, name: &str, password_hash: &str) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE admins SET password_hash = $1 WHERE name = $2")
            .bind(password_hash)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM admin_sessions WHERE admin = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a session (its token as a hash) and drops expired ones.
    pub async fn create_admin_session(
        &self,
        token_hash: &str,
        admin: &str,
        expires_ms: i64,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE expires_ms <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO admin_sessions (token_hash, admin, created_ms, expires_ms)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(admin)
        .bind(now)
        .bind(expires_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The administrator a live session token (by hash) belongs to.
    pub async fn session_admin(&self, token_hash: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query(
            "SELECT admin FROM admin_sessions WHERE token_hash = $1 AND expires_ms > $2",
        )
        .bind(token_hash)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?
        .map(|r| r.try_get::<String, _>("admin"))
        .transpose()?)
    }
}
