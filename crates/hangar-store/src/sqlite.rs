//! The embedded SQLite store: WAL journal, `synchronous=FULL`, one file in the data directory.


crate::sql::shared_store!(SqliteStore);
use crate::*;
use hangar_protocol::session::SessionEvent;
use hangar_protocol::{RunExecutionLocation, RunSourceType, Timestamp};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "schedules",
        include_str!("../migrations/sqlite/0002_schedules.sql"),
    ),
    (
        3,
        "environments",
        include_str!("../migrations/sqlite/0003_environments.sql"),
    ),
    (
        4,
        "run_listing_index",
        include_str!("../migrations/sqlite/0004_run_listing_index.sql"),
    ),
    (
        5,
        "shares",
        include_str!("../migrations/sqlite/0005_shares.sql"),
    ),
    (
        6,
        "accounts",
        include_str!("../migrations/sqlite/0006_accounts.sql"),
    ),
    (
        7,
        "lifecycle_workers",
        include_str!("../migrations/sqlite/0007_lifecycle_workers.sql"),
    ),
    (
        8,
        "run_followups",
        include_str!("../migrations/sqlite/0008_run_followups.sql"),
    ),
    (
        9,
        "store_probe",
        include_str!("../migrations/sqlite/0009_store_probe.sql"),
    ),
    (
        10,
        "execution_leases",
        include_str!("../migrations/sqlite/0010_execution_leases.sql"),
    ),
    (
        11,
        "live_followups",
        include_str!("../migrations/sqlite/0011_live_followups.sql"),
    ),
    (
        12,
        "execution_issuer",
        include_str!("../migrations/sqlite/0012_execution_issuer.sql"),
    ),
    (
        13,
        "worker_tokens",
        include_str!("../migrations/sqlite/0013_worker_tokens.sql"),
    ),
    (
        14,
        "llm_caller_usage",
        include_str!("../migrations/sqlite/0014_llm_caller_usage.sql"),
    ),
    (
        15,
        "runs_state_index",
        include_str!("../migrations/sqlite/0015_runs_state_index.sql"),
    ),
];

const RUN_COLUMNS: &str = "id, team_id, creator_user_id, title, prompt, state, source, \
    execution_location, config, created_at, updated_at, started_at, status_message, error_code, \
    current_execution_id, sandbox_running, prompt_tokens, completion_tokens, inference_cost, \
    schedule_id, schedule_name, schedule_cron";

const EXECUTION_COLUMNS: &str =
    "id, run_id, worker_id, state, created_at, ended_at, exit_code, failure_reason, message";

/// SQLite implementation of [`Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Readers (WAL: they never block the writer).
    pool: SqlitePool,
    /// The one writing connection. SQLite admits one writer at a time; queueing
    /// writers here (FIFO, no sleeping) instead of in SQLite's busy handler
    /// (which sleeps 1, 2, 5, 10… ms between retries) keeps write latency flat.
    writer: SqlitePool,
}

fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                (*name).into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        Self::with_options(options, 8).await
    }

    /// An in-memory database (tests).
    pub async fn in_memory() -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(StoreError::Database)?
            .foreign_keys(true);
        // One connection: every connection to `:memory:` is a separate database.
        Self::with_options(options, 1).await
    }

    async fn with_options(options: SqliteConnectOptions, max: u32) -> StoreResult<Self> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        migrator().run(&writer).await?;
        if max <= 1 {
            // In memory: every connection would be a separate database.
            return Ok(SqliteStore {
                pool: writer.clone(),
                writer,
            });
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool, writer })
    }
}

impl crate::sql::Dialect for SqliteStore {
    type Db = sqlx::Sqlite;

    fn read(&self) -> &SqlitePool {
        &self.pool
    }

    fn write(&self) -> &SqlitePool {
        &self.writer
    }

    const FOR_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const NEXT_LIFECYCLE_SEQUENCE: &'static str =
        "(SELECT COALESCE(MAX(sequence), 0) + 1 FROM lifecycle_events WHERE team_id = r.team_id)";
    const JSON: crate::records::Dialect = crate::records::Dialect::Sqlite;
}

