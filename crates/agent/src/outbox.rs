//! The outbox: every event is written here, durably, before anything tries to send it.
//!
//! A local SQLite database (WAL, `synchronous = FULL`): when [`Outbox::push`] returns, the event
//! survives a crash of the agent or the host. Each event gets the next sequence number of this
//! agent (`AUTOINCREMENT`: never reused, even after rows are deleted). The uploader reads the
//! oldest events, sends them, and deletes them only once the server has acknowledged them; the
//! server stores each (agent, sequence number) once, so a crash between the two steps resends
//! and never duplicates. Several processes may write at once (the daemon, `rampart agent note`).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rampart_protocol::events::Event;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database failed.
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The agent's local, durable queue of events.
#[derive(Clone, Debug)]
pub struct Outbox {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path`.
    pub async fn open(path: &Path) -> Result<Outbox, OutboxError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS outbox (
                 seq     INTEGER PRIMARY KEY AUTOINCREMENT,
                 kind    TEXT NOT NULL,
                 time_ms INTEGER NOT NULL,
                 body    TEXT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(Outbox { pool })
    }

    /// Writes one event; durable when this returns. Returns its sequence number.
    pub async fn push(&self, kind: &str, body: Value) -> Result<u64, OutboxError> {
        Ok(self.push_many(&[(kind.to_owned(), body)]).await?[0])
    }

    /// Writes several events in one transaction; durable when this returns.
    pub async fn push_many(&self, events: &[(String, Value)]) -> Result<Vec<u64>, OutboxError> {
        let mut tx = self.pool.begin().await?;
        let mut seqs = Vec::with_capacity(events.len());
        let now = now_ms();
        for (kind, body) in events {
            let row = sqlx::query(
                "INSERT INTO outbox (kind, time_ms, body) VALUES (?1, ?2, ?3) RETURNING seq",
            )
            .bind(kind)
            .bind(now)
            .bind(body.to_string())
            .fetch_one(&mut *tx)
            .await?;
            seqs.push(row.try_get::<i64, _>("seq")? as u64);
        }
        tx.commit().await?;
        Ok(seqs)
    }

    /// The oldest events not yet acknowledged: at most `limit`, and at most about `max_bytes`
    /// of bodies (always at least one).
    pub async fn oldest(&self, limit: usize, max_bytes: usize) -> Result<Vec<Event>, OutboxError> {
        let rows = sqlx::query("SELECT seq, kind, time_ms, body FROM outbox ORDER BY seq LIMIT ?1")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0;
        for r in rows {
            let body: String = r.try_get("body")?;
            bytes += body.len() + 64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(Event {
                seq: r.try_get::<i64, _>("seq")? as u64,
                kind: r.try_get("kind")?,
                time_ms: r.try_get("time_ms")?,
                body: serde_json::from_str(&body).unwrap_or(Value::String(body)),
            });
        }
        Ok(out)
    }

    /// Forgets every event up to and including `seq`: the server has them.
    pub async fn acknowledge_through(&self, seq: u64) -> Result<(), OutboxError> {
        sqlx::query("DELETE FROM outbox WHERE seq <= ?1")
            .bind(seq as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many events wait to be sent.
    pub async fn pending(&self) -> Result<u64, OutboxError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// How many events wait in the outbox at `path`, read without writing to it (for a
    /// process other than the agent).
    pub async fn pending_read_only(path: &Path) -> Result<u64, OutboxError> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sequence_numbers_survive_acknowledgement_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let o = Outbox::open(&path).await.unwrap();
        let seqs = o
            .push_many(
                &(0..5)
                    .map(|i| ("agent.note".to_owned(), serde_json::json!({"i": i})))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        let batch = o.oldest(3, 1 << 20).await.unwrap();
        assert_eq!(
            batch.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        o.acknowledge_through(5).await.unwrap();
        assert_eq!(o.pending().await.unwrap(), 0);
        o.close().await;
        // deleted rows never give their numbers again, also after reopening
        let o = Outbox::open(&path).await.unwrap();
        assert_eq!(
            o.push("agent.note", serde_json::json!({})).await.unwrap(),
            6
        );
        // byte limit cuts a batch but never to nothing
        o.push("agent.note", serde_json::json!({"big": "x".repeat(1000)}))
            .await
            .unwrap();
        assert_eq!(o.oldest(10, 10).await.unwrap().len(), 1);
        assert_eq!(o.oldest(10, 1 << 20).await.unwrap().len(), 2);
    }
}
