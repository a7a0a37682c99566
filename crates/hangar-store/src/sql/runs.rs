//! [`RunStore`](crate::RunStore): runs, their executions, leases and follow-ups,
//! written once (see [`crate::sql`]).

macro_rules! run_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            use $crate::*;
            use async_trait::async_trait;
            use hangar_protocol::{ExecutionId, RunId, WorkerId};
            use $crate::sql::{EXECUTION_COLUMNS, RUN_COLUMNS};
            use sqlx::{AssertSqlSafe, Row};

            /// The states no change leaves.
            const TERMINAL_STATES: &str = "('SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED')";

            /// The team's run `id`, its row locked until the transaction ends
            /// (`Dialect::FOR_UPDATE`); `None` when there is no such run.
            async fn locked_run(
                tx: &mut <$store as $crate::sql::Dialect>::WriteConn,
                team_id: i64,
                id: &RunId,
            ) -> StoreResult<Option<RunRecord>> {
                let lock = <$store as $crate::sql::Dialect>::FOR_UPDATE;
                let row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND team_id = $2{lock}"
                )))
                .bind(id.as_str())
                .bind(team_id)
                .fetch_optional(&mut *tx)
                .await?;
                row.as_ref().map(run_from_row).transpose()
            }

            impl $store {
                /// Explains why a conditional run update matched no row.
                async fn why_not(&self, run: &RunId, exec: &ExecutionId) -> StoreResult<Transition> {
                    let row = sqlx::query("SELECT state, current_execution_id FROM runs WHERE id = $1")
                        .bind(run.as_str())
                        .fetch_optional(self.read())
                        .await?;
                    let Some(row) = row else {
                        return Err(StoreError::NotFound);
                    };
                    let state = parse_state(&row.try_get::<String, _>("state")?)?;
                    let current: Option<String> = row.try_get("current_execution_id")?;
                    Ok(if current.as_deref() != Some(exec.as_str()) {
                        Transition::Stale
                    } else if state.is_terminal() {
                        Transition::AlreadyTerminal
                    } else {
                        Transition::Unchanged
                    })
                }
            }

            #[async_trait]
            impl RunStore for $store {
                async fn create_run(&self, run: NewRun) -> StoreResult<RunRecord> {
                    let query = sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
                         execution_location, worker_host, config, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $7, $8, $9, $10, $10) RETURNING {RUN_COLUMNS}"
                    )));
                    let mut db = self.write().await?;
                    let row = $crate::sql::bind_new_run(query, &run)?
                    // Read to the end: on PostgreSQL (autocommit) an error reported after
                    // the row (a failed commit) would be lost by stopping at the first row.
                    .fetch_all(&mut *db)
                    .await?
                    .pop()
                    .ok_or(StoreError::NotFound)?;
                    db.commit().await?;
                    run_from_row(&row)
                }

                async fn create_local_run(&self, run: NewRun, exec: NewExecution) -> StoreResult<RunRecord> {
                    let mut tx = self.transaction().await?;
                    let query = sqlx::query(
                        "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
                         execution_location, worker_host, config, created_at, updated_at, started_at, \
                         current_execution_id, sandbox_running) \
                         VALUES ($1, $2, $3, $4, $5, 'INPROGRESS', $6, $7, $8, $9, $10, $10, $10, $11, TRUE)",
                    );
                    $crate::sql::bind_new_run(query, &run)?
                    .bind(exec.id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO executions (id, run_id, worker_id, state, token_hash, created_at, updated_at, \
                         issuer_key_id) VALUES ($1, $2, $3, 'started', $4, $5, $5, $6)",
                    )
                    .bind(exec.id.as_str())
                    .bind(run.id.as_str())
                    .bind(exec.worker_id.as_str())
                    .bind(&exec.token_hash)
                    .bind(exec.created_at)
                    .bind(&exec.issuer_key_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    self.run_any_team(&run.id).await
                }

                async fn create_assigned_run(
                    &self,
                    run: NewRun,
                    exec: NewExecution,
                ) -> StoreResult<RunRecord> {
                    let mut tx = self.transaction().await?;
                    let query = sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
                         execution_location, worker_host, config, created_at, updated_at, \
                         current_execution_id) \
                         VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $7, $8, $9, $10, $10, $11) \
                         RETURNING {RUN_COLUMNS}"
                    )));
                    let row = $crate::sql::bind_new_run(query, &run)?
                    .bind(exec.id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    let query = sqlx::query($crate::sql::INSERT_ASSIGNED_EXECUTION);
                    $crate::sql::bind_assigned_execution(query, &exec)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    run_from_row(&row)
                }

                async fn run(&self, team_id: i64, id: &RunId) -> StoreResult<RunRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND team_id = $2"
                    )))
                    .bind(id.as_str())
                    .bind(team_id)
                    .fetch_one(self.read())
                    .await?;
                    run_from_row(&row)
                }

                async fn run_any_team(&self, id: &RunId) -> StoreResult<RunRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
                    )))
                    .bind(id.as_str())
                    .fetch_one(self.read())
                    .await?;
                    run_from_row(&row)
                }

                async fn list_runs(&self, team_id: i64, query: &RunQuery) -> StoreResult<RunPage> {
                    let json = <$store as $crate::sql::Dialect>::JSON;
                    let (sql, values) = $crate::records::list_runs_query(team_id, query, json);
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for v in values {
                        q = match v {
                            $crate::records::FilterValue::Text(t) => q.bind(t),
                            $crate::records::FilterValue::Int(i) => q.bind(i),
                        };
                    }
                    let rows = q.fetch_all(self.read()).await?;
                    let runs = rows.iter().map(run_from_row).collect::<StoreResult<Vec<_>>>()?;
                    Ok($crate::records::run_page(query, runs))
                }

                async fn queued_runs(&self, limit: i64) -> StoreResult<Vec<RunRecord>> {
                    // PostgreSQL skips runs another replica is assigning at this moment
                    // (`Dialect::SKIP_LOCKED`); the row locks end with this statement, and
                    // `assign` stays the conditional update that decides.
                    let rows = sqlx::query(AssertSqlSafe($crate::sql::queued_runs::<$store>()))
                    .bind(limit)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(run_from_row).collect()
                }

                async fn assign(&self, exec: NewExecution) -> StoreResult<Transition> {
                    let mut tx = self.transaction().await?;
                    let updated = sqlx::query(
                        "UPDATE runs SET current_execution_id = $1, updated_at = $2 \
                         WHERE id = $3 AND state = 'QUEUED' AND current_execution_id IS NULL",
                    )
                    .bind(exec.id.as_str())
                    .bind(exec.created_at)
                    .bind(exec.run_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        tx.rollback().await?;
                        return Ok(Transition::Stale);
                    }
                    let query = sqlx::query($crate::sql::INSERT_ASSIGNED_EXECUTION);
                    $crate::sql::bind_assigned_execution(query, &exec)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Transition::Applied)
                }

                async fn claim(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition> {
                    let mut tx = self.transaction().await?;
                    let done = sqlx::query(
                        "UPDATE runs SET state = 'CLAIMED', updated_at = $1 \
                         WHERE id = $2 AND current_execution_id = $3 AND state IN ('QUEUED', 'PENDING')",
                    )
                    .bind(at)
                    .bind(run.as_str())
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE executions SET state = 'claimed', updated_at = $1 WHERE id = $2 AND state = 'assigned'",
                    )
                    .bind(at)
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    if done.rows_affected() == 1 {
                        Ok(Transition::Applied)
                    } else {
                        self.why_not(run, exec).await
                    }
                }

                async fn reject(
                    &self,
                    run: &RunId,
                    exec: &ExecutionId,
                    reason: &str,
                    at: i64,
                ) -> StoreResult<Transition> {
                    let mut tx = self.transaction().await?;
                    // Lock order everywhere: the run row, then its executions.
                    let done = sqlx::query(
                        "UPDATE runs SET current_execution_id = NULL, updated_at = $1, \
                         state = CASE WHEN state = 'CLAIMED' THEN 'QUEUED' ELSE state END \
                         WHERE id = $2 AND current_execution_id = $3 AND state IN ('QUEUED', 'PENDING', 'CLAIMED')",
                    )
                    .bind(at)
                    .bind(run.as_str())
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE executions SET state = 'ended', ended_at = $1, updated_at = $1, message = $2 \
                         WHERE id = $3 AND ended_at IS NULL",
                    )
                    .bind(at)
                    .bind(reason)
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    if done.rows_affected() == 1 {
                        Ok(Transition::Applied)
                    } else {
                        self.why_not(run, exec).await
                    }
                }

                async fn start(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition> {
                    let mut tx = self.transaction().await?;
                    // Lock order everywhere: the run row, then its executions.
                    let done = sqlx::query(
                        "UPDATE runs SET state = 'INPROGRESS', started_at = COALESCE(started_at, $1), \
                         sandbox_running = TRUE, updated_at = $1 \
                         WHERE id = $2 AND current_execution_id = $3 AND state IN ('QUEUED', 'PENDING', 'CLAIMED')",
                    )
                    .bind(at)
                    .bind(run.as_str())
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "UPDATE executions SET state = 'started', updated_at = $1 \
                         WHERE id = $2 AND state IN ('assigned', 'claimed')",
                    )
                    .bind(at)
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    if done.rows_affected() == 1 {
                        Ok(Transition::Applied)
                    } else {
                        self.why_not(run, exec).await
                    }
                }

                async fn report_outcome(
                    &self,
                    run: &RunId,
                    exec: &ExecutionId,
                    outcome: &Outcome,
                ) -> StoreResult<Transition> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE runs SET state = $1, status_message = $2, error_code = $3, updated_at = $4 \
                         WHERE id = $5 AND current_execution_id = $6 AND state NOT IN {TERMINAL_STATES}"
                    )))
                    .bind(outcome.state.as_str())
                    .bind(&outcome.message)
                    .bind(&outcome.error_code)
                    .bind(Timestamp::now().unix_millis())
                    .bind(run.as_str())
                    .bind(exec.as_str())
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    if done.rows_affected() == 1 {
                        Ok(Transition::Applied)
                    } else {
                        self.why_not(run, exec).await
                    }
                }

                async fn finish_execution(
                    &self,
                    run: &RunId,
                    exec: &ExecutionId,
                    end: &ExecutionEnd,
                ) -> StoreResult<Transition> {
                    let lock = <$store as $crate::sql::Dialect>::FOR_UPDATE;
                    let mut tx = self.transaction().await?;
                    // Lock order everywhere: the run row, then its executions. The lock
                    // orders this report against a concurrent cancel or outcome arriving
                    // through another replica.
                    let row =
                        sqlx::query(AssertSqlSafe(format!(
                            "SELECT state, current_execution_id FROM runs WHERE id = $1{lock}"
                        )))
                            .bind(run.as_str())
                            .fetch_optional(&mut *tx)
                            .await?;
                    let ended = sqlx::query(
                        "UPDATE executions SET state = 'ended', ended_at = $1, updated_at = $1, exit_code = $2, \
                         failure_reason = COALESCE(failure_reason, $3), message = $4 WHERE id = $5 AND run_id = $6 AND ended_at IS NULL",
                    )
                    .bind(end.at)
                    .bind(end.exit_code)
                    .bind(&end.failure_reason)
                    .bind(&end.outcome.message)
                    .bind(exec.as_str())
                    .bind(run.as_str())
                    .execute(&mut *tx)
                    .await?;
                    let Some(row) = row.filter(|_| ended.rows_affected() == 1) else {
                        tx.rollback().await?;
                        // Unknown or already ended: a duplicate or stale report.
                        let known = sqlx::query("SELECT 1 FROM executions WHERE id = $1 AND run_id = $2")
                            .bind(exec.as_str())
                            .bind(run.as_str())
                            .fetch_optional(self.read())
                            .await?;
                        return Ok(if known.is_some() {
                            Transition::Unchanged
                        } else {
                            Transition::Stale
                        });
                    };
                    let state = parse_state(&row.try_get::<String, _>("state")?)?;
                    let current: Option<String> = row.try_get("current_execution_id")?;
                    let transition = if current.as_deref() != Some(exec.as_str()) {
                        Transition::Stale
                    } else if state.is_terminal() {
                        sqlx::query("UPDATE runs SET sandbox_running = FALSE, updated_at = $1 WHERE id = $2")
                            .bind(end.at)
                            .bind(run.as_str())
                            .execute(&mut *tx)
                            .await?;
                        Transition::AlreadyTerminal
                    } else {
                        sqlx::query(
                            "UPDATE runs SET sandbox_running = FALSE, state = $1, status_message = $2, \
                             error_code = $3, updated_at = $4 WHERE id = $5",
                        )
                        .bind(end.outcome.state.as_str())
                        .bind(&end.outcome.message)
                        .bind(&end.outcome.error_code)
                        .bind(end.at)
                        .bind(run.as_str())
                        .execute(&mut *tx)
                        .await?;
                        Transition::Applied
                    };
                    tx.commit().await?;
                    Ok(transition)
                }

                async fn cancel_run(
                    &self,
                    team_id: i64,
                    id: &RunId,
                    message: &str,
                    at: i64,
                ) -> StoreResult<RunRecord> {
                    let mut tx = self.transaction().await?;
                    // The row lock orders this cancel against a concurrent outcome from
                    // another replica: whichever commits second sees the other's state.
                    let Some(before) = locked_run(&mut tx, team_id, id).await? else {
                        tx.rollback().await?;
                        return Err(StoreError::NotFound);
                    };
                    if before.state.is_terminal() {
                        // Release the row lock now rather than when the pool next uses
                        // this connection.
                        tx.rollback().await?;
                        return Err(StoreError::Conflict(format!(
                            "run {} already ended in state {}",
                            id, before.state
                        )));
                    }
                    sqlx::query(
                        "UPDATE runs SET state = 'CANCELLED', status_message = $1, updated_at = $2 WHERE id = $3",
                    )
                    .bind(message)
                    .bind(at)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    // An assignment that was never claimed has no sandbox: end it now.
                    sqlx::query(
                        "UPDATE executions SET state = 'ended', ended_at = $1, updated_at = $1, message = $2 \
                         WHERE run_id = $3 AND ended_at IS NULL AND state = 'assigned'",
                    )
                    .bind(at)
                    .bind(message)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(before)
                }

                async fn add_usage(
                    &self,
                    run: &RunId,
                    prompt: u64,
                    completion: u64,
                    cost: f64,
                ) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(
                        "UPDATE runs SET prompt_tokens = prompt_tokens + $1, \
                         completion_tokens = completion_tokens + $2, inference_cost = inference_cost + $3 \
                         WHERE id = $4",
                    )
                    .bind(i64::try_from(prompt).unwrap_or(i64::MAX))
                    .bind(i64::try_from(completion).unwrap_or(i64::MAX))
                    .bind(cost)
                    .bind(run.as_str())
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn execution(&self, id: &ExecutionId) -> StoreResult<ExecutionRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"
                    )))
                    .bind(id.as_str())
                    .fetch_one(self.read())
                    .await?;
                    execution_from_row(&row)
                }

                async fn execution_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<ExecutionRecord>> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE token_hash = $1"
                    )))
                    .bind(token_hash)
                    .fetch_optional(self.read())
                    .await?;
                    row.as_ref().map(execution_from_row).transpose()
                }

                async fn live_executions(&self, worker_id: &WorkerId) -> StoreResult<Vec<ExecutionRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE worker_id = $1 AND ended_at IS NULL"
                    )))
                    .bind(worker_id.as_str())
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(execution_from_row).collect()
                }

                async fn all_live_executions(&self) -> StoreResult<Vec<(i64, ExecutionRecord)>> {
                    let rows = sqlx::query(
                        "SELECT r.team_id AS team_id, x.id AS id, x.run_id AS run_id, x.worker_id AS worker_id, \
                         x.state AS state, x.created_at AS created_at, x.ended_at AS ended_at, \
                         x.exit_code AS exit_code, x.failure_reason AS failure_reason, x.message AS message \
                         FROM executions x JOIN runs r ON r.id = x.run_id WHERE x.ended_at IS NULL",
                    )
                    .fetch_all(self.read())
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get("team_id")?, execution_from_row(row)?)))
                        .collect()
                }

                async fn renew_leases(
                    &self,
                    team_id: i64,
                    worker_id: &WorkerId,
                    holder: &str,
                    expires_at: i64,
                    now: i64,
                ) -> StoreResult<u64> {
                    let mut db = self.write().await?;
                    let done = sqlx::query($crate::leases::RENEW)
                        .bind(holder)
                        .bind(expires_at)
                        .bind(now)
                        .bind(worker_id.as_str())
                        .bind(team_id)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(done.rows_affected())
                }

                async fn expired_leases(
                    &self,
                    now: i64,
                    limit: i64,
                ) -> StoreResult<Vec<(i64, ExecutionRecord)>> {
                    let rows = sqlx::query($crate::leases::EXPIRED)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter()
                        .map(|row| Ok((row.try_get("team_id")?, execution_from_row(row)?)))
                        .collect()
                }

                async fn issuer_active(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool> {
                    let row = sqlx::query($crate::leases::ISSUER_ACTIVE)
                    .bind(exec.as_str())
                    .bind(now)
                    .fetch_optional(self.read())
                    .await?;
                    Ok(row.is_some())
                }

                async fn last_executions(&self, runs: &[RunId]) -> StoreResult<Vec<ExecutionRecord>> {
                    if runs.is_empty() {
                        return Ok(Vec::new());
                    }
                    let sql = $crate::leases::last_executions(runs.len());
                    let mut query = sqlx::query(AssertSqlSafe(sql));
                    for run in runs {
                        query = query.bind(run.as_str());
                    }
                    let rows = query.fetch_all(self.read()).await?;
                    rows.iter().map(execution_from_row).collect()
                }

                async fn lost_executions(&self, run: &RunId) -> StoreResult<i64> {
                    let row = sqlx::query($crate::leases::LOST_COUNT)
                    .bind(run.as_str())
                    .fetch_one(self.read())
                    .await?;
                    Ok(row.try_get("lost")?)
                }

                async fn requeue_lost(
                    &self,
                    run: &RunId,
                    exec: &ExecutionId,
                    message: &str,
                    at: i64,
                ) -> StoreResult<Transition> {
                    let mut tx = self.transaction().await?;
                    sqlx::query($crate::leases::END_LOST)
                    .bind(at)
                    .bind(at)
                    .bind(message)
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    let done = sqlx::query($crate::leases::REQUEUE_LOST_RUN)
                    .bind(at)
                    .bind(message)
                    .bind(run.as_str())
                    .bind(exec.as_str())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    if done.rows_affected() == 1 {
                        Ok(Transition::Applied)
                    } else {
                        self.why_not(run, exec).await
                    }
                }

                async fn extend_leases(&self, until: i64) -> StoreResult<u64> {
                    let mut db = self.write().await?;
                    let done = sqlx::query($crate::leases::EXTEND_ALL)
                    .bind(until)
                    .bind(until)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(done.rows_affected())
                }

                async fn note_failure_reason(&self, exec: &ExecutionId, reason: &str) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query($crate::leases::NOTE_FAILURE_REASON)
                    .bind(reason)
                    .bind(exec.as_str())
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn take_expired_lease(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool> {
                    let mut db = self.write().await?;
                    let done = sqlx::query($crate::leases::TAKE_EXPIRED)
                    .bind(exec.as_str())
                    .bind(now)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn team_leases(&self, team_id: i64) -> StoreResult<Vec<LeaseRecord>> {
                    let rows = sqlx::query($crate::leases::OF_TEAM)
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(LeaseRecord {
                                worker_id: WorkerId(row.try_get("worker_id")?),
                                run_id: RunId(row.try_get("run_id")?),
                                execution_id: ExecutionId(row.try_get("execution_id")?),
                                epoch: row.try_get("epoch")?,
                                holder: row.try_get("lease_holder")?,
                                expires_at: row.try_get("lease_expires_at")?,
                            })
                        })
                        .collect()
                }

                async fn reopen_run(
                    &self,
                    team_id: i64,
                    id: &RunId,
                    followup: &NewFollowup,
                ) -> StoreResult<RunRecord> {
                    let mut tx = self.transaction().await?;
                    // The row lock orders this against a concurrent assignment, outcome or
                    // second follow-up from another replica.
                    let Some(before) = locked_run(&mut tx, team_id, id).await? else {
                        tx.rollback().await?;
                        return Err(StoreError::NotFound);
                    };
                    if !before.state.is_terminal() {
                        // Release the row lock now, not when the pool next reuses the connection.
                        tx.rollback().await?;
                        return Err(StoreError::Conflict(format!(
                            "run {id} has not ended (it is {})",
                            before.state
                        )));
                    }
                    let live = sqlx::query("SELECT 1 FROM executions WHERE run_id = $1 AND ended_at IS NULL")
                        .bind(id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if live.is_some() {
                        tx.rollback().await?;
                        return Err(StoreError::Conflict(format!(
                            "run {id} ended but its last execution is still finishing"
                        )));
                    }
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "UPDATE runs SET state = 'QUEUED', current_execution_id = NULL, status_message = NULL, \
                         error_code = NULL, sandbox_running = FALSE, updated_at = $1 WHERE id = $2 \
                         RETURNING {RUN_COLUMNS}"
                    )))
                    .bind(followup.at)
                    .bind(id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    let reopened = run_from_row(&row)?;
                    sqlx::query(
                        "INSERT INTO run_followups (run_id, message, sender, created_at) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(id.as_str())
                    .bind(&followup.message)
                    .bind(&followup.sender)
                    .bind(followup.at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(reopened)
                }

                async fn latest_followup(&self, id: &RunId) -> StoreResult<Option<FollowupRecord>> {
                    let row = sqlx::query($crate::followups::LATEST_REOPENING)
                    .bind(id.as_str())
                    .fetch_optional(self.read())
                    .await?;
                    Ok(row.as_ref().map($crate::followups::from_row).transpose()?)
                }

                async fn add_followup(
                    &self,
                    id: &RunId,
                    execution_id: &ExecutionId,
                    followup: &NewFollowup,
                ) -> StoreResult<FollowupRecord> {
                    let mut db = self.write().await?;
                    // fetch_all: an autocommit statement's commit error surfaces only
                    // once the statement is driven to completion.
                    let row = sqlx::query($crate::followups::ADD)
                    .bind(id.as_str())
                    .bind(execution_id.as_str())
                    .bind(&followup.message)
                    .bind(&followup.sender)
                    .bind(followup.at)
                    .bind(execution_id.as_str())
                    .bind(id.as_str())
                    .fetch_all(&mut *db)
                    .await?
                    .pop()
                    .ok_or_else(|| {
                        StoreError::Conflict(format!("execution {execution_id} of run {id} has ended"))
                    })?;
                    db.commit().await?;
                    Ok(FollowupRecord {
                        id: row.try_get("id")?,
                        message: followup.message.clone(),
                        sender: followup.sender.clone(),
                        created_at: followup.at,
                    })
                }

                async fn pending_followups(
                    &self,
                    execution_id: &ExecutionId,
                ) -> StoreResult<Vec<FollowupRecord>> {
                    let rows = sqlx::query($crate::followups::PENDING)
                    .bind(execution_id.as_str())
                    .fetch_all(self.read())
                    .await?;
                    Ok(rows
                        .iter()
                        .map($crate::followups::from_row)
                        .collect::<Result<_, _>>()?)
                }

                async fn followup_delivered(
                    &self,
                    execution_id: &ExecutionId,
                    followup_id: i64,
                    at: i64,
                ) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query($crate::followups::DELIVERED)
                    .bind(at)
                    .bind(followup_id)
                    .bind(execution_id.as_str())
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(())
                }
            }
        };
    };
}

pub(crate) use run_store;
