//! The PostgreSQL store, for several `hangar server` replicas sharing one database.
//!
//! Same schema shape and semantics as [`SqliteStore`](crate::SqliteStore):
//! Unix-millisecond `BIGINT` times, every run state change a conditional update
//! fenced by execution id. Under concurrent replicas the conditional updates
//! are what keeps a run from being assigned twice (PostgreSQL re-checks the
//! `WHERE` of an `UPDATE` after waiting for a concurrent writer of the row);
//! [`RunStore::queued_runs`] additionally skips runs another replica is
//! assigning right now (`FOR UPDATE SKIP LOCKED`). Cross-replica signals:
//! [`Notifier`](crate::Notifier), implemented in [`notify`].

mod notify;

crate::sql::shared_store!(PostgresStore);

pub use notify::PgSignalListener;

use crate::*;
use hangar_protocol::session::SessionEvent;
use hangar_protocol::{RunExecutionLocation, RunSourceType, Timestamp};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "schedules",
        include_str!("../migrations/postgres/0002_schedules.sql"),
    ),
    (
        3,
        "environments",
        include_str!("../migrations/postgres/0003_environments.sql"),
    ),
    (
        4,
        "shares",
        include_str!("../migrations/postgres/0004_shares.sql"),
    ),
    (
        5,
        "accounts",
        include_str!("../migrations/postgres/0005_accounts.sql"),
    ),
    (
        6,
        "lifecycle_workers",
        include_str!("../migrations/postgres/0006_lifecycle_workers.sql"),
    ),
    (
        7,
        "run_followups",
        include_str!("../migrations/postgres/0007_run_followups.sql"),
    ),
    (
        8,
        "store_probe",
        include_str!("../migrations/postgres/0008_store_probe.sql"),
    ),
    (
        9,
        "execution_leases",
        include_str!("../migrations/postgres/0009_execution_leases.sql"),
    ),
    (
        10,
        "live_followups",
        include_str!("../migrations/postgres/0010_live_followups.sql"),
    ),
    (
        11,
        "execution_issuer",
        include_str!("../migrations/postgres/0011_execution_issuer.sql"),
    ),
    (
        12,
        "worker_tokens",
        include_str!("../migrations/postgres/0012_worker_tokens.sql"),
    ),
    (
        13,
        "llm_caller_usage",
        include_str!("../migrations/postgres/0013_llm_caller_usage.sql"),
    ),
    (
        14,
        "runs_state_index",
        include_str!("../migrations/postgres/0014_runs_state_index.sql"),
    ),
];

const RUN_COLUMNS: &str = "id, team_id, creator_user_id, title, prompt, state, source, \
    execution_location, config, created_at, updated_at, started_at, status_message, error_code, \
    current_execution_id, sandbox_running, prompt_tokens, completion_tokens, inference_cost, \
    schedule_id, schedule_name, schedule_cron";

const EXECUTION_COLUMNS: &str =
    "id, run_id, worker_id, state, created_at, ended_at, exit_code, failure_reason, message";

const TERMINAL_STATES: &str = "('SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED')";

/// Default pool size per replica.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;
/// Default [`PostgresConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database[?options]`.
    pub url: String,
    /// Schema holding Hangar's tables (created if missing); `None` uses the
    /// role's default `search_path` (normally `public`).
    pub schema: Option<String>,
    /// Connections in the pool (the listener takes one more while listening).
    pub max_connections: u32,
    /// How long to wait for a connection (including retries while the
    /// database is starting) before failing with [`StoreError::Unavailable`].
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// A configuration with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The URL with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// PostgreSQL implementation of [`Store`] and [`Notifier`].
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The schema the tables live in (filters signals of other deployments
    /// sharing the database).
    schema: String,
    /// This store's `application_name`, the `origin` of the signals it causes.
    origin: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn migrator(schema: Option<&str>) -> Migrator {
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
    let mut migrator = Migrator::with_migrations(migrations);
    if let Some(schema) = schema {
        migrator.create_schema(schema.to_owned());
    }
    migrator
}

/// Whether `name` can be used unquoted as a schema name.
fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
        && !name.starts_with("pg_")
}

/// A configuration error (bad URL, bad schema name).
pub(crate) fn config_error(message: String) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(message.into()))
}

/// Translates a PostgreSQL error: conditions a retry can cure are `Unavailable`.
pub(crate) fn pg_error(e: sqlx::Error) -> StoreError {
    StoreError::from(e)
}

