//! [`IntegrationStore`](crate::IntegrationStore), written once (see [`crate::sql`]).

macro_rules! integration_store {
    ($store:ty) => {
        const _: () = {
            use $crate::integrations::{INTEGRATION_COLUMNS, THREAD_COLUMNS};
            use $crate::sql::Dialect as _;
            use $crate::{
                IntegrationRecord, IntegrationStore, IntegrationThread, StoreError, StoreResult,
            };
            use async_trait::async_trait;
            use sqlx::AssertSqlSafe;

            fn unique_violation(e: &sqlx::Error) -> bool {
                matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
            }

            fn name_taken(name: &str) -> StoreError {
                StoreError::Conflict(format!("an integration named `{name}` already exists"))
            }

            #[async_trait]
            impl IntegrationStore for $store {
                async fn create_integration(&self, i: IntegrationRecord) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO integrations ({INTEGRATION_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    )))
                    .bind(&i.id)
                    .bind(i.team_id)
                    .bind(&i.kind)
                    .bind(&i.name)
                    .bind(&i.settings)
                    .bind(&i.secret_nonce)
                    .bind(&i.secret_ciphertext)
                    .bind(i.created_by)
                    .bind(i.created_at)
                    .bind(i.updated_at)
                    .execute(&mut *db)
                    .await;
                    db.commit().await?;
                    match done {
                        Ok(_) => Ok(()),
                        Err(e) if unique_violation(&e) => Err(name_taken(&i.name)),
                        Err(e) => Err(e.into()),
                    }
                }

                async fn integration(
                    &self,
                    team_id: i64,
                    id_or_name: &str,
                ) -> StoreResult<IntegrationRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {INTEGRATION_COLUMNS} FROM integrations \
                         WHERE team_id = $1 AND (id = $2 OR name = $3) ORDER BY (id = $4) DESC LIMIT 1"
                    )))
                    .bind(team_id)
                    .bind(id_or_name)
                    .bind(id_or_name)
                    .bind(id_or_name)
                    .fetch_one(self.read())
                    .await?;
                    integration_from_row(&row)
                }

                async fn integration_by_id(&self, id: &str) -> StoreResult<IntegrationRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = $1"
                    )))
                    .bind(id)
                    .fetch_one(self.read())
                    .await?;
                    integration_from_row(&row)
                }

                async fn list_integrations(&self, team_id: i64) -> StoreResult<Vec<IntegrationRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE team_id = $1 ORDER BY name"
                    )))
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(integration_from_row).collect()
                }

                async fn update_integration(&self, i: IntegrationRecord) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "UPDATE integrations SET name = $1, settings = $2, secret_nonce = $3, \
                         secret_ciphertext = $4, updated_at = $5 WHERE id = $6 AND team_id = $7",
                    )
                    .bind(&i.name)
                    .bind(&i.settings)
                    .bind(&i.secret_nonce)
                    .bind(&i.secret_ciphertext)
                    .bind(i.updated_at)
                    .bind(&i.id)
                    .bind(i.team_id)
                    .execute(&mut *db)
                    .await;
                    db.commit().await?;
                    match done {
                        Ok(r) if r.rows_affected() == 0 => Err(StoreError::NotFound),
                        Ok(_) => Ok(()),
                        Err(e) if unique_violation(&e) => Err(name_taken(&i.name)),
                        Err(e) => Err(e.into()),
                    }
                }

                async fn delete_integration(&self, team_id: i64, id: &str) -> StoreResult<()> {
                    let mut tx = self.transaction().await?;
                    for table in ["integration_deliveries", "integration_threads"] {
                        sqlx::query(AssertSqlSafe(format!(
                            "DELETE FROM {table} WHERE integration_id IN \
                             (SELECT id FROM integrations WHERE id = $1 AND team_id = $2)"
                        )))
                        .bind(id)
                        .bind(team_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let done = sqlx::query("DELETE FROM integrations WHERE id = $1 AND team_id = $2")
                        .bind(id)
                        .bind(team_id)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn claim_delivery(
                    &self,
                    integration_id: &str,
                    keys: &[String],
                    at: i64,
                ) -> StoreResult<bool> {
                    let mut tx = self.transaction().await?;
                    for key in keys {
                        // `ON CONFLICT DO NOTHING`: a replay is an answer, not an
                        // error that would abort a PostgreSQL transaction.
                        let done = sqlx::query(
                            "INSERT INTO integration_deliveries (integration_id, delivery_key, received_at) \
                             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        )
                        .bind(integration_id)
                        .bind(key)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() == 0 {
                            tx.rollback().await?;
                            return Ok(false);
                        }
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn release_delivery(&self, integration_id: &str, keys: &[String]) -> StoreResult<()> {
                    for key in keys {
                        let mut db = self.write().await?;
                        sqlx::query(
                            "DELETE FROM integration_deliveries WHERE integration_id = $1 AND delivery_key = $2",
                        )
                        .bind(integration_id)
                        .bind(key)
                        .execute(&mut *db)
                        .await?;
                        db.commit().await?;
                    }
                    Ok(())
                }

                async fn prune_deliveries(&self, before: i64) -> StoreResult<u64> {
                    let mut db = self.write().await?;
                    let done = sqlx::query("DELETE FROM integration_deliveries WHERE received_at < $1")
                        .bind(before)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(done.rows_affected())
                }

                async fn add_integration_thread(&self, t: &IntegrationThread) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO integration_threads ({THREAD_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    )))
                    .bind(&t.run_id)
                    .bind(&t.integration_id)
                    .bind(t.team_id)
                    .bind(&t.thread_key)
                    .bind(&t.reply_to)
                    .bind(&t.status_ref)
                    .bind(&t.reported)
                    .bind(t.lease_until)
                    .bind(t.created_at)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn thread_run(
                    &self,
                    integration_id: &str,
                    thread_key: &str,
                ) -> StoreResult<Option<IntegrationThread>> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {THREAD_COLUMNS} FROM integration_threads \
                         WHERE integration_id = $1 AND thread_key = $2 \
                         ORDER BY created_at DESC, run_id DESC LIMIT 1"
                    )))
                    .bind(integration_id)
                    .bind(thread_key)
                    .fetch_optional(self.read())
                    .await?;
                    row.as_ref().map(thread_from_row).transpose()
                }

                async fn due_integration_threads(
                    &self,
                    now: i64,
                    all: bool,
                    limit: i64,
                ) -> StoreResult<Vec<(IntegrationThread, String)>> {
                    // The same terms as the partial index `integration_threads_open`.
                    let open = if all {
                        ""
                    } else {
                        "AND (t.reported IS NULL OR t.reported NOT IN \
                         ('SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED'))"
                    };
                    let columns = THREAD_COLUMNS
                        .split(", ")
                        .map(|c| format!("t.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {columns}, r.state AS run_state FROM integration_threads t \
                         JOIN runs r ON r.id = t.run_id \
                         WHERE t.lease_until <= $1 AND (t.reported IS NULL OR t.reported <> r.state) \
                         {open} ORDER BY t.created_at LIMIT $2"
                    )))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter()
                        .map(|row| Ok((thread_from_row(row)?, row.try_get("run_state")?)))
                        .collect()
                }

                async fn reopen_integration_thread(&self, run_id: &str) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query("UPDATE integration_threads SET reported = NULL WHERE run_id = $1")
                        .bind(run_id)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn take_integration_thread(
                    &self,
                    run_id: &str,
                    seen_lease: i64,
                    lease_until: i64,
                ) -> StoreResult<bool> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "UPDATE integration_threads SET lease_until = $1 \
                         WHERE run_id = $2 AND lease_until = $3",
                    )
                    .bind(lease_until)
                    .bind(run_id)
                    .bind(seen_lease)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn record_integration_reply(
                    &self,
                    run_id: &str,
                    reported: &str,
                    status_ref: Option<&str>,
                ) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(
                        "UPDATE integration_threads SET reported = $1, \
                         status_ref = COALESCE($2, status_ref), lease_until = 0 WHERE run_id = $3",
                    )
                    .bind(reported)
                    .bind(status_ref)
                    .bind(run_id)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(())
                }
            }
        };
    };
}

pub(crate) use integration_store;
