//! [`LifecycleStore`](crate::LifecycleStore) and [`ClusterStore`](crate::ClusterStore), written once (see [`crate::sql`]).

macro_rules! lifecycle_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            use $crate::cluster::{WORKER_COLUMNS, WORKER_ON_CONFLICT, bind_worker};
            use $crate::lifecycle::EVENT_COLUMNS;
            use $crate::*;
            use sqlx::AssertSqlSafe;

            #[async_trait]
            impl LifecycleStore for $store {
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
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(event_from_row).collect()
                }

                async fn record_lifecycle_event(
                    &self,
                    team_id: i64,
                    e: &NewLifecycleEvent,
                ) -> StoreResult<i64> {
                    // The counter row is locked until commit: sequences stay gap-free and ordered.
                    let mut tx = self.write().begin().await?;
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
            impl ClusterStore for $store {
                async fn upsert_worker(&self, w: &WorkerPresence) -> StoreResult<()> {
                    let query = sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO worker_presence ({WORKER_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) {WORKER_ON_CONFLICT}"
                    )));
                    bind_worker(query, w)?.execute(self.write()).await?;
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
                    .execute(self.write())
                    .await?;
                    Ok(())
                }

                async fn list_workers(&self, team_id: i64) -> StoreResult<Vec<WorkerPresence>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {WORKER_COLUMNS} FROM worker_presence WHERE team_id = $1 ORDER BY worker_id"
                    )))
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(worker_from_row).collect()
                }

                async fn prune_workers(&self, before: i64) -> StoreResult<u64> {
                    let done = sqlx::query("DELETE FROM worker_presence WHERE last_seen < $1")
                        .bind(before)
                        .execute(self.write())
                        .await?;
                    Ok(done.rows_affected())
                }

                async fn bootstrap_lock(&self) -> StoreResult<BootstrapLock> {
                    // Session-level advisory lock on a connection of its own, keyed by the
                    // schema so deployments sharing a database do not wait for each other.
                    let mut conn = self.CHECK().acquire().await?;
                    sqlx::query("SELECT pg_advisory_lock(hashtext('hangar-bootstrap:' || current_schema()))")
                        .execute(&mut *conn)
                        .await?;
                    Ok(BootstrapLock { conn: Some(conn) })
                }
            }

        };
    };
}

pub(crate) use lifecycle_store;