impl PostgresStore {
    /// Connects to `url` (tables in the default schema) and runs migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(&PostgresConfig::new(url)).await
    }

    /// Connects as configured and runs migrations. Safe to call from several
    /// replicas at once: migrations take an advisory lock.
    pub async fn connect_with(config: &PostgresConfig) -> StoreResult<Self> {
        if let Some(schema) = &config.schema
            && !valid_schema_name(schema)
        {
            return Err(config_error(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and `_`"
            )));
        }
        let mut options = PgConnectOptions::from_str(&config.url).map_err(pg_error)?;
        // The random part of a UUIDv7 (the start is a timestamp shared by replicas
        // started in the same millisecond).
        let id = RunId::generate().0;
        let origin = format!("hangar-{}", &id[id.len().saturating_sub(12)..]);
        options = options.application_name(&origin);
        if let Some(schema) = &config.schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(config.connect_timeout)
            .connect_with(options)
            .await
            .map_err(pg_error)?;
        migrator(config.schema.as_deref()).run(&pool).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(pg_error)?;
        tracing::debug!(schema, origin, "connected to PostgreSQL");
        Ok(PostgresStore {
            pool,
            schema,
            origin,
        })
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// This store's `application_name`: the `origin` of the signals its writes cause.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The connection pool (tests, maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// [`ClusterStore::bootstrap_lock`]: a session-level advisory lock on a
    /// connection of its own, keyed by the schema so deployments sharing a
    /// database do not wait for each other.
    async fn take_bootstrap_lock(&self) -> StoreResult<BootstrapLock> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(hashtext('hangar-bootstrap:' || current_schema()))")
            .execute(&mut *conn)
            .await?;
        Ok(BootstrapLock { conn: Some(conn) })
    }

    /// Explains why a conditional run update matched no row.
    async fn why_not(&self, run: &RunId, exec: &ExecutionId) -> StoreResult<Transition> {
        let row = sqlx::query("SELECT state, current_execution_id FROM runs WHERE id = $1")
            .bind(run.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_error)?;
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

impl crate::sql::Dialect for PostgresStore {
    type Db = sqlx::Postgres;

    fn read(&self) -> &PgPool {
        &self.pool
    }

    fn write(&self) -> &PgPool {
        &self.pool
    }

    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const NEXT_LIFECYCLE_SEQUENCE: &'static str =
        "hangar_next_lifecycle_sequence(r.team_id)";
    const JSON: crate::records::Dialect = crate::records::Dialect::Postgres;
}

crate::rows::row_decoders!(PgRow, |row: &PgRow, column: &str| -> StoreResult<bool> {
    Ok(row.try_get(column)?)
});

#[async_trait]
impl RunStore for PostgresStore {
    async fn create_run(&self, run: NewRun) -> StoreResult<RunRecord> {
        let config = serde_json::to_string(&run.config)
            .map_err(|e| StoreError::Corrupt(format!("run config: {e}")))?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
             execution_location, worker_host, config, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'QUEUED', $6, $7, $8, $9, $10, $10) RETURNING {RUN_COLUMNS}"
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
        // Read to the end: an error reported after the row (a failed commit)
        // would be lost by stopping at the first row.
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?
        .pop()
        .ok_or(StoreError::NotFound)?;
        run_from_row(&row)
    }

    async fn create_local_run(&self, run: NewRun, exec: NewExecution) -> StoreResult<RunRecord> {
        let config = serde_json::to_string(&run.config)
            .map_err(|e| StoreError::Corrupt(format!("run config: {e}")))?;
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        sqlx::query(
            "INSERT INTO runs (id, team_id, creator_user_id, title, prompt, state, source, \
             execution_location, worker_host, config, created_at, updated_at, started_at, \
             current_execution_id, sandbox_running) \
             VALUES ($1, $2, $3, $4, $5, 'INPROGRESS', $6, $7, $8, $9, $10, $10, $10, $11, TRUE)",
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
        .bind(exec.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        sqlx::query(
            "INSERT INTO executions (id, run_id, worker_id, state, token_hash, created_at, updated_at, \
             issuer_key_id) VALUES ($1, $2, $3, 'started', $4, $5, $5, $6)",
        )
        .bind(exec.id.as_str())
        .bind(run.id.as_str())
        .bind(&exec.worker_id)
        .bind(&exec.token_hash)
        .bind(exec.created_at)
        .bind(&exec.issuer_key_id)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        self.run_any_team(&run.id).await
    }

    async fn run(&self, team_id: i64, id: &RunId) -> StoreResult<RunRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND team_id = $2"
        )))
        .bind(id.as_str())
        .bind(team_id)
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
        run_from_row(&row)
    }

    async fn run_any_team(&self, id: &RunId) -> StoreResult<RunRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
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
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE team_id = $1");
        let mut n = 1;
        let mut next_param = || {
            n += 1;
            n
        };
        if !query.states.is_empty() {
            sql.push_str(&format!(" AND state = ANY(${})", next_param()));
        }
        if query.source.is_some() {
            sql.push_str(&format!(" AND source = ${}", next_param()));
        }
        if query.schedule_id.is_some() {
            sql.push_str(&format!(" AND schedule_id = ${}", next_param()));
        }
        let (extra, values) = crate::records::filter_clauses(
            query,
            crate::records::Dialect::Postgres,
            &|field| format!("(config::jsonb ->> '{field}')"),
            &mut || format!("${}", next_param()),
        );
        sql.push_str(&extra);
        if query.after.is_some() {
            let (k, id) = (next_param(), next_param());
            sql.push_str(&format!(" AND ({key}, id) {cmp} (${k}, ${id})"));
        }
        sql.push_str(&format!(
            " ORDER BY {key} {dir}, id {dir} LIMIT ${}",
            next_param()
        ));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(team_id);
        if !query.states.is_empty() {
            let states: Vec<&str> = query.states.iter().map(|s| s.as_str()).collect();
            q = q.bind(states);
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
        let rows = q
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?;
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
        // SKIP LOCKED passes over runs another replica is assigning at this
        // moment; the row locks end with this statement, and `assign` stays the
        // conditional update that decides.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'QUEUED' AND current_execution_id IS NULL \
             ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn assign(&self, exec: NewExecution) -> StoreResult<Transition> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let updated = sqlx::query(
            "UPDATE runs SET current_execution_id = $1, updated_at = $2 \
             WHERE id = $3 AND state = 'QUEUED' AND current_execution_id IS NULL",
        )
        .bind(exec.id.as_str())
        .bind(exec.created_at)
        .bind(exec.run_id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if updated.rows_affected() == 0 {
            tx.rollback().await.map_err(pg_error)?;
            return Ok(Transition::Stale);
        }
        sqlx::query(
            "INSERT INTO executions (id, run_id, worker_id, state, token_hash, created_at, updated_at, \
             lease_holder, lease_expires_at) VALUES ($1, $2, $3, 'assigned', $4, $5, $5, $6, $7)",
        )
        .bind(exec.id.as_str())
        .bind(exec.run_id.as_str())
        .bind(&exec.worker_id)
        .bind(&exec.token_hash)
        .bind(exec.created_at)
        .bind(&exec.lease_holder)
        .bind(exec.lease_expires_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Transition::Applied)
    }

    async fn claim(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let done = sqlx::query(
            "UPDATE runs SET state = 'CLAIMED', updated_at = $1 \
             WHERE id = $2 AND current_execution_id = $3 AND state IN ('QUEUED', 'PENDING')",
        )
        .bind(at)
        .bind(run.as_str())
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        sqlx::query(
            "UPDATE executions SET state = 'claimed', updated_at = $1 WHERE id = $2 AND state = 'assigned'",
        )
        .bind(at)
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
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
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
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
        .await
        .map_err(pg_error)?;
        sqlx::query(
            "UPDATE executions SET state = 'ended', ended_at = $1, updated_at = $1, message = $2 \
             WHERE id = $3 AND ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        if done.rows_affected() == 1 {
            Ok(Transition::Applied)
        } else {
            self.why_not(run, exec).await
        }
    }

    async fn start(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
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
        .await
        .map_err(pg_error)?;
        sqlx::query(
            "UPDATE executions SET state = 'started', updated_at = $1 \
             WHERE id = $2 AND state IN ('assigned', 'claimed')",
        )
        .bind(at)
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
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
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
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
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // Lock order everywhere: the run row, then its executions. The lock
        // orders this report against a concurrent cancel or outcome arriving
        // through another replica.
        let row =
            sqlx::query("SELECT state, current_execution_id FROM runs WHERE id = $1 FOR UPDATE")
                .bind(run.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?;
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
        .await
        .map_err(pg_error)?;
        let Some(row) = row.filter(|_| ended.rows_affected() == 1) else {
            tx.rollback().await.map_err(pg_error)?;
            // Unknown or already ended: a duplicate or stale report.
            let known = sqlx::query("SELECT 1 FROM executions WHERE id = $1 AND run_id = $2")
                .bind(exec.as_str())
                .bind(run.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(pg_error)?;
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
                .await
                .map_err(pg_error)?;
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
            .await
            .map_err(pg_error)?;
            Transition::Applied
        };
        tx.commit().await.map_err(pg_error)?;
        Ok(transition)
    }

    async fn cancel_run(
        &self,
        team_id: i64,
        id: &RunId,
        message: &str,
        at: i64,
    ) -> StoreResult<RunRecord> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // The row lock orders this cancel against a concurrent outcome from
        // another replica: whichever commits second sees the other's state.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND team_id = $2 FOR UPDATE"
        )))
        .bind(id.as_str())
        .bind(team_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(pg_error)?;
            return Err(StoreError::NotFound);
        };
        let before = run_from_row(&row)?;
        if before.state.is_terminal() {
            // Release the row lock now rather than when the pool next uses
            // this connection.
            tx.rollback().await.map_err(pg_error)?;
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
        .await
        .map_err(pg_error)?;
        // An assignment that was never claimed has no sandbox: end it now.
        sqlx::query(
            "UPDATE executions SET state = 'ended', ended_at = $1, updated_at = $1, message = $2 \
             WHERE run_id = $3 AND ended_at IS NULL AND state = 'assigned'",
        )
        .bind(at)
        .bind(message)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
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
            "UPDATE runs SET prompt_tokens = prompt_tokens + $1, \
             completion_tokens = completion_tokens + $2, inference_cost = inference_cost + $3 \
             WHERE id = $4",
        )
        .bind(i64::try_from(prompt).unwrap_or(i64::MAX))
        .bind(i64::try_from(completion).unwrap_or(i64::MAX))
        .bind(cost)
        .bind(run.as_str())
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn execution(&self, id: &ExecutionId) -> StoreResult<ExecutionRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
        execution_from_row(&row)
    }

    async fn execution_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<ExecutionRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        row.as_ref().map(execution_from_row).transpose()
    }

    async fn live_executions(&self, worker_id: &str) -> StoreResult<Vec<ExecutionRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE worker_id = $1 AND ended_at IS NULL"
        )))
        .bind(worker_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
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
        .await
        .map_err(pg_error)?;
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
        let done = sqlx::query(AssertSqlSafe(crate::leases::numbered(crate::leases::RENEW)))
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .bind(worker_id)
            .bind(team_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn expired_leases(
        &self,
        now: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, ExecutionRecord)>> {
        let rows = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::EXPIRED,
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("team_id")?, execution_from_row(row)?)))
            .collect()
    }

    async fn issuer_active(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool> {
        let row = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::ISSUER_ACTIVE,
        )))
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
        let sql = crate::leases::numbered(&crate::leases::last_executions(runs.len()));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for run in runs {
            query = query.bind(run.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn lost_executions(&self, run: &RunId) -> StoreResult<i64> {
        let row = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::LOST_COUNT,
        )))
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::END_LOST,
        )))
        .bind(at)
        .bind(at)
        .bind(message)
        .bind(exec.as_str())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::REQUEUE_LOST_RUN,
        )))
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
        let done = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::EXTEND_ALL,
        )))
        .bind(until)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn note_failure_reason(&self, exec: &ExecutionId, reason: &str) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::NOTE_FAILURE_REASON,
        )))
        .bind(reason)
        .bind(exec.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take_expired_lease(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::TAKE_EXPIRED,
        )))
        .bind(exec.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn team_leases(&self, team_id: i64) -> StoreResult<Vec<LeaseRecord>> {
        let rows = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::leases::OF_TEAM,
        )))
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
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        // The row lock orders this against a concurrent assignment, outcome or
        // second follow-up from another replica.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND team_id = $2 FOR UPDATE"
        )))
        .bind(id.as_str())
        .bind(team_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(pg_error)?;
            return Err(StoreError::NotFound);
        };
        let before = run_from_row(&row)?;
        if !before.state.is_terminal() {
            // Release the row lock now, not when the pool next reuses the connection.
            tx.rollback().await.map_err(pg_error)?;
            return Err(StoreError::Conflict(format!(
                "run {id} has not ended (it is {})",
                before.state
            )));
        }
        let live = sqlx::query("SELECT 1 FROM executions WHERE run_id = $1 AND ended_at IS NULL")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?;
        if live.is_some() {
            tx.rollback().await.map_err(pg_error)?;
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
        .await
        .map_err(pg_error)?;
        let reopened = run_from_row(&row)?;
        sqlx::query(
            "INSERT INTO run_followups (run_id, message, sender, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_str())
        .bind(&followup.message)
        .bind(&followup.sender)
        .bind(followup.at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(reopened)
    }

    async fn latest_followup(&self, id: &RunId) -> StoreResult<Option<FollowupRecord>> {
        let row = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::followups::LATEST_REOPENING,
        )))
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
        let row = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::followups::ADD,
        )))
        .bind(id.as_str())
        .bind(execution_id.as_str())
        .bind(&followup.message)
        .bind(&followup.sender)
        .bind(followup.at)
        .bind(execution_id.as_str())
        .bind(id.as_str())
        .fetch_all(&self.pool)
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
        let rows = sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::followups::PENDING,
        )))
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
        sqlx::query(AssertSqlSafe(crate::leases::numbered(
            crate::followups::DELIVERED,
        )))
        .bind(at)
        .bind(followup_id)
        .bind(execution_id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl PostgresStore {
    /// A run's events (of one kind, or all), executions in creation order.
    async fn events_of(
        &self,
        run: &RunId,
        kind: Option<&str>,
    ) -> StoreResult<Vec<(ExecutionId, SessionEvent)>> {
        let rows = sqlx::query(
            "SELECT e.execution_id AS execution_id, e.body AS body FROM run_events e \
             LEFT JOIN executions x ON x.id = e.execution_id \
             WHERE e.run_id = $1 AND ($2::text IS NULL OR e.kind = $2) \
             ORDER BY COALESCE(x.created_at, 0), e.execution_id, e.seq",
        )
        .bind(run.as_str())
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
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
impl EventStore for PostgresStore {
    async fn append_events(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        events: &[SessionEvent],
    ) -> StoreResult<u64> {
        if !events.is_empty() {
            // One statement for the whole batch (UNNEST of parallel arrays).
            let mut seqs = Vec::with_capacity(events.len());
            let mut ats = Vec::with_capacity(events.len());
            let mut kinds = Vec::with_capacity(events.len());
            let mut bodies = Vec::with_capacity(events.len());
            for event in events {
                let body = serde_json::to_value(event)
                    .map_err(|e| StoreError::Corrupt(format!("event: {e}")))?;
                kinds.push(
                    body.get("kind")
                        .and_then(|k| k.as_str())
                        .unwrap_or("unknown")
                        .to_owned(),
                );
                bodies.push(body.to_string());
                seqs.push(i64::try_from(event.seq).unwrap_or(i64::MAX));
                ats.push(event.at.unix_millis());
            }
            sqlx::query(
                "INSERT INTO run_events (run_id, execution_id, seq, at, kind, body) \
                 SELECT $1, $2, e.seq, e.at, e.kind, e.body \
                 FROM UNNEST($3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[]) AS e(seq, at, kind, body) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(run.as_str())
            .bind(exec.as_str())
            .bind(seqs)
            .bind(ats)
            .bind(kinds)
            .bind(bodies)
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        }
        self.last_seq(run, exec).await
    }

    async fn last_seq(&self, run: &RunId, exec: &ExecutionId) -> StoreResult<u64> {
        // Highest seq such that 1..=seq are all stored: in seq order, the
        // contiguous prefix is exactly the rows whose seq equals their rank.
        let last: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) FROM ( \
               SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rank FROM run_events \
               WHERE run_id = $1 AND execution_id = $2 AND seq >= 1 \
             ) e WHERE seq = rank",
        )
        .bind(run.as_str())
        .bind(exec.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(pg_error)?;
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
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(PROBE_WRITE.replace('?', "$1")))
            .bind(Timestamp::now().unix_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?x=y"),
            "postgres://u:***@h:5432/db?x=y"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        let config = PostgresConfig::new("postgres://u:secret@h/db");
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema_name("hangar_test_01"));
        assert!(!valid_schema_name("Hangar"));
        assert!(!valid_schema_name("a;drop"));
        assert!(!valid_schema_name("1abc"));
        assert!(!valid_schema_name("pg_temp"));
        assert!(!valid_schema_name(""));
    }
}
