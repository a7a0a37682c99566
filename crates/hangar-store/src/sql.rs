//! The store's statements, written once for both databases.
//!
//! Both schemas have the same tables and columns, and every statement uses
//! `$N` placeholders, which SQLite accepts too. So each storage trait is
//! implemented once, by a macro in this module's children that the two stores
//! invoke through [`shared_store!`]: the method bodies are the same code,
//! compiled against each driver's own types (no `Any` driver, no runtime
//! translation).
//!
//! What truly differs is behind [`Dialect`], each item with the reason:
//! which connection pool reads, row locks, and the JSON operators of run
//! filters. Writes go through two methods each store has, `write()` (one
//! statement) and `transaction()` (several that commit together), whose
//! guards have one shape: on SQLite a savepoint in a group commit
//! (`sqlite/group_commit.rs`), on PostgreSQL an autocommit connection and a
//! transaction. The few methods that differ in more than that stay in
//! `sqlite.rs` and `postgres.rs` (batched event inserts, signals).
//!
//! To add a query: write it here once, in the module of its trait, and run
//! the conformance suite (`cargo nextest run -p hangar-store`), which runs
//! every behaviour on SQLite in memory, SQLite on disk and PostgreSQL.

pub(crate) mod accounts;
pub(crate) mod api_keys;
pub(crate) mod environments;
pub(crate) mod events;
pub(crate) mod integrations;
pub(crate) mod lifecycle;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod shares;
pub(crate) mod usage;
pub(crate) mod webhooks;

/// The columns a [`crate::RunRecord`] is decoded from.
pub(crate) const RUN_COLUMNS: &str = "id, team_id, creator_user_id, title, prompt, state, source, \
    execution_location, config, created_at, updated_at, started_at, status_message, error_code, \
    current_execution_id, sandbox_running, prompt_tokens, completion_tokens, inference_cost, \
    schedule_id, schedule_name, schedule_cron";

/// The queue scan: runs QUEUED and not yet assigned, oldest first, at most
/// `$1`, through the partial index of them (see [`Dialect::QUEUED_INDEX`]).
pub(crate) fn queued_runs<D: Dialect>() -> String {
    let (index, skip_locked) = (D::QUEUED_INDEX, D::SKIP_LOCKED);
    format!(
        "SELECT {RUN_COLUMNS} FROM runs{index} WHERE state = 'QUEUED' AND current_execution_id IS NULL \
         ORDER BY created_at, id LIMIT $1{skip_locked}"
    )
}

/// The columns a [`crate::ExecutionRecord`] is decoded from.
pub(crate) const EXECUTION_COLUMNS: &str =
    "id, run_id, worker_id, state, created_at, ended_at, exit_code, failure_reason, message";

/// Binds the ten values every new run is inserted with, as `$1`..`$10`:
/// id, team, creator, title, prompt, source, execution location, worker
/// host, config (JSON) and creation time. The statements (queued, local,
/// from a schedule) differ only in what follows.
pub(crate) fn bind_new_run<'q, DB>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    run: &crate::NewRun,
) -> crate::StoreResult<sqlx::query::Query<'q, DB, DB::Arguments>>
where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let config = serde_json::to_string(&run.config)
        .map_err(|e| crate::StoreError::Corrupt(format!("run config: {e}")))?;
    Ok(query
        .bind(run.id.0.clone())
        .bind(run.team_id)
        .bind(run.creator_user_id)
        .bind(run.title.clone())
        .bind(run.prompt.clone())
        .bind(run.source.as_str().to_owned())
        .bind(run.execution_location.as_str().to_owned())
        .bind(run.config.worker_host.clone())
        .bind(config)
        .bind(run.created_at))
}

/// Inserts an execution assigned to a worker (`assign`, and a run created
/// already assigned), bound by [`bind_assigned_execution`].
pub(crate) const INSERT_ASSIGNED_EXECUTION: &str = "INSERT INTO executions (id, run_id, \
    worker_id, state, token_hash, created_at, updated_at, lease_holder, lease_expires_at) \
    VALUES ($1, $2, $3, 'assigned', $4, $5, $5, $6, $7)";

