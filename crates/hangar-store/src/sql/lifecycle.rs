//! [`LifecycleStore`](crate::LifecycleStore) and [`ClusterStore`](crate::ClusterStore), written once (see [`crate::sql`]).

macro_rules! lifecycle_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            use $crate::cluster::{
                WORKER_COLUMNS, WORKER_ON_CONFLICT, WORKER_UPSERT_BATCH, bind_worker, worker_values,
            };
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
                    let mut sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM lifecycle_events WHERE team_id = $1 AND sequence > $2"
                    );
                    if !q.run_ids.is_empty() {
                        let marks: Vec<String> =
                            (0..q.run_ids.len()).map(|i| format!("${}", i + 3)).collect();
                        sql.push_str(&format!(" AND run_id IN ({})", marks.join(", ")));
                    }
                    sql.push_str(&format!(" ORDER BY sequence LIMIT ${}", q.run_ids.len() + 3));
                    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(team_id).bind(q.since);
                    for id in &q.run_ids {
                        query = query.bind(id);
                    }
                    let rows = query.bind(q.limit).fetch_all(self.read()).await?;
                    rows.iter().map(event_from_row).collect()
                }

                async fn record_lifecycle_event(
                    &self,
                    team_id: i64,
                    e: &NewLifecycleEvent,
                ) -> StoreResult<i64> {
                    // One statement: no row (and no sequence number taken) unless the
                    // run is the team's.
                    let next = <$store as $crate::sql::Dialect>::NEXT_LIFECYCLE_SEQUENCE;
                    let mut db = self.write().await?;
                    let seq: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                        "INSERT INTO lifecycle_events (team_id, sequence, run_id, event_type, \
                         execution_id, ref_id, occurred_at) \
                         SELECT r.team_id, {next}, r.id, $3, $4, $5, $6 FROM runs r \
                         WHERE r.id = $2 AND r.team_id = $1 RETURNING sequence"
                    )))
                    .bind(team_id)
                    .bind(&e.run_id)
                    .bind(&e.event_type)
                    .bind(&e.execution_id)
                    .bind(&e.ref_id)
                    .bind(e.occurred_at)
                    // Read to the end: on PostgreSQL (autocommit) the statement commits when
                    // it finishes, and an error reported after the row (a failed commit)
                    // would be lost by stopping at the first row.
                    .fetch_all(&mut *db)
                    .await?
                    .pop();
                    db.commit().await?;
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
                    let mut db = self.write().await?;
                    bind_worker(query, w)?.execute(&mut *db).await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn upsert_workers(&self, workers: &[WorkerPresence]) -> StoreResult<()> {
                    if workers.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.transaction().await?;
                    for chunk in workers.chunks(WORKER_UPSERT_BATCH) {
                        let mut query = sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO worker_presence ({WORKER_COLUMNS}) VALUES {} {WORKER_ON_CONFLICT}",
                            worker_values(chunk.len())
                        )));
                        for w in chunk {
                            query = bind_worker(query, w)?;
                        }
                        query.execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn worker(
                    &self,
                    team_id: i64,
                    worker_id: &WorkerId,
                ) -> StoreResult<Option<WorkerPresence>> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {WORKER_COLUMNS} FROM worker_presence WHERE team_id = $1 AND worker_id = $2"
                    )))
                    .bind(team_id)
                    .bind(worker_id.as_str())
                    .fetch_optional(self.read())
                    .await?;
                    row.as_ref().map(worker_from_row).transpose()
                }

                async fn worker_disconnected(
                    &self,
                    team_id: i64,
                    worker_id: &WorkerId,
                    connection_id: &str,
                    at: i64,
                ) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(
                        "UPDATE worker_presence SET connected = FALSE, running_tasks = 0, last_seen = $1 \
                         WHERE team_id = $2 AND worker_id = $3 AND connection_id = $4",
                    )
                    .bind(at)
                    .bind(team_id)
                    .bind(worker_id.as_str())
                    .bind(connection_id)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
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
                    let mut db = self.write().await?;
                    let done = sqlx::query("DELETE FROM worker_presence WHERE last_seen < $1")
                        .bind(before)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(done.rows_affected())
                }

                async fn bootstrap_lock(&self) -> StoreResult<BootstrapLock> {
                    self.take_bootstrap_lock().await
                }
            }

        };
    };
}

pub(crate) use lifecycle_store;
