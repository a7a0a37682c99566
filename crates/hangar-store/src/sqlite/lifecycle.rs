//! [`LifecycleStore`] and [`ClusterStore`] on SQLite.

use super::{SqliteStore, event_from_row, worker_from_row};
use crate::cluster::{WORKER_COLUMNS, WORKER_ON_CONFLICT, bind_worker};
use crate::lifecycle::EVENT_COLUMNS;
use crate::*;
use sqlx::AssertSqlSafe;

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
        // Stepped to the end: SQLite commits an autocommit statement when it
        // finishes, and stopping at the first row would hide a failed commit.
        .fetch_all(&self.writer)
        .await?
        .pop();
        seq.ok_or(StoreError::NotFound)
    }
}

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn upsert_worker(&self, w: &WorkerPresence) -> StoreResult<()> {
        let query = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO worker_presence ({WORKER_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {WORKER_ON_CONFLICT}"
        )));
        bind_worker(query, w)?.execute(&self.writer).await?;
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
