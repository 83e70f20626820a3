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

    /// Stored events matching `q`, ordered by agent and sequence number.
    pub async fn list_events(&self, q: &EventsQuery) -> StoreResult<Vec<EventRecord>> {
        let limit = q.limit.unwrap_or(1000).min(10_000) as i64;
        let offset = q.offset.unwrap_or(0).min(i64::MAX as u64) as i64;
        let rows = sqlx::query(
            "SELECT agent_id, seq, kind, time_ms, received_ms, body FROM events
             WHERE ($1 = '' OR agent_id = $1) AND ($2 = '' OR kind = $2)
             ORDER BY agent_id, seq LIMIT $3 OFFSET $4",
        )
        .bind(q.agent.clone().unwrap_or_default())
        .bind(q.kind.clone().unwrap_or_default())
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
