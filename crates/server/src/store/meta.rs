//! Server-wide values kept in the store, shared by every replica (the CA, for one).

use sqlx::Row;

use super::{Store, StoreResult};

impl Store {
    /// Stores `value` under `key` unless a value is there already; returns the stored value
    /// (so concurrent first starts of several replicas agree on one).
    pub async fn meta_put_if_absent(&self, key: &str, value: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(self.pool())
        .await?;
        Ok(sqlx::query("SELECT value FROM server_meta WHERE key = $1")
            .bind(key)
            .fetch_one(self.pool())
            .await?
            .try_get("value")?)
    }

    /// The value under `key`.
    pub async fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query("SELECT value FROM server_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(self.pool())
            .await?
            .map(|r| r.try_get::<String, _>("value"))
            .transpose()?)
    }
}
