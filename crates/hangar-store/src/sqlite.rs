//! The embedded SQLite store: WAL journal, `synchronous=FULL`, one file in the data directory.

crate::sql::shared_store!(SqliteStore);
mod group_commit;

use crate::*;
use group_commit::{Durability, GroupWriter, SqliteWrite};
use hangar_protocol::session::SessionEvent;
use hangar_protocol::{RunExecutionLocation, RunSourceType, Timestamp};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// SQLite implementation of [`Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Readers (WAL: they never block the writer).
    pool: SqlitePool,
    /// The one writing connection, shared by the writes that queue up
    /// behind each other (group commit: one transaction and one fsync for
    /// all of them, a savepoint each). SQLite admits one writer at a time;
    /// queueing writers here (FIFO, no sleeping) instead of in SQLite's busy
    /// handler (which sleeps 1, 2, 5, 10… ms between retries) keeps write
    /// latency flat.
    writer: GroupWriter,
    /// The pool `writer` borrows its connection from (closed last).
    writer_pool: SqlitePool,
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
            .busy_timeout(Duration::from_secs(5))
            // A batch's savepoints journal every page its writes change (to
            // roll one write back alone); on disk that journal is a temporary
            // file created, written and deleted by every batch past 64 KiB.
            .pragma("temp_store", "memory");
        // `synchronous=FULL` for every connection but the writer's, whose
        // commits the group writer syncs itself, off the write lock (see
        // `group_commit`: as durable as FULL).
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        // Its statement cache holds each write's statements with their
        // savepoint before them too (`group_commit/opening.rs`).
        let writes = (
            options
                .clone()
                .synchronous(SqliteSynchronous::Normal)
                .statement_cache_capacity(400),
            Durability::Synced(group_commit::wal_sync(wal.into())),
        );
        Self::with_options(options, writes, 8).await
    }

    /// An in-memory database (tests).
    pub async fn in_memory() -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(StoreError::Database)?
            .foreign_keys(true);
        // One connection: every connection to `:memory:` is a separate database.
        let writes = (options.clone(), Durability::AtCommit);
        Self::with_options(options, writes, 1).await
    }

    /// A store whose readers connect with `options` (at most `max`), and
    /// whose writer connects and makes its commits durable as `writes` says.
    async fn with_options(
        options: SqliteConnectOptions,
        (write_options, durability): (SqliteConnectOptions, Durability),
        max: u32,
    ) -> StoreResult<Self> {
        // No ping as a connection leaves the pool (`test_before_acquire`):
        // a round trip to its thread for a file on a local disk, which does
        // not hang up as a network peer can; a broken connection fails its
        // statement instead.
        let writer_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(write_options)
            .await?;
        crate::sql::migrations!("sqlite").run(&writer_pool).await?;
        if let Durability::Synced(_) = durability {
            // The writer's own syncs are only enough with a write-ahead log.
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&writer_pool)
                .await?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Unavailable(sqlx::Error::Configuration(
                    format!(
                        "SQLite could not use a write-ahead log for the database (journal mode \
                         {mode:?}); put the data directory on a local file system"
                    )
                    .into(),
                )));
            }
        }
        // In memory the readers share the writer's one connection.
        let writer = GroupWriter::new(writer_pool.clone(), durability, max > 1)
            .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        if max <= 1 {
            // In memory: every connection would be a separate database.
            return Ok(SqliteStore {
                pool: writer_pool.clone(),
                writer,
                writer_pool,
            });
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            pool,
            writer,
            writer_pool,
        })
    }

    /// A write of one statement: a savepoint in the open batch;
    /// [`SqliteWrite::commit`] returns once it is durable.
    pub(crate) async fn write(&self) -> StoreResult<SqliteWrite> {
        self.writer.begin().await
    }

    /// A write of several statements that commit together or not at all:
    /// on SQLite the same savepoint as [`SqliteStore::write`].
    pub(crate) async fn transaction(&self) -> StoreResult<SqliteWrite> {
        self.writer.begin().await
    }

    /// [`Store::write_counts`]: writes and the batches that committed them.
    fn write_counters(&self) -> &crate::WriteCounters {
        self.writer.counters()
    }
}

impl crate::sql::Dialect for SqliteStore {
    type Db = sqlx::Sqlite;
    type WriteConn = group_commit::WriteConn;

    fn read(&self) -> &SqlitePool {
        &self.pool
    }

    const FOR_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const QUEUED_INDEX: &'static str = " INDEXED BY runs_queued";
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

    /// [`EventStore::append_events`]' insert: one write, a statement per
    /// event (SQLite has no arrays to send a batch in one).
    async fn insert_events(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        events: &[SessionEvent],
    ) -> StoreResult<()> {
        let mut tx = self.transaction().await?;
        for event in events {
            let (kind, body) = crate::sql::event_row(event)?;
            sqlx::query(
                "INSERT INTO run_events (run_id, execution_id, seq, at, kind, body) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .bind(run.as_str())
            .bind(exec.as_str())
            .bind(i64::try_from(event.seq).unwrap_or(i64::MAX))
            .bind(event.at.unix_millis())
            .bind(kind)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::settled`]: waits for the syncs of the batches committed so far.
    async fn settle_reads(&self) {
        self.writer.settled().await;
    }

    /// [`Store::broken`]: why the group writer refuses writes, once a sync failed.
    fn writer_broken(&self) -> Option<String> {
        self.writer.broken()
    }

    /// [`Store::close`]: commits the open batch, then closes both pools.
    async fn close_pools(&self) {
        if let Err(e) = self.writer.close().await {
            tracing::warn!(error = %e, "the last writes did not commit at close");
        }
        self.pool.close().await;
        self.writer_pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Dialect;

    /// The queue scans read the partial index of unassigned runs, not every
    /// QUEUED run (those assigned but not yet claimed pile up under load).
    #[tokio::test]
    async fn the_queue_scans_read_only_unassigned_runs_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hangar.db"))
            .await
            .unwrap();
        for sql in [
            crate::sql::queued_runs::<SqliteStore>(),
            crate::stats::queue::<SqliteStore>(),
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(256_i64)
                    .fetch_all(store.read())
                    .await
                    .unwrap();
            let steps: Vec<&str> = plan.iter().map(|(.., step)| step.as_str()).collect();
            assert!(
                steps.iter().any(|s| s.contains("USING INDEX runs_queued")),
                "{sql}: {steps:?}"
            );
            assert!(
                !steps.iter().any(|s| s.contains("FOR ORDER BY")),
                "{sql}: {steps:?}"
            );
        }
    }
}
