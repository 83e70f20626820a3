//! Events from agents, stored once per (agent, sequence number).

use rampart_protocol::admin::{EventRecord, EventsQuery};
use rampart_protocol::events::Event;
use sqlx::Row;

use super::{Store, StoreResult};

/// Rows per INSERT statement (6 parameters each, well below both engines' limits).
const ROWS_PER_STATEMENT: usize = 200;

impl Store {
    /// Stores a batch of events from agent `agent_id` in one transaction. Events already stored
    /// (same agent and sequence number) are skipped, so a retried upload never duplicates.
    /// Returns (newly stored, already present).
    pub async fn ingest_events(
        &self,
        agent_id: &str,
        events: &[Event],
        received_ms: i64,
    ) -> StoreResult<(u64, u64)> {
        let mut tx = self.pool().begin().await?;
        let mut accepted = 0;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO events (agent_id, seq, kind, time_ms, received_ms, body) VALUES ",
            );
            for i in 0..chunk.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            sql.push_str(" ON CONFLICT (agent_id, seq) DO NOTHING");
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(agent_id)
                    .bind(e.seq as i64)
                    .bind(e.kind.as_str())
                    .bind(e.time_ms)
                    .bind(received_ms)
                    .bind(e.body.to_string());
            }
            accepted += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok((accepted, events.len() as u64 - accepted))
    }

    /// The highest sequence number stored for `agent_id` (0: none).
    pub async fn last_seq(&self, agent_id: &str) -> StoreResult<u64> {
        let row = sqlx::query("SELECT MAX(seq) AS last FROM events WHERE agent_id = $1")
            .bind(agent_id)
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("last")?.unwrap_or(0).max(0) as u64)
    }

    /// Stored events matching `q`, ordered by agent and sequence number.
    pub async fn list_events(&self, q: &EventsQuery) -> StoreResult<Vec<EventRecord>> {
        let limit = q.limit.unwrap_or(1000).min(10_000) as i64;
        let offset = q.offset.unwrap_or(0).min(i64::MAX as u64) as i64;
        // only the filters asked for, so each can use its index
        let mut sql = String::from(
            "SELECT agent_id, seq, kind, time_ms, received_ms, body FROM events WHERE 1 = 1",
        );
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if q.agent.is_some() {
            sql.push_str(&format!(" AND agent_id = {}", param()));
        }
        if q.kind.is_some() {
            sql.push_str(&format!(" AND kind = {}", param()));
        }
        sql.push_str(&format!(
            " ORDER BY agent_id, seq LIMIT {} OFFSET {}",
            param(),
            param()
        ));
        let mut query = sqlx::query(&sql);
        if let Some(a) = &q.agent {
            query = query.bind(a.clone());
        }
        if let Some(k) = &q.kind {
            query = query.bind(k.clone());
        }
        let rows = query
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                Ok(EventRecord {
                    agent_id: r.try_get("agent_id")?,
                    seq: r.try_get::<i64, _>("seq")? as u64,
                    kind: r.try_get("kind")?,
                    time_ms: r.try_get("time_ms")?,
                    received_ms: r.try_get("received_ms")?,
                    body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
                })
            })
            .collect()
    }
}