crate::rows::row_decoders!(SqliteRow, |row: &SqliteRow,
                                       column: &str|
 -> StoreResult<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
});

impl SqliteStore {
    /// [`ClusterStore::bootstrap_lock`]: none needed, one process owns a SQLite file.
    async fn take_bootstrap_lock(&self) -> StoreResult<BootstrapLock> {
        Ok(BootstrapLock::none())
    }

    /// Explains why a conditional run update matched no row.
    async fn why_not(&self, run: &RunId, exec: &ExecutionId) -> StoreResult<Transition> {
        let row = sqlx::query("SELECT state, current_execution_id FROM runs WHERE id = ?")
            .bind(run.as_str())
            .fetch_optional(&self.pool)
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
impl RunStore for SqliteStore {
    async fn create_run(&self, run: NewRun) -> StoreResult<RunRecord> {
        let config = serde_json::to_string(&run.config)
            .map_err(|e| StoreError::Corrupt(format!("run config: {e}")))?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
             execution_location, worker_host, config, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, 'QUEUED', ?, ?, ?, ?, ?, ?) RETURNING {RUN_COLUMNS}"
        )))
        .bind(run.id.as_str())
        .bind(run.team_id)
        .bind(run.creator_user_id)
        .bind(&run.title)
        .bind(&run.prompt)
        .bind(run.source.as_str())
        .bind(run.execution_location.as_str())
        .bind(&run.config.worker_host)
        .bind(config)
        .bind(run.created_at)
        .bind(run.created_at)
        // Stepped to the end: SQLite commits an autocommit statement when it
        // finishes, and stopping at the first row would hide a failed commit.
        .fetch_all(&self.writer)
        .await?
        .pop()
        .ok_or(StoreError::NotFound)?;
        run_from_row(&row)
    }

    async fn create_local_run(&self, run: NewRun, exec: NewExecution) -> StoreResult<RunRecord> {
        let config = serde_json::to_string(&run.config)
            .map_err(|e| StoreError::Corrupt(format!("run config: {e}")))?;
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
             execution_location, worker_host, config, created_at, updated_at, started_at, \
             current_execution_id, sandbox_running) \
             VALUES (?, ?, ?, ?, ?, 'INPROGRESS', ?, ?, ?, ?, ?, ?, ?, ?, 1)",
        )
        .bind(run.id.as_str())
        .bind(run.team_id)
        .bind(run.creator_user_id)
        .bind(&run.title)
        .bind(&run.prompt)
        .bind(run.source.as_str())
        .bind(run.execution_location.as_str())
        .bind(&run.config.worker_host)
        .bind(config)
        .bind(run.created_at)
        .bind(run.created_at)
        .bind(run.created_at)
        .bind(exec.id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO executions (id, run_id, worker_id, state, token_hash, created_at, updated_at, \
             issuer_key_id) VALUES (?, ?, ?, 'started', ?, ?, ?, ?)",
        )
        .bind(exec.id.as_str())
        .bind(run.id.as_str())
        .bind(&exec.worker_id)
        .bind(&exec.token_hash)
        .bind(exec.created_at)
        .bind(exec.created_at)
        .bind(&exec.issuer_key_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.run_any_team(&run.id).await
    }

    async fn run(&self, team_id: i64, id: &RunId) -> StoreResult<RunRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ? AND team_id = ?"
        )))
        .bind(id.as_str())
        .bind(team_id)
        .fetch_one(&self.pool)
        .await?;
        run_from_row(&row)
    }

    async fn run_any_team(&self, id: &RunId) -> StoreResult<RunRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
        )))
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        run_from_row(&row)
    }

    async fn list_runs(&self, team_id: i64, query: &RunQuery) -> StoreResult<RunPage> {
        let key = match query.sort {
            RunSort::UpdatedAt => "updated_at",
            RunSort::CreatedAt => "created_at",
        };
        let (dir, cmp) = if query.ascending {
            ("ASC", ">")
        } else {
            ("DESC", "<")
        };
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE team_id = ?");
        if !query.states.is_empty() {
            let marks = vec!["?"; query.states.len()].join(", ");
            sql.push_str(&format!(" AND state IN ({marks})"));
        }
        if query.source.is_some() {
            sql.push_str(" AND source = ?");
        }
        if query.schedule_id.is_some() {
            sql.push_str(" AND schedule_id = ?");
        }
        let (extra, values) = crate::records::filter_clauses(
            query,
            crate::records::Dialect::Sqlite,
            &|field| format!("json_extract(config, '$.{field}')"),
            &mut || "?".to_owned(),
        );
        sql.push_str(&extra);
        if query.after.is_some() {
            sql.push_str(&format!(" AND ({key}, id) {cmp} (?, ?)"));
        }
        sql.push_str(&format!(" ORDER BY {key} {dir}, id {dir} LIMIT ?"));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(team_id);
        for s in &query.states {
            q = q.bind(s.as_str());
        }
        if let Some(source) = query.source {
            q = q.bind(source.as_str());
        }
        if let Some(schedule) = &query.schedule_id {
            q = q.bind(schedule.clone());
        }
        for v in values {
            q = match v {
                crate::records::FilterValue::Text(t) => q.bind(t),
                crate::records::FilterValue::Int(i) => q.bind(i),
            };
        }
        if let Some((k, id)) = &query.after {
            q = q.bind(*k).bind(id.clone());
        }
        let limit = query.limit.max(1);
        let rows = q.bind(limit + 1).fetch_all(&self.pool).await?;
        let mut runs = rows
            .iter()
            .map(run_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = if runs.len() as i64 > limit {
            runs.truncate(limit as usize);
            runs.last().map(|r| {
                let k = match query.sort {
                    RunSort::UpdatedAt => r.updated_at,
                    RunSort::CreatedAt => r.created_at,
                };
                (k, r.id.0.clone())
            })
        } else {
            None
        };
        Ok(RunPage { runs, next })
    }

    async fn queued_runs(&self, limit: i64) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'QUEUED' AND current_execution_id IS NULL \
             ORDER BY created_at, id LIMIT ?"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    async fn assign(&self, exec: NewExecution) -> StoreResult<Transition> {
        let mut tx = self.writer.begin().await?;
        let updated = sqlx::query(
            "UPDATE runs SET current_execution_id = ?, updated_at = ? \
             WHERE id = ? AND state = 'QUEUED' AND current_execution_id IS NULL",
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
        sqlx::query(
            "INSERT INTO executions (id, run_id, worker_id, state, token_hash, created_at, updated_at, \
             lease_holder, lease_expires_at) VALUES (?, ?, ?, 'assigned', ?, ?, ?, ?, ?)",
        )
        .bind(exec.id.as_str())
        .bind(exec.run_id.as_str())
        .bind(&exec.worker_id)
        .bind(&exec.token_hash)
        .bind(exec.created_at)
        .bind(exec.created_at)
        .bind(&exec.lease_holder)
        .bind(exec.lease_expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Transition::Applied)
    }

    async fn claim(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE runs SET state = 'CLAIMED', updated_at = ? \
             WHERE id = ? AND current_execution_id = ? AND state IN ('QUEUED', 'PENDING')",
        )
        .bind(at)
        .bind(run.as_str())
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE executions SET state = 'claimed', updated_at = ? WHERE id = ? AND state = 'assigned'",
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
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE executions SET state = 'ended', ended_at = ?, updated_at = ?, message = ? \
             WHERE id = ? AND ended_at IS NULL",
        )
        .bind(at)
        .bind(at)
        .bind(reason)
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE runs SET current_execution_id = NULL, updated_at = ?, \
             state = CASE WHEN state = 'CLAIMED' THEN 'QUEUED' ELSE state END \
             WHERE id = ? AND current_execution_id = ? AND state IN ('QUEUED', 'PENDING', 'CLAIMED')",
        )
        .bind(at)
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

    async fn start(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE executions SET state = 'started', updated_at = ? \
             WHERE id = ? AND state IN ('assigned', 'claimed')",
        )
        .bind(at)
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE runs SET state = 'INPROGRESS', started_at = COALESCE(started_at, ?), \
             sandbox_running = 1, updated_at = ? \
             WHERE id = ? AND current_execution_id = ? AND state IN ('QUEUED', 'PENDING', 'CLAIMED')",
        )
        .bind(at)
        .bind(at)
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

    async fn report_outcome(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        outcome: &Outcome,
    ) -> StoreResult<Transition> {
        let done = sqlx::query(
            "UPDATE runs SET state = ?, status_message = ?, error_code = ?, updated_at = ? \
             WHERE id = ? AND current_execution_id = ? \
             AND state NOT IN ('SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED')",
        )
        .bind(outcome.state.as_str())
        .bind(&outcome.message)
        .bind(&outcome.error_code)
        .bind(Timestamp::now().unix_millis())
        .bind(run.as_str())
        .bind(exec.as_str())
        .execute(&self.writer)
        .await?;
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
        let mut tx = self.writer.begin().await?;
        let ended = sqlx::query(
            "UPDATE executions SET state = 'ended', ended_at = ?, updated_at = ?, exit_code = ?, \
             failure_reason = COALESCE(failure_reason, ?), message = ? WHERE id = ? AND run_id = ? AND ended_at IS NULL",
        )
        .bind(end.at)
        .bind(end.at)
        .bind(end.exit_code)
        .bind(&end.failure_reason)
        .bind(&end.outcome.message)
        .bind(exec.as_str())
        .bind(run.as_str())
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 0 {
            tx.rollback().await?;
            // Unknown or already ended: a duplicate or stale report.
            let known = sqlx::query("SELECT 1 FROM executions WHERE id = ? AND run_id = ?")
                .bind(exec.as_str())
                .bind(run.as_str())
                .fetch_optional(&self.pool)
                .await?;
            return Ok(if known.is_some() {
                Transition::Unchanged
            } else {
                Transition::Stale
            });
        }
        sqlx::query(
            "UPDATE runs SET sandbox_running = 0, updated_at = ? WHERE id = ? AND current_execution_id = ?",
        )
        .bind(end.at)
        .bind(run.as_str())
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE runs SET state = ?, status_message = ?, error_code = ?, updated_at = ? \
             WHERE id = ? AND current_execution_id = ? \
             AND state NOT IN ('SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED')",
        )
        .bind(end.outcome.state.as_str())
        .bind(&end.outcome.message)
        .bind(&end.outcome.error_code)
        .bind(end.at)
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

    async fn cancel_run(
        &self,
        team_id: i64,
        id: &RunId,
        message: &str,
        at: i64,
    ) -> StoreResult<RunRecord> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ? AND team_id = ?"
        )))
        .bind(id.as_str())
        .bind(team_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let before = run_from_row(&row)?;
        if before.state.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "run {} already ended in state {}",
                id, before.state
            )));
        }
        sqlx::query(
            "UPDATE runs SET state = 'CANCELLED', status_message = ?, updated_at = ? WHERE id = ?",
        )
        .bind(message)
        .bind(at)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        // An assignment that was never claimed has no sandbox: end it now.
        sqlx::query(
            "UPDATE executions SET state = 'ended', ended_at = ?, updated_at = ?, message = ? \
             WHERE run_id = ? AND ended_at IS NULL AND state = 'assigned'",
        )
        .bind(at)
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
        sqlx::query(
            "UPDATE runs SET prompt_tokens = prompt_tokens + ?, \
             completion_tokens = completion_tokens + ?, inference_cost = inference_cost + ? WHERE id = ?",
        )
        .bind(prompt as i64)
        .bind(completion as i64)
        .bind(cost)
        .bind(run.as_str())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn execution(&self, id: &ExecutionId) -> StoreResult<ExecutionRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?"
        )))
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        execution_from_row(&row)
    }

    async fn execution_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<ExecutionRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE token_hash = ?"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(execution_from_row).transpose()
    }

    async fn live_executions(&self, worker_id: &str) -> StoreResult<Vec<ExecutionRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE worker_id = ? AND ended_at IS NULL"
        )))
        .bind(worker_id)
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("team_id")?, execution_from_row(row)?)))
            .collect()
    }

    async fn renew_leases(
        &self,
        team_id: i64,
        worker_id: &str,
        holder: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<u64> {
        let done = sqlx::query(AssertSqlSafe(crate::leases::RENEW.to_owned()))
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .bind(worker_id)
            .bind(team_id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn expired_leases(
        &self,
        now: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, ExecutionRecord)>> {
        let rows = sqlx::query(AssertSqlSafe(crate::leases::EXPIRED.to_owned()))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("team_id")?, execution_from_row(row)?)))
            .collect()
    }

    async fn issuer_active(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool> {
        let row = sqlx::query(AssertSqlSafe(crate::leases::ISSUER_ACTIVE.to_owned()))
            .bind(exec.as_str())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn last_executions(&self, runs: &[RunId]) -> StoreResult<Vec<ExecutionRecord>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let sql = crate::leases::last_executions(runs.len());
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for run in runs {
            query = query.bind(run.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn lost_executions(&self, run: &RunId) -> StoreResult<i64> {
        let row = sqlx::query(AssertSqlSafe(crate::leases::LOST_COUNT.to_owned()))
            .bind(run.as_str())
            .fetch_one(&self.pool)
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
        let mut tx = self.writer.begin().await?;
        sqlx::query(AssertSqlSafe(crate::leases::END_LOST.to_owned()))
            .bind(at)
            .bind(at)
            .bind(message)
            .bind(exec.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(AssertSqlSafe(crate::leases::REQUEUE_LOST_RUN.to_owned()))
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
        let done = sqlx::query(AssertSqlSafe(crate::leases::EXTEND_ALL.to_owned()))
            .bind(until)
            .bind(until)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn note_failure_reason(&self, exec: &ExecutionId, reason: &str) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(crate::leases::NOTE_FAILURE_REASON.to_owned()))
            .bind(reason)
            .bind(exec.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn take_expired_lease(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(AssertSqlSafe(crate::leases::TAKE_EXPIRED.to_owned()))
            .bind(exec.as_str())
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn team_leases(&self, team_id: i64) -> StoreResult<Vec<LeaseRecord>> {
        let rows = sqlx::query(AssertSqlSafe(crate::leases::OF_TEAM.to_owned()))
            .bind(team_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(LeaseRecord {
                    worker_id: row.try_get("worker_id")?,
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
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ? AND team_id = ?"
        )))
        .bind(id.as_str())
        .bind(team_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let before = run_from_row(&row)?;
        if !before.state.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "run {id} has not ended (it is {})",
                before.state
            )));
        }
        let live = sqlx::query("SELECT 1 FROM executions WHERE run_id = ? AND ended_at IS NULL")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if live.is_some() {
            return Err(StoreError::Conflict(format!(
                "run {id} ended but its last execution is still finishing"
            )));
        }
        sqlx::query(
            "UPDATE runs SET state = 'QUEUED', current_execution_id = NULL, status_message = NULL,              error_code = NULL, sandbox_running = 0, updated_at = ? WHERE id = ?",
        )
        .bind(followup.at)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO run_followups (run_id, message, sender, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(&followup.message)
        .bind(&followup.sender)
        .bind(followup.at)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
        )))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let reopened = run_from_row(&row)?;
        tx.commit().await?;
        Ok(reopened)
    }

    async fn latest_followup(&self, id: &RunId) -> StoreResult<Option<FollowupRecord>> {
        let row = sqlx::query(AssertSqlSafe(crate::followups::LATEST_REOPENING.to_owned()))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(crate::followups::from_row).transpose()?)
    }

    async fn add_followup(
        &self,
        id: &RunId,
        execution_id: &ExecutionId,
        followup: &NewFollowup,
    ) -> StoreResult<FollowupRecord> {
        // fetch_all: an autocommit statement's commit error surfaces only
        // once the statement is driven to completion.
        let row = sqlx::query(AssertSqlSafe(crate::followups::ADD.to_owned()))
            .bind(id.as_str())
            .bind(execution_id.as_str())
            .bind(&followup.message)
            .bind(&followup.sender)
            .bind(followup.at)
            .bind(execution_id.as_str())
            .bind(id.as_str())
            .fetch_all(&self.writer)
            .await?
            .pop()
            .ok_or_else(|| {
                StoreError::Conflict(format!("execution {execution_id} of run {id} has ended"))
            })?;
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
        let rows = sqlx::query(AssertSqlSafe(crate::followups::PENDING.to_owned()))
            .bind(execution_id.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(crate::followups::from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn followup_delivered(
        &self,
        execution_id: &ExecutionId,
        followup_id: i64,
        at: i64,
    ) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(crate::followups::DELIVERED.to_owned()))
            .bind(at)
            .bind(followup_id)
            .bind(execution_id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

impl SqliteStore {
    /// A run's events (of one kind, or all), executions in creation order.
    async fn events_of(
        &self,
        run: &RunId,
        kind: Option<&str>,
    ) -> StoreResult<Vec<(ExecutionId, SessionEvent)>> {
        let rows = sqlx::query(
            "SELECT e.execution_id AS execution_id, e.body AS body FROM run_events e \
             LEFT JOIN executions x ON x.id = e.execution_id \
             WHERE e.run_id = ?1 AND (?2 IS NULL OR e.kind = ?2) \
             ORDER BY COALESCE(x.created_at, 0), e.execution_id, e.seq",
        )
        .bind(run.as_str())
        .bind(kind)
        .fetch_all(&self.pool)
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
impl EventStore for SqliteStore {
    async fn append_events(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        events: &[SessionEvent],
    ) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await?;
        for event in events {
            let body = serde_json::to_value(event)
                .map_err(|e| StoreError::Corrupt(format!("event: {e}")))?;
            let kind = body
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("unknown")
                .to_owned();
            sqlx::query(
                "INSERT INTO run_events (run_id, execution_id, seq, at, kind, body) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(run.as_str())
            .bind(exec.as_str())
            .bind(event.seq as i64)
            .bind(event.at.unix_millis())
            .bind(kind)
            .bind(body.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.last_seq(run, exec).await
    }

    async fn last_seq(&self, run: &RunId, exec: &ExecutionId) -> StoreResult<u64> {
        // Highest seq such that 1..=seq are all stored: count == max when there is no gap.
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS m FROM run_events \
             WHERE run_id = ? AND execution_id = ?",
        )
        .bind(run.as_str())
        .bind(exec.as_str())
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        let m: i64 = row.try_get("m")?;
        if n == m {
            return Ok(m as u64);
        }
        // A gap: find the first missing seq.
        let first_gap: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MIN(e.seq + 1), 1) FROM run_events e \
             WHERE e.run_id = ?1 AND e.execution_id = ?2 AND NOT EXISTS \
             (SELECT 1 FROM run_events f WHERE f.run_id = ?1 AND f.execution_id = ?2 AND f.seq = e.seq + 1)",
        )
        .bind(run.as_str())
        .bind(exec.as_str())
        .fetch_one(&self.pool)
        .await?;
        let has_first: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM run_events WHERE run_id = ? AND execution_id = ? AND seq = 1",
        )
        .bind(run.as_str())
        .bind(exec.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(if has_first.is_none() {
            0
        } else {
            (first_gap - 1).max(0) as u64
        })
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
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(PROBE_WRITE)
            .bind(Timestamp::now().unix_millis())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}