/// Binds [`INSERT_ASSIGNED_EXECUTION`]'s values for `exec`.
pub(crate) fn bind_assigned_execution<'q, DB>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    exec: &crate::NewExecution,
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Vec<u8>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    query
        .bind(exec.id.0.clone())
        .bind(exec.run_id.0.clone())
        .bind(exec.worker_id.as_str().to_owned())
        .bind(exec.token_hash.clone())
        .bind(exec.created_at)
        .bind(exec.lease_holder.clone())
        .bind(exec.lease_expires_at)
}

/// An event as stored: its `kind` (a column, for filtering) and its JSON body.
pub(crate) fn event_row(
    event: &hangar_protocol::session::SessionEvent,
) -> crate::StoreResult<(String, String)> {
    let body = serde_json::to_value(event)
        .map_err(|e| crate::StoreError::Corrupt(format!("event: {e}")))?;
    let kind = body
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("unknown")
        .to_owned();
    Ok((kind, body.to_string()))
}

/// What the shared statements need to know about a database.
pub(crate) trait Dialect {
    /// The sqlx driver.
    type Db: sqlx::Database;

    /// The pool reads go to. On SQLite a pool of readers (WAL: they never
    /// block the writer); on PostgreSQL the one pool.
    ///
    /// Writes are not here but in two inherent methods of each store, whose
    /// guards have the same shape (dereference to a connection, `commit`,
    /// `rollback`): `write()` for one statement and `transaction()` for
    /// several that commit together. On SQLite both are a savepoint in the
    /// writer's open batch (group commit: one fsync for the writes that queue
    /// up together; `commit` returns once the batch has committed); on
    /// PostgreSQL an autocommit connection and a transaction of the pool.
    fn read(&self) -> &sqlx::Pool<Self::Db>;

    /// What a write guard dereferences to: the executor of the write's
    /// statements, and what the helpers a write calls take. PostgreSQL's is
    /// the connection; SQLite's runs the write's savepoint with its first
    /// statement (`sqlite/group_commit/opening.rs`).
    type WriteConn;

    /// Appended to a `SELECT` that must lock the rows it reads until the
    /// transaction ends. PostgreSQL replicas write concurrently, so a
    /// read-then-write needs ` FOR UPDATE`; SQLite has no row locks (nor the
    /// syntax) and needs none: its single writer connection runs one write
    /// transaction at a time.
    const FOR_UPDATE: &'static str;

    /// Appended to the queue scan: ` FOR UPDATE SKIP LOCKED` on PostgreSQL
    /// passes over runs another replica is assigning at this moment; SQLite
    /// has one writer, so nothing to skip.
    const SKIP_LOCKED: &'static str;

    /// After `FROM runs` in the scans of the queue (runs QUEUED and not yet
    /// assigned). SQLite's planner, without statistics, prefers the index on
    /// `state` alone, which holds every QUEUED run, those assigned but not
    /// yet claimed too: under a backlog each scan read them all to skip
    /// them. So SQLite is told ` INDEXED BY runs_queued`, the partial index
    /// of the unassigned ones; PostgreSQL's planner picks it by itself.
    const QUEUED_INDEX: &'static str;

    /// The next lifecycle sequence number of the team of the run row `r`,
    /// gap-free and in commit order. SQLite: `MAX + 1`, which cannot race
    /// behind its one writer. PostgreSQL: a function that locks the team's
    /// counter row until commit (a migration creates it), since replicas
    /// insert concurrently.
    const NEXT_LIFECYCLE_SEQUENCE: &'static str;

    /// How run filters read JSON inside the `config` column.
    const JSON: crate::records::Dialect;
}

