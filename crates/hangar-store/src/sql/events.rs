//! [`EventStore`](crate::EventStore) reads and [`Store`](crate::Store), written
//! once (see [`crate::sql`]). Inserting a batch of events is the dialect's
//! (`insert_events`): one `UNNEST` statement on PostgreSQL, which SQLite
//! lacks arrays for.

macro_rules! event_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            use $crate::*;
            use async_trait::async_trait;
            use hangar_protocol::session::SessionEvent;
            use hangar_protocol::{ExecutionId, RunId, Timestamp};
            use sqlx::Row;

            impl $store {
                /// A run's events (of one kind, or all), executions in creation order.
                async fn events_of(
                    &self,
                    run: &RunId,
                    kind: Option<&str>,
                ) -> StoreResult<Vec<(ExecutionId, SessionEvent)>> {
                    let rows = sqlx::query(
                        "SELECT e.execution_id AS execution_id, e.body AS body FROM run_events e \
                         LEFT JOIN executions x ON x.id = e.execution_id \
                         WHERE e.run_id = $1 AND (CAST($2 AS TEXT) IS NULL OR e.kind = $2) \
                         ORDER BY COALESCE(x.created_at, 0), e.execution_id, e.seq",
                    )
                    .bind(run.as_str())
                    .bind(kind)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter()
                        .map(|row| {
                            let body: String = row.try_get("body")?;
                            let event = serde_json::from_str(&body)
                                .map_err(|e| StoreError::Corrupt(format!("event: {e}")))?;
                            Ok((ExecutionId(row.try_get("execution_id")?), event))
                        })
                        .collect()
                }
            }

            #[async_trait]
            impl EventStore for $store {
                async fn append_events(
                    &self,
                    run: &RunId,
                    exec: &ExecutionId,
                    events: &[SessionEvent],
                ) -> StoreResult<u64> {
                    // How a batch is inserted is the dialect's (`insert_events`).
                    self.insert_events(run, exec, events).await?;
                    self.last_seq(run, exec).await
                }

                async fn last_seq(&self, run: &RunId, exec: &ExecutionId) -> StoreResult<u64> {
                    // Highest seq such that 1..=seq are all stored: in seq order, the
                    // contiguous prefix is exactly the rows whose seq equals its position.
                    let last: i64 = sqlx::query_scalar(
                        "SELECT COALESCE(MAX(seq), 0) FROM ( \
                           SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS pos FROM run_events \
                           WHERE run_id = $1 AND execution_id = $2 AND seq >= 1 \
                         ) e WHERE seq = pos",
                    )
                    .bind(run.as_str())
                    .bind(exec.as_str())
                    .fetch_one(self.read())
                    .await?;
                    Ok(u64::try_from(last).unwrap_or(0))
                }

                async fn run_events(&self, run: &RunId) -> StoreResult<Vec<(ExecutionId, SessionEvent)>> {
                    self.events_of(run, None).await
                }

                async fn run_events_of_kind(
                    &self,
                    run: &RunId,
                    kind: &str,
                ) -> StoreResult<Vec<(ExecutionId, SessionEvent)>> {
                    self.events_of(run, Some(kind)).await
                }
            }

            #[async_trait]
            impl Store for $store {
                async fn ping(&self) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(PROBE_WRITE)
                        .bind(Timestamp::now().unix_millis())
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn settled(&self) {
                    self.settle_reads().await;
                }

                fn broken(&self) -> Option<String> {
                    self.writer_broken()
                }

                async fn close(&self) {
                    self.close_pools().await;
                }

                fn write_counts(&self) -> WriteCounts {
                    self.write_counters().snapshot()
                }
            }

        };
    };
}

pub(crate) use event_store;
