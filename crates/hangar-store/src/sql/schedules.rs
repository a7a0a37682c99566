//! [`ScheduleStore`](crate::ScheduleStore), written once (see [`crate::sql`]).

macro_rules! schedule_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            type Db = <$store as $crate::sql::Dialect>::Db;
            type DbRow = <Db as sqlx::Database>::Row;
            use async_trait::async_trait;
            use $crate::sql::RUN_COLUMNS;
            use $crate::*;
            use hangar_protocol::AgentConfig;
            use sqlx::{AssertSqlSafe, Row};

            const SCHEDULE_COLUMNS: &str = "id, team_id, name, cron_schedule, timezone, enabled, prompt, \
                config, created_by, updated_by, created_at, updated_at, last_slot, last_ran, next_run, \
                last_spawn_error";

            fn config_to_text(config: &Option<AgentConfig>) -> StoreResult<Option<String>> {
                config
                    .as_ref()
                    .map(|c| {
                        serde_json::to_string(c)
                            .map_err(|e| StoreError::Corrupt(format!("schedule config: {e}")))
                    })
                    .transpose()
            }

            fn schedule_from_row(row: &DbRow) -> StoreResult<ScheduleRecord> {
                let config: Option<String> = row.try_get("config")?;
                Ok(ScheduleRecord {
                    id: row.try_get("id")?,
                    team_id: row.try_get("team_id")?,
                    name: row.try_get("name")?,
                    cron_schedule: row.try_get("cron_schedule")?,
                    timezone: row.try_get("timezone")?,
                    enabled: flag(row, "enabled")?,
                    prompt: row.try_get("prompt")?,
                    config: config
                        .map(|c| serde_json::from_str(&c))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("schedule config: {e}")))?,
                    created_by: row.try_get("created_by")?,
                    updated_by: row.try_get("updated_by")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    last_slot: row.try_get("last_slot")?,
                    last_ran: row.try_get("last_ran")?,
                    next_run: row.try_get("next_run")?,
                    last_spawn_error: row.try_get("last_spawn_error")?,
                })
            }

            #[async_trait]
            impl ScheduleStore for $store {
                async fn create_schedule(&self, s: NewSchedule) -> StoreResult<ScheduleRecord> {
                    let mut db = self.write().await?;
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO schedules (id, team_id, name, cron_schedule, timezone, enabled, prompt, \
                         config, created_by, updated_by, created_at, updated_at, last_slot, next_run) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $10, $10, $11) \
                         RETURNING {SCHEDULE_COLUMNS}"
                    )))
                    .bind(&s.id)
                    .bind(s.team_id)
                    .bind(&s.name)
                    .bind(&s.cron_schedule)
                    .bind(&s.timezone)
                    .bind(s.enabled)
                    .bind(&s.prompt)
                    .bind(config_to_text(&s.config)?)
                    .bind(s.created_by)
                    .bind(s.created_at)
                    .bind(s.next_run)
                    // Read to the end: on PostgreSQL (autocommit) an error reported after
                    // the row (a failed commit) would be lost by stopping at the first row.
                    .fetch_all(&mut *db)
                    .await?
                    .pop()
                    .ok_or(StoreError::NotFound)?;
                    db.commit().await?;
                    schedule_from_row(&row)
                }

                async fn schedule(&self, team_id: i64, id: &str) -> StoreResult<ScheduleRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1 AND team_id = $2"
                    )))
                    .bind(id)
                    .bind(team_id)
                    .fetch_one(self.read())
                    .await?;
                    schedule_from_row(&row)
                }

                async fn list_schedules(&self, team_id: i64) -> StoreResult<Vec<ScheduleRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE team_id = $1 ORDER BY name, id"
                    )))
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(schedule_from_row).collect()
                }

                async fn update_schedule(
                    &self,
                    team_id: i64,
                    id: &str,
                    u: ScheduleUpdate,
                ) -> StoreResult<ScheduleRecord> {
                    let mut db = self.write().await?;
                    // SET expressions see the row as it was, so the floor test compares
                    // the old definition with the new one.
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE schedules SET \
                         last_slot = CASE WHEN ($4 AND NOT enabled) OR cron_schedule <> $2 \
                             OR COALESCE(timezone, '') <> COALESCE($3, '') \
                             THEN CASE WHEN last_slot > $9 THEN last_slot ELSE $9 END ELSE last_slot END, \
                         name = $1, cron_schedule = $2, timezone = $3, enabled = $4, prompt = $5, \
                         config = $6, updated_by = $7, next_run = $8, updated_at = $9 \
                         WHERE id = $10 AND team_id = $11 RETURNING {SCHEDULE_COLUMNS}"
                    )))
                    .bind(&u.name)
                    .bind(&u.cron_schedule)
                    .bind(&u.timezone)
                    .bind(u.enabled)
                    .bind(&u.prompt)
                    .bind(config_to_text(&u.config)?)
                    .bind(u.updated_by)
                    .bind(u.next_run)
                    .bind(u.updated_at)
                    .bind(id)
                    .bind(team_id)
                    // Read to the end: on PostgreSQL (autocommit) an error reported after
                    // the row (a failed commit) would be lost by stopping at the first row.
                    .fetch_all(&mut *db)
                    .await?
                    .pop()
                    .ok_or(StoreError::NotFound)?;
                    db.commit().await?;
                    schedule_from_row(&row)
                }

                async fn set_schedule_enabled(
                    &self,
                    team_id: i64,
                    id: &str,
                    enabled: bool,
                    next_run: Option<i64>,
                    by: Option<i64>,
                    at: i64,
                ) -> StoreResult<ScheduleRecord> {
                    let mut db = self.write().await?;
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE schedules SET \
                         last_slot = CASE WHEN $1 AND NOT enabled \
                             THEN CASE WHEN last_slot > $4 THEN last_slot ELSE $4 END ELSE last_slot END, \
                         enabled = $1, next_run = $2, updated_by = $3, updated_at = $4 \
                         WHERE id = $5 AND team_id = $6 RETURNING {SCHEDULE_COLUMNS}"
                    )))
                    .bind(enabled)
                    .bind(next_run)
                    .bind(by)
                    .bind(at)
                    .bind(id)
                    .bind(team_id)
                    // Read to the end: on PostgreSQL (autocommit) an error reported after
                    // the row (a failed commit) would be lost by stopping at the first row.
                    .fetch_all(&mut *db)
                    .await?
                    .pop()
                    .ok_or(StoreError::NotFound)?;
                    db.commit().await?;
                    schedule_from_row(&row)
                }

                async fn delete_schedule(&self, team_id: i64, id: &str) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query("DELETE FROM schedules WHERE id = $1 AND team_id = $2")
                        .bind(id)
                        .bind(team_id)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn due_schedules(&self, now: i64, limit: i64) -> StoreResult<Vec<ScheduleRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {SCHEDULE_COLUMNS} FROM schedules \
                         WHERE enabled AND next_run IS NOT NULL AND next_run <= $1 \
                         ORDER BY next_run, id LIMIT $2"
                    )))
                    .bind(now)
                    .bind(limit)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(schedule_from_row).collect()
                }

                async fn claim_schedule_slot(
                    &self,
                    id: &str,
                    slot: i64,
                    next_run: Option<i64>,
                    action: SlotAction,
                    at: i64,
                ) -> StoreResult<SlotClaim> {
                    let (last_ran, set_error, error) = match &action {
                        SlotAction::Run(_) => (Some(at), true, None),
                        SlotAction::Skip => (None, false, None),
                        SlotAction::Fail(message) => (None, true, Some(message.clone())),
                    };
                    // The claim: a concurrent claimer of the same row waits for this
                    // transaction, then re-checks `last_slot < slot` against the new floor.
                    let mut tx = self.transaction().await?;
                    let claimed = sqlx::query(
                        "UPDATE schedules SET last_slot = $1, next_run = $2, \
                         last_ran = COALESCE($3, last_ran), \
                         last_spawn_error = CASE WHEN $4 THEN $5 ELSE last_spawn_error END \
                         WHERE id = $6 AND enabled AND last_slot < $1 \
                         RETURNING name, cron_schedule",
                    )
                    .bind(slot)
                    .bind(next_run)
                    .bind(last_ran)
                    .bind(set_error)
                    .bind(error)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(claimed) = claimed else {
                        tx.rollback().await?;
                        return Ok(SlotClaim::Taken);
                    };
                    let run = match action {
                        SlotAction::Run(run) => {
                            let name: String = claimed.try_get("name")?;
                            let cron: String = claimed.try_get("cron_schedule")?;
                            let query = sqlx::query(AssertSqlSafe(format!(
                                "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
                                 execution_location, worker_host, config, created_at, updated_at, \
                                 schedule_id, schedule_name, schedule_cron) \
                                 VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                                 RETURNING {RUN_COLUMNS}"
                            )));
                            let row = $crate::sql::bind_new_run(query, &run)?
                            .bind(run.created_at)
                            .bind(id)
                            .bind(name)
                            .bind(cron)
                            .fetch_one(&mut *tx)
                            .await?;
                            Some(Box::new(run_from_row(&row)?))
                        }
                        SlotAction::Skip | SlotAction::Fail(_) => None,
                    };
                    tx.commit().await?;
                    Ok(SlotClaim::Claimed(run))
                }
            }

        };
    };
}

pub(crate) use schedule_store;