/// The migrations of the dialect whose SQL files are in `migrations/$dir`:
/// one numbering for both (a test checks both folders hold the same names).
/// Listed here rather than with `sqlx::migrate!`, which needs sqlx's
/// `macros` feature and so a second build of both drivers for the host.
macro_rules! migrations {
    ($dir:literal) => {
        $crate::sql::migrator(&[
            (
                1,
                "init",
                include_str!(concat!("../migrations/", $dir, "/0001_init.sql")),
            ),
            (
                2,
                "schedules",
                include_str!(concat!("../migrations/", $dir, "/0002_schedules.sql")),
            ),
            (
                3,
                "environments",
                include_str!(concat!("../migrations/", $dir, "/0003_environments.sql")),
            ),
            (
                4,
                "run_listing_index",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0004_run_listing_index.sql"
                )),
            ),
            (
                5,
                "shares",
                include_str!(concat!("../migrations/", $dir, "/0005_shares.sql")),
            ),
            (
                6,
                "accounts",
                include_str!(concat!("../migrations/", $dir, "/0006_accounts.sql")),
            ),
            (
                7,
                "lifecycle_workers",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0007_lifecycle_workers.sql"
                )),
            ),
            (
                8,
                "run_followups",
                include_str!(concat!("../migrations/", $dir, "/0008_run_followups.sql")),
            ),
            (
                9,
                "store_probe",
                include_str!(concat!("../migrations/", $dir, "/0009_store_probe.sql")),
            ),
            (
                10,
                "execution_leases",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0010_execution_leases.sql"
                )),
            ),
            (
                11,
                "live_followups",
                include_str!(concat!("../migrations/", $dir, "/0011_live_followups.sql")),
            ),
            (
                12,
                "execution_issuer",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0012_execution_issuer.sql"
                )),
            ),
            (
                13,
                "worker_tokens",
                include_str!(concat!("../migrations/", $dir, "/0013_worker_tokens.sql")),
            ),
            (
                14,
                "llm_caller_usage",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0014_llm_caller_usage.sql"
                )),
            ),
            (
                15,
                "runs_state_index",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0015_runs_state_index.sql"
                )),
            ),
            (
                16,
                "integrations",
                include_str!(concat!("../migrations/", $dir, "/0016_integrations.sql")),
            ),
            (
                17,
                "webhooks",
                include_str!(concat!("../migrations/", $dir, "/0017_webhooks.sql")),
            ),
            (
                18,
                "integration_threads",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0018_integration_threads.sql"
                )),
            ),
            (
                19,
                "runs_queued_unassigned",
                include_str!(concat!(
                    "../migrations/",
                    $dir,
                    "/0019_runs_queued_unassigned.sql"
                )),
            ),
        ])
    };
}

pub(crate) use migrations;

/// A migrator of `(version, name, sql)` migrations.
pub(crate) fn migrator(
    migrations: &[(i64, &'static str, &'static str)],
) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
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
            .collect(),
    )
}

/// Implements every storage trait whose statements are shared, for `$store`
/// (which implements [`Dialect`] and has the row decoders of
/// [`crate::rows::row_decoders`] in scope).
macro_rules! shared_store {
    ($store:ty) => {
        $crate::sql::runs::run_store!($store);
        $crate::sql::events::event_store!($store);
        $crate::sql::accounts::account_store!($store);
        $crate::sql::api_keys::api_key_store!($store);
        $crate::sql::environments::environment_store!($store);
        $crate::sql::integrations::integration_store!($store);
        $crate::sql::webhooks::webhook_store!($store);
        $crate::sql::lifecycle::lifecycle_store!($store);
        $crate::sql::schedules::schedule_store!($store);
        $crate::sql::shares::share_store!($store);
        $crate::sql::usage::usage_store!($store);
        $crate::stats::stats_store!($store);
        $crate::worker_tokens::impl_worker_token_store!($store);
    };
}

pub(crate) use shared_store;

#[cfg(test)]
mod tests {
    /// The names in a migrations folder, sorted.
    fn names(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_dialects_number_their_migrations_alike_and_list_every_file() {
        let sqlite = names("sqlite");
        assert_eq!(sqlite, names("postgres"));
        let listed = super::migrations!("sqlite");
        let listed: Vec<String> = listed
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.description))
            .collect();
        assert_eq!(listed, sqlite);
    }
}
