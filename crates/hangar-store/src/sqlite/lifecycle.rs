//! [`LifecycleStore`] and [`ClusterStore`] on SQLite.

use super::SqliteStore;
use crate::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};

const EVENT_COLUMNS: &str =
    "team_id, sequence, run_id, event_type, execution_id, ref_id, occurred_at";
const WORKER_COLUMNS: &str = "team_id, worker_id, replica_id, connection_id, backend, version, \
    capacity, running_tasks, draining, labels, connected, connected_at, last_seen";

fn event_from_row(row: &SqliteRow) -> StoreResult<LifecycleEventRecord> {
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

fn worker_from_row(row: &SqliteRow) -> StoreResult<WorkerPresence> {
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
        draining: row.try_get::<i64, _>("draining")? != 0,
        labels: serde_json::from_str(&labels)
            .map_err(|e| StoreError::Corrupt(format!("worker labels: {e}")))?,
        connected: row.try_get::<i64, _>("connected")? != 0,
        connected_at: row.try_get("connected_at")?,
        last_seen: row.try_get("last_seen")?,
    })
}

#[async_trait]
impl LifecycleStore for SqliteStore {
    async fn lifecycle_events(
        &self,
        team_id: i64,
        q: &LifecycleQuery,
    ) -> StoreResult<Vec<LifecycleEventRecord>> {
        let mut sql = format!(
            "SELECT {EVENT_COLUMNS} FROM lifecycle_events WHERE team_id = ? AND sequence > ?"
        );
        if !q.run_ids.is_empty() {
            let marks = vec!["?"; q.run_ids.len()].join(", ");
            sql.push_str(&format!(" AND run_id IN ({marks})"));
        }
        sql.push_str(" ORDER BY sequence LIMIT ?");
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(team_id).bind(q.since);
        for id in &q.run_ids {
            query = query.bind(id);
        }
        let rows = query.bind(q.limit).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn record_lifecycle_event(
        &self,
        team_id: i64,
        e: &NewLifecycleEvent,
    ) -> StoreResult<i64> {
        // One writer connection: MAX + 1 cannot race.
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO lifecycle_events (team_id, sequence, run_id, event_type, execution_id, \
             ref_id, occurred_at) \
             SELECT r.team_id, \
               (SELECT COALESCE(MAX(sequence), 0) + 1 FROM lifecycle_events WHERE team_id = r.team_id), \
               r.id, ?, ?, ?, ? FROM runs r WHERE r.id = ? AND r.team_id = ? \
             RETURNING sequence",
        )
        .bind(&e.event_type)
        .bind(&e.execution_id)
        .bind(&e.ref_id)
        .bind(e.occurred_at)
        .bind(&e.run_id)
        .bind(team_id)
        .fetch_optional(&self.writer)
        .await?;
        seq.ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn upsert_worker(&self, w: &WorkerPresence) -> StoreResult<()> {
        let labels = serde_json::to_string(&w.labels)
            .map_err(|e| StoreError::Corrupt(format!("worker labels: {e}")))?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO worker_presence ({WORKER_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
        .execute(&self.writer)
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
            "UPDATE worker_presence SET connected = 0, running_tasks = 0, last_seen = ? \
             WHERE team_id = ? AND worker_id = ? AND connection_id = ?",
        )
        .bind(at)
        .bind(team_id)
        .bind(worker_id)
        .bind(connection_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn list_workers(&self, team_id: i64) -> StoreResult<Vec<WorkerPresence>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {WORKER_COLUMNS} FROM worker_presence WHERE team_id = ? ORDER BY worker_id"
        )))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(worker_from_row).collect()
    }

    async fn prune_workers(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM worker_presence WHERE last_seen < ?")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn bootstrap_lock(&self) -> StoreResult<BootstrapLock> {
        // One process owns a SQLite file.
        Ok(BootstrapLock::none())
    }
}
