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
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
    counters: std::sync::Arc<crate::WriteCounters>,
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
    let mut migrator = crate::sql::migrations!("postgres");
    if let Some(schema) = schema {
        migrator.create_schema(schema.to_owned());
    }
    migrator
}

/// Databases migrated before both dialects shared one numbering recorded
/// `shares` as version 4 (SQLite's 4, an index for listing runs, had no
/// PostgreSQL twin then). Shifts versions 4 and up by one so the shared
/// numbering applies: the files are unchanged, so their checksums still
/// match, and the new 4 runs next. Idempotent and safe under concurrent
/// replicas (the table is locked while it checks).
async fn renumber_legacy_migrations(pool: &PgPool) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(&mut *tx)
        .await?;
    if table.is_none() {
        return Ok(());
    }
    sqlx::query("LOCK TABLE _sqlx_migrations IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let legacy: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE version = 4 AND description = 'shares'",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if legacy.is_some() {
        // Through negatives: the primary key is checked row by row.
        sqlx::query("UPDATE _sqlx_migrations SET version = -version WHERE version >= 4")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE _sqlx_migrations SET version = 1 - version WHERE version <= -4")
            .execute(&mut *tx)
            .await?;
        tracing::info!("renumbered this database's migrations to the shared numbering");
    }
    tx.commit().await?;
    Ok(())
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
        let mut options = PgConnectOptions::from_str(&config.url)?;
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
            .await?;
        renumber_legacy_migrations(&pool).await?;
        migrator(config.schema.as_deref()).run(&pool).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        tracing::debug!(schema, origin, "connected to PostgreSQL");
        Ok(PostgresStore {
            pool,
            schema,
            origin,
            counters: Default::default(),
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

    /// [`EventStore::append_events`]' insert: one statement for the whole
    /// batch (`UNNEST` of parallel arrays).
    async fn insert_events(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        events: &[SessionEvent],
    ) -> StoreResult<()> {
        if !events.is_empty() {
            // One statement for the whole batch (UNNEST of parallel arrays).
            let mut seqs = Vec::with_capacity(events.len());
            let mut ats = Vec::with_capacity(events.len());
            let mut kinds = Vec::with_capacity(events.len());
            let mut bodies = Vec::with_capacity(events.len());
            for event in events {
                let (kind, body) = crate::sql::event_row(event)?;
                kinds.push(kind);
                bodies.push(body);
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
        .await?;
        }
        Ok(())
    }

    /// [`Store::settled`]: nothing to wait for, a commit is durable before
    /// anyone sees it.
    async fn settle_reads(&self) {}

    /// [`Store::broken`]: never; a failed commit fails only itself.
    #[allow(clippy::unused_self)]
    fn writer_broken(&self) -> Option<String> {
        None
    }

    /// [`Store::close`].
    async fn close_pools(&self) {
        self.pool.close().await;
    }

    /// A write of one statement: a connection of the pool in autocommit
    /// (the statement is durable when it returns), behind the same guard
    /// shape as SQLite's group-committed writes.
    pub(crate) async fn write(&self) -> StoreResult<PgAutocommit> {
        self.counters.add(1, 1);
        Ok(PgAutocommit(self.pool.acquire().await?))
    }

    /// A write of several statements that commit together or not at all.
    pub(crate) async fn transaction(
        &self,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.counters.add(1, 1);
        Ok(self.pool.begin().await?)
    }

    /// [`Store::write_counts`]: PostgreSQL commits each write on its own
    /// (counted as it begins).
    fn write_counters(&self) -> &crate::WriteCounters {
        &self.counters
    }
}

/// [`PostgresStore::write`]'s guard: each statement commits as it runs, so
/// `commit` and `rollback` have nothing left to do.
#[derive(Debug)]
pub(crate) struct PgAutocommit(sqlx::pool::PoolConnection<sqlx::Postgres>);

impl PgAutocommit {
    /// The statements already committed.
    #[allow(clippy::unused_async)]
    pub(crate) async fn commit(self) -> StoreResult<()> {
        Ok(())
    }
}

impl std::ops::Deref for PgAutocommit {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &sqlx::PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for PgAutocommit {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        &mut self.0
    }
}

impl crate::sql::Dialect for PostgresStore {
    type Db = sqlx::Postgres;
    type WriteConn = sqlx::PgConnection;

    fn read(&self) -> &PgPool {
        &self.pool
    }

    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const QUEUED_INDEX: &'static str = "";
    const NEXT_LIFECYCLE_SEQUENCE: &'static str = "hangar_next_lifecycle_sequence(r.team_id)";
    const JSON: crate::records::Dialect = crate::records::Dialect::Postgres;
}

crate::rows::row_decoders!(PgRow, |row: &PgRow, column: &str| -> StoreResult<bool> {
    Ok(row.try_get(column)?)
});

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
