//! The server's store: embedded SQLite by default, PostgreSQL for deployments that outgrow one
//! machine (several stateless server replicas on one database).
//!
//! Both run the same portable SQL through `sqlx`'s `Any` driver: `TEXT`, `BIGINT`,
//! `ON CONFLICT DO NOTHING`, `RETURNING`, and `$N` placeholders. Every write transaction begins
//! with its write, so SQLite never has to upgrade a read lock (which would fail instead of wait).
//! Schema changes are numbered migrations in `migrations/`, applied in order at start and
//! recorded in `schema_migrations`.

mod admins;
mod agents;
mod enrollment;
mod events;
mod groups;
mod meta;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

pub use agents::{AgentAuthRow, CheckinUpdate};
pub use enrollment::EnrollOutcome;
pub use groups::DEFAULT_GROUP;

/// Which engine is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The thing exists already, or the change conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// The database URL names an engine Rampart does not use.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// Stored data could not be read back.
    #[error("stored {what} is unreadable: {message}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it could not be read.
        message: String,
    },
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Numbered migrations, applied in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../../migrations/0001_initial.sql"),
)];

/// A connection pool to the store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens the store at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; FULL makes a commit durable
                        // before the server acknowledges it (events are never lost).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for the table modules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.pool
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
            )
            .await?;
        for (version, name, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            // Claim the version first: a concurrent replica's claim conflicts and waits,
            // then finds it applied.
            let claimed = sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (version) DO NOTHING",
            )
            .bind(*version)
            .bind(*name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                tx.rollback().await?;
                continue;
            }
            for statement in split_sql(sql) {
                tx.execute(statement.as_str()).await?;
            }
            tx.commit().await?;
            tracing::info!(version, name, "applied store migration");
        }
        Ok(())
    }

    /// The schema version in force.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?.unwrap_or(0))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Splits a migration into statements at semicolons that end a line (our migrations keep
/// semicolons out of string literals), dropping `--` comment lines.
fn split_sql(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_owned());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// A database URL with any password replaced, fit for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_splits_into_statements() {
        let statements = split_sql(MIGRATIONS[0].2);
        assert!(statements.len() >= 9, "{statements:?}");
        assert!(statements.iter().all(|s| !s.ends_with(';')));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://rampart:secret@127.0.0.1/db"),
            "postgres://rampart:***@127.0.0.1/db"
        );
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
    }
}
