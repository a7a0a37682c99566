//! [`WebhookStore`](crate::WebhookStore), written once (see [`crate::sql`]).

macro_rules! webhook_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            use $crate::webhooks::{DELIVERY_COLUMNS, WEBHOOK_COLUMNS};
            use $crate::{
                NewWebhookDelivery, StoreError, StoreResult, WebhookAttempt, WebhookDeliveryRecord,
                WebhookRecord, WebhookStore,
            };
            use async_trait::async_trait;
            use sqlx::AssertSqlSafe;

            #[async_trait]
            impl WebhookStore for $store {
                async fn create_webhook(&self, w: WebhookRecord) -> StoreResult<WebhookRecord> {
                    let mut db = self.write().await?;
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, \
                         COALESCE((SELECT MAX(sequence) FROM lifecycle_events WHERE team_id = $7), 0), $8, $9"
                    )))
                    .bind(&w.id)
                    .bind(w.team_id)
                    .bind(&w.url)
                    .bind(&w.event_types)
                    .bind(&w.secret_nonce)
                    .bind(&w.secret_ciphertext)
                    .bind(w.team_id)
                    .bind(w.created_by)
                    .bind(w.created_at)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    self.webhook(w.team_id, &w.id).await
                }

                async fn webhook(&self, team_id: i64, id: &str) -> StoreResult<WebhookRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE team_id = $1 AND id = $2"
                    )))
                    .bind(team_id)
                    .bind(id)
                    .fetch_one(self.read())
                    .await?;
                    webhook_from_row(&row)
                }

                async fn list_webhooks(&self, team_id: i64) -> StoreResult<Vec<WebhookRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE team_id = $1 ORDER BY created_at, id"
                    )))
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(webhook_from_row).collect()
                }

                async fn all_webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, id"
                    )))
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(webhook_from_row).collect()
                }

                async fn delete_webhook(&self, team_id: i64, id: &str) -> StoreResult<()> {
                    let mut tx = self.transaction().await?;
                    sqlx::query(
                        "DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND team_id = $2",
                    )
                    .bind(id)
                    .bind(team_id)
                    .execute(&mut *tx)
                    .await?;
                    let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND team_id = $2")
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

                async fn enqueue_webhook_deliveries(
                    &self,
                    webhook_id: &str,
                    from: i64,
                    to: i64,
                    deliveries: &[NewWebhookDelivery],
                ) -> StoreResult<bool> {
                    let mut tx = self.transaction().await?;
                    let moved = sqlx::query(
                        "UPDATE webhooks SET event_cursor = $1 WHERE id = $2 AND event_cursor = $3",
                    )
                    .bind(to)
                    .bind(webhook_id)
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
                    if moved.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    for d in deliveries {
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) \
                             SELECT $1, id, team_id, $2, $3, $4, 'pending', 0, CAST(NULL AS BIGINT), CAST(NULL AS TEXT), $5, $6, $7, $8 \
                             FROM webhooks WHERE id = $9 ON CONFLICT DO NOTHING"
                        )))
                        .bind(&d.id)
                        .bind(&d.event_type)
                        .bind(d.sequence)
                        .bind(&d.payload)
                        .bind(d.created_at)
                        .bind(d.retry_until)
                        .bind(d.created_at)
                        .bind(d.created_at)
                        .bind(webhook_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }

                async fn due_webhook_deliveries(
                    &self,
                    now: i64,
                    limit: i64,
                ) -> StoreResult<Vec<WebhookDeliveryRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                         WHERE state = 'pending' AND next_attempt_at <= $1 \
                         ORDER BY next_attempt_at, sequence LIMIT $2"
                    )))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(delivery_from_row).collect()
                }

                async fn take_webhook_delivery(
                    &self,
                    id: &str,
                    seen_next_attempt_at: i64,
                    lease_until: i64,
                ) -> StoreResult<bool> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "UPDATE webhook_deliveries SET next_attempt_at = $1 \
                         WHERE id = $2 AND state = 'pending' AND next_attempt_at = $3",
                    )
                    .bind(lease_until)
                    .bind(id)
                    .bind(seen_next_attempt_at)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn record_webhook_attempt(
                    &self,
                    id: &str,
                    a: &WebhookAttempt,
                ) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(
                        "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
                         last_status = $2, last_error = $3, next_attempt_at = $4, updated_at = $5 \
                         WHERE id = $6",
                    )
                    .bind(&a.state)
                    .bind(a.status)
                    .bind(&a.error)
                    .bind(a.next_attempt_at)
                    .bind(a.at)
                    .bind(id)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn list_webhook_deliveries(
                    &self,
                    team_id: i64,
                    webhook_id: &str,
                    limit: i64,
                ) -> StoreResult<Vec<WebhookDeliveryRecord>> {
                    self.webhook(team_id, webhook_id).await?;
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
                         WHERE webhook_id = $1 AND team_id = $2 \
                         ORDER BY created_at DESC, sequence DESC LIMIT $3"
                    )))
                    .bind(webhook_id)
                    .bind(team_id)
                    .bind(limit)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(delivery_from_row).collect()
                }

                async fn redeliver_webhook_delivery(
                    &self,
                    team_id: i64,
                    webhook_id: &str,
                    delivery_id: &str,
                    now: i64,
                    retry_until: i64,
                ) -> StoreResult<WebhookDeliveryRecord> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, \
                         retry_until = $2, updated_at = $3 \
                         WHERE id = $4 AND webhook_id = $5 AND team_id = $6",
                    )
                    .bind(now)
                    .bind(retry_until)
                    .bind(now)
                    .bind(delivery_id)
                    .bind(webhook_id)
                    .bind(team_id)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
                    )))
                    .bind(delivery_id)
                    .fetch_one(self.read())
                    .await?;
                    delivery_from_row(&row)
                }

                async fn enqueue_webhook_ping(
                    &self,
                    team_id: i64,
                    webhook_id: &str,
                    d: &NewWebhookDelivery,
                ) -> StoreResult<WebhookDeliveryRecord> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) \
                         SELECT $1, id, team_id, $2, \
                         COALESCE((SELECT MIN(sequence) FROM webhook_deliveries \
                         WHERE webhook_id = $3 AND sequence < 0), 0) - 1, \
                         $4, 'pending', 0, CAST(NULL AS BIGINT), CAST(NULL AS TEXT), $5, $6, $7, $8 \
                         FROM webhooks WHERE id = $9 AND team_id = $10"
                    )))
                    .bind(&d.id)
                    .bind(&d.event_type)
                    .bind(webhook_id)
                    .bind(&d.payload)
                    .bind(d.created_at)
                    .bind(d.retry_until)
                    .bind(d.created_at)
                    .bind(d.created_at)
                    .bind(webhook_id)
                    .bind(team_id)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
                    )))
                    .bind(&d.id)
                    .fetch_one(self.read())
                    .await?;
                    delivery_from_row(&row)
                }
            }
        };
    };
}

pub(crate) use webhook_store;
