//! [`LifecycleStore`] and [`ClusterStore`] on PostgreSQL.

use super::PostgresStore;
use crate::*;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

const EVENT_COLUMNS: &str =
    "team_id, sequence, run_id, event_type, execution_id, ref_id, occurred_at";
const WORKER_COLUMNS: &str = "team_id, worker_id, replica_id, connection_id, backend, version, \
    capacity, running_tasks, draining, labels, connected, connected_at, last_seen";

fn event_from_row(row: &PgRow) -> StoreResult<LifecycleEventRecord> {
    Ok(LifecycleEventRecord {
        team_id: row.try_get("team_id")?,
        sequence: row.try_get("sequence")?,
        run_id: row.try_get("run_id")?,
        event_type: row.try_get("event_type")?,
        execution_id: row.try_get("execution_id")?,
        ref_id: row.try_get("ref_id")?,
        occurred_at: row.try_get("occurred_at")?,
    })
}

fn worker_from_row(row: &PgRow) -> StoreResult<WorkerPresence> {
    let labels: String = row.try_get("labels")?;
    Ok(WorkerPresence {
        team_id: row.try_get("team_id")?,
        worker_id: row.try_get("worker_id")?,
        replica_id: row.try_get("replica_id")?,
        connection_id: row.try_get("connection_id")?,
        backend: row.try_get("backend")?,
        version: row.try_get("version")?,
        capacity: row.try_get("capacity")?,
        running_tasks: row.try_get("running_tasks")?,
        draining: row.try_get("draining")?,
        labels: serde_json::from_str(&labels)
            .map_err(|e| StoreError::Corrupt(format!("worker labels: {e}")))?,
        connected: row.try_get("connected")?,
        connected_at: row.try_get("connected_at")?,
        last_seen: row.try_get("last_seen")?,
    })
}

#[async_trait]
impl LifecycleStore for PostgresStore {
    async fn lifecycle_events(
        &self,
        team_id: i64,
        q: &LifecycleQuery,
    ) -> StoreResult<Vec<LifecycleEventRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM lifecycle_events WHERE team_id = $1 AND sequence > $2 \
             AND (cardinality($3::text[]) = 0 OR run_id = ANY($3)) ORDER BY sequence LIMIT $4"
        )))
        .bind(team_id)
        .bind(q.since)
        .bind(&q.run_ids)
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn record_lifecycle_event(
        &self,
        team_id: i64,
        e: &NewLifecycleEvent,
    ) -> StoreResult<i64> {
        // The counter row is locked until commit: sequences stay gap-free and ordered.
        let mut tx = self.pool.begin().await?;
        let team: Option<i64> =
            sqlx::query_scalar("SELECT team_id FROM runs WHERE id = $1 AND team_id = $2")
                .bind(&e.run_id)
                .bind(team_id)
                .fetch_optional(&mut *tx)
                .await?;
        if team.is_none() {
            return Err(StoreError::NotFound);
        }
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO lifecycle_events (team_id, sequence, run_id, event_type, execution_id, \
             ref_id, occurred_at) \
             VALUES ($1, hangar_next_lifecycle_sequence($1), $2, $3, $4, $5, $6) \
             RETURNING sequence",
        )
        .bind(team_id)
        .bind(&e.run_id)
        .bind(&e.event_type)
        .bind(&e.execution_id)
        .bind(&e.ref_id)
        .bind(e.occurred_at)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        seq.ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl ClusterStore for PostgresStore {
    async fn upsert_worker(&self, w: &WorkerPresence) -> StoreResult<()> {
        let labels = serde_json::to_string(&w.labels)
            .map_err(|e| StoreError::Corrupt(format!("worker labels: {e}")))?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO worker_presence ({WORKER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (team_id, worker_id) DO UPDATE SET replica_id = excluded.replica_id, \
             connection_id = excluded.connection_id, backend = excluded.backend, \
             version = excluded.version, capacity = excluded.capacity, \
             running_tasks = excluded.running_tasks, draining = excluded.draining, \
             labels = excluded.labels, connected = excluded.connected, \
             connected_at = excluded.connected_at, last_seen = excluded.last_seen"
        )))
        .bind(w.team_id)
        .bind(&w.worker_id)
        .bind(&w.replica_id)
        .bind(&w.connection_id)
        .bind(&w.backend)
        .bind(&w.version)
        .bind(w.capacity)
        .bind(w.running_tasks)
        .bind(w.draining)
        .bind(labels)
        .bind(w.connected)
        .bind(w.connected_at)
        .bind(w.last_seen)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn worker_disconnected(
        &self,
        team_id: i64,
        worker_id: &str,
        connection_id: &str,
        at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE worker_presence SET connected = FALSE, running_tasks = 0, last_seen = $1 \
             WHERE team_id = $2 AND worker_id = $3 AND connection_id = $4",
        )
        .bind(at)
        .bind(team_id)
        .bind(worker_id)
        .bind(connection_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_workers(&self, team_id: i64) -> StoreResult<Vec<WorkerPresence>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {WORKER_COLUMNS} FROM worker_presence WHERE team_id = $1 ORDER BY worker_id"
        )))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    async fn prune_workers(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM worker_presence WHERE last_seen < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn bootstrap_lock(&self) -> StoreResult<BootstrapLock> {
        // Session-level advisory lock on a connection of its own, keyed by the
        // schema so deployments sharing a database do not wait for each other.
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(hashtext('hangar-bootstrap:' || current_schema()))")
            .execute(&mut *conn)
            .await?;
        Ok(BootstrapLock { conn: Some(conn) })
    }
}
