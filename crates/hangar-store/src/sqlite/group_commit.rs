//! Group commit for SQLite's one writer.
//!
//! SQLite admits one writer, and with `synchronous=FULL` every commit waits
//! for an fsync. Committing each write on its own caps the store at one
//! fsync per write. Here the writes that queue up behind each other share
//! one transaction and one fsync instead, and nothing is given up for it:
//!
//! - **Each write is its own savepoint** inside the batch's transaction, so
//!   a statement that fails (a constraint, a conflict) is rolled back to its
//!   savepoint and fails only its caller; the batch goes on.
//! - **Nothing is acknowledged before the commit.** [`SqliteWrite::commit`]
//!   returns only once the transaction holding the write has committed (or
//!   failed, when every write in it learns the error): a crash before then
//!   loses only writes whose callers were never answered.
//! - **The batch commits when nobody is waiting to join it**, or after
//!   [`MAX_BATCH`] writes: a lone writer commits at once, as before, and
//!   under load the fsyncs are shared by whoever arrived meanwhile.
//!
//! - **The fsync does not hold the writer.** The writer's connection runs
//!   with `synchronous=NORMAL`, so SQLite's COMMIT only appends the batch to
//!   the write-ahead log; a [`Syncer`] thread then `fdatasync`s the log
//!   while the next batch already runs, and the batch's writes are
//!   acknowledged only once a sync that began after their COMMIT has
//!   returned. This is as durable as `synchronous=FULL` (which syncs the same
//!   file at the same point, but under the write lock): the log is
//!   append-only, so a sync covers every batch committed before it began, and
//!   SQLite syncs the log before each checkpoint copies it into the
//!   database. SQLite's readers may see a batch before it is durable; what
//!   is read leaves the server only after [`GroupWriter::settled`] (every
//!   batch whose COMMIT began by then is durable or failed), as with
//!   `synchronous=FULL`, where a batch becomes visible after its fsync.
//!   A failed sync fails its batches and every write after it until
//!   the store is reopened: after a failed `fsync` the kernel may have
//!   dropped the unwritten pages, so nothing written since can be vouched for.
//!
//! Who commits: the writer that finds no other writer queued behind it
//! commits before it lets go of the lock. Otherwise it lets the next writer
//! in and waits for the batch's outcome, or for the lock, whichever comes
//! first: a writer that gets the lock back while its batch is still open
//! commits the batch itself. So a batch cannot be left open by a writer that
//! gives up (its future dropped) while others wait on it.

use crate::{StoreError, StoreResult, WriteCounters};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{Mutex, watch};

mod opening;
mod sync;

use opening::Opening;
pub(crate) use opening::WriteConn;
pub(crate) use sync::{Durability, wal_sync};
use sync::{Settling, Syncer};

/// Most writes one batch takes before it commits even with writers queued,
/// so a steady stream of writes cannot hold acknowledgements back for long.
const MAX_BATCH: usize = 128;

/// The SQLite writer: one connection at a time, shared by the writes of a batch.
#[derive(Clone, Debug)]
pub(crate) struct GroupWriter {
    batch: Arc<Mutex<Batch>>,
    /// Writers waiting for the lock to begin a write (not those that wrote
    /// and now wait for a commit).
    arriving: Arc<AtomicUsize>,
    counters: Arc<WriteCounters>,
    /// Why writes are refused, once a sync has failed.
    broken: Arc<OnceLock<String>>,
    /// Batches whose COMMIT has begun (numbered from 1), and the highest
    /// number up to which every batch is durable or failed.
    settling: Arc<Settling>,
}

/// Where a batch's outcome is published, and read by its writes.
type Published = watch::Sender<Option<Outcome>>;
type Outcomes = watch::Receiver<Option<Outcome>>;

/// How a batch ended, as every write in it learns.
#[derive(Clone, Debug)]
enum Outcome {
    Committed,
    /// The transaction did not commit; `unavailable` when the database was
    /// out of space or otherwise temporarily unusable.
    Failed {
        message: String,
        unavailable: bool,
    },
}

impl Outcome {
    fn broken(why: &str) -> Self {
        Outcome::Failed {
            message: why.to_owned(),
            unavailable: true,
        }
    }

    fn failed(e: &StoreError) -> Self {
        Outcome::Failed {
            message: e.to_string(),
            unavailable: matches!(e, StoreError::Unavailable(_)),
        }
    }

    fn into_result(self) -> StoreResult<()> {
        match self {
            Outcome::Committed => Ok(()),
            Outcome::Failed {
                message,
                unavailable,
            } => {
                let e = sqlx::Error::Io(std::io::Error::other(format!(
                    "the transaction holding this write did not commit: {message}"
                )));
                Err(if unavailable {
                    StoreError::Unavailable(e)
                } else {
                    StoreError::Database(e)
                })
            }
        }
    }
}

#[derive(Debug)]
struct Batch {
    pool: SqlitePool,
    /// The connection with the batch's transaction open, from the first
    /// write of a batch to its commit. The transaction is begun and ended
    /// with plain statements, not sqlx's `Transaction`: SQLite rolls a
    /// transaction back by itself on some errors (a full disk), and sqlx's
    /// bookkeeping would then disagree with the connection.
    tx: Option<PoolConnection<Sqlite>>,
    /// The connection between batches, when the writer keeps it (see
    /// [`GroupWriter::new`]).
    idle: Option<PoolConnection<Sqlite>>,
    keep_connection: bool,
    /// Writes released into `tx` that wait for its commit.
    writes: usize,
    /// What the current write must run before its first statement (see
    /// `opening.rs`); `None` once it ran.
    pending: Option<Opening>,
    /// A write's guard was dropped inside its savepoint (an early error
    /// return, or its future dropped): that savepoint is rolled back before
    /// anything else runs on the connection.
    abandoned: bool,
    /// Where the outcome of the open batch is published.
    outcome: Published,
    counters: Arc<WriteCounters>,
    /// Syncs committed batches; `None` when COMMIT makes them durable.
    syncer: Option<Syncer>,
    settling: Arc<Settling>,
    /// The number of the batch whose COMMIT is under way.
    committing: Option<u64>,
}

impl GroupWriter {
    /// A writer over `pool`, whose commits become durable as `durability`
    /// says. With `keep_connection` it keeps the connection it borrows from
    /// `pool` between batches: sqlx pings a connection as it goes back to its
    /// pool, and may as it leaves, each a round trip to the connection's
    /// thread that the next batch would wait for. Without it (a pool the
    /// readers share: a database in memory) it gives it back after each batch.
    pub(crate) fn new(
        pool: SqlitePool,
        durability: Durability,
        keep_connection: bool,
    ) -> std::io::Result<Self> {
        let counters = Arc::new(WriteCounters::default());
        let broken = Arc::new(OnceLock::new());
        let settling = Arc::new(Settling {
            begun: AtomicU64::new(0),
            settled: watch::channel(0).0,
        });
        let syncer = match durability {
            Durability::AtCommit => None,
            Durability::Synced(sync) => {
                Some(Syncer::start(sync, broken.clone(), settling.clone())?)
            }
        };
        Ok(GroupWriter {
            batch: Arc::new(Mutex::new(Batch {
                pool,
                tx: None,
                idle: None,
                keep_connection,
                writes: 0,
                pending: None,
                abandoned: false,
                outcome: watch::channel(None).0,
                counters: counters.clone(),
                syncer,
                settling: settling.clone(),
                committing: None,
            })),
            arriving: Arc::new(AtomicUsize::new(0)),
            counters,
            broken,
            settling,
        })
    }

    /// Returns once every batch whose COMMIT began before the call is
    /// durable (or failed): anything a reader saw before calling it is on
    /// disk. Call it before what was read leaves the server.
    pub(crate) async fn settled(&self) {
        let begun = self.settling.begun.load(Ordering::SeqCst);
        let mut settled = self.settling.settled.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = settled.wait_for(|settled| *settled >= begun).await;
    }

    /// Why writes are refused until the store is reopened, once a sync failed.
    pub(crate) fn broken(&self) -> Option<String> {
        self.broken.get().cloned()
    }

    /// Writes committed, and the batches that committed them.
    pub(crate) fn counters(&self) -> &WriteCounters {
        &self.counters
    }

    /// Begins a write: waits for the writer, and joins (or opens) the batch.
    /// The write's savepoint (and a new batch's transaction) opens with its
    /// first statement.
    pub(crate) async fn begin(&self) -> StoreResult<SqliteWrite> {
        if let Some(why) = self.broken.get() {
            Outcome::broken(why).into_result()?;
        }
        let mut batch = {
            let _arriving = Arriving::new(&self.arriving);
            self.batch.clone().lock_owned().await
        };
        batch.settle().await;
        // The transaction and the savepoint open with the write's first
        // statement, in the same round trip (`opening.rs`).
        if batch.tx.is_none() {
            let conn = match batch.idle.take() {
                Some(conn) => conn,
                None => batch.pool.acquire().await?,
            };
            batch.tx = Some(conn);
            batch.pending = Some(Opening::Batch);
        } else {
            batch.pending = Some(Opening::Write);
        }
        Ok(SqliteWrite {
            conn: WriteConn { batch: Some(batch) },
            writer: self.clone(),
        })
    }

    /// Commits the open batch, if any, and gives the connection back to its
    /// pool (at shutdown, before the pool closes).
    pub(crate) async fn close(&self) -> StoreResult<()> {
        let flushed = self.flush().await;
        self.batch.lock().await.idle = None;
        flushed
    }

    /// Commits the open batch, if any.
    pub(crate) async fn flush(&self) -> StoreResult<()> {
        let mut batch = self.batch.lock().await;
        batch.settle().await;
        let committing = batch.commit().await;
        drop(batch);
        committing.outcome().await
    }

    /// Waits for the outcome of the batch `outcome` reports on; commits that
    /// batch itself if it gets the lock while the batch is still open.
    async fn outcome_of(&self, outcome: Outcomes) -> StoreResult<()> {
        let committing = tokio::select! {
            biased;
            published = published(outcome.clone()) => return published,
            mut batch = self.batch.lock() => {
                // Batches end (or go to the syncer) only under the lock: if
                // ours is still the open batch's channel, it is open now.
                if !outcome.same_channel(&batch.outcome.subscribe()) {
                    drop(batch);
                    return published(outcome).await;
                }
                batch.settle().await;
                batch.commit().await
            }
        };
        committing.outcome().await
    }
}

/// Counts a writer waiting for the lock, for as long as it waits (even if
/// its future is dropped meanwhile).
struct Arriving<'a>(&'a AtomicUsize);

impl<'a> Arriving<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Arriving(count)
    }
}

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits for the outcome published on `outcome`.
async fn published(mut outcome: Outcomes) -> StoreResult<()> {
    // Owned, so that no `watch::Ref` (not `Send`) is held across an await.
    match outcome.wait_for(Option::is_some).await.map(|o| o.clone()) {
        Ok(Some(o)) => o.into_result(),
        Ok(None) | Err(_) => Outcome::broken("the writer closed").into_result(),
    }
}

/// A batch that has ended, or is being synced: its outcome, awaited once
/// the writer's lock is let go (so the next batch runs meanwhile).
#[must_use]
enum Committing {
    Ended(StoreResult<()>),
    Syncing(Outcomes),
}

impl Committing {
    async fn outcome(self) -> StoreResult<()> {
        match self {
            Committing::Ended(result) => result,
            Committing::Syncing(outcome) => published(outcome).await,
        }
    }
}

impl Batch {
    fn conn(&mut self) -> &mut SqliteConnection {
        match self.tx.as_mut() {
            Some(conn) => conn,
            // `begin` opens the transaction before it hands out a write.
            None => unreachable!("a write runs inside its batch's transaction"),
        }
    }

    /// Rolls back the savepoint of an abandoned write. If even that fails,
    /// the transaction is broken: it is rolled back and every write in it
    /// fails.
    async fn settle(&mut self) {
        if !self.abandoned {
            return;
        }
        self.abandoned = false;
        if self.unopened() {
            return;
        }
        let Some(conn) = self.tx.as_mut() else {
            return;
        };
        let undone = sqlx::query("ROLLBACK TO hangar_write; RELEASE hangar_write")
            .execute(&mut **conn)
            .await;
        if let Err(e) = undone {
            // SQLite rolled the whole transaction back by itself (a full
            // disk, an I/O error): every write in it fails.
            self.fail(&StoreError::Unavailable(e)).await;
        }
    }

    /// Whether the current write ended before it ran a statement, so opened
    /// nothing: forgets its opening (and a transaction never begun gives its
    /// connection back).
    fn unopened(&mut self) -> bool {
        match self.pending.take() {
            None => false,
            Some(Opening::Write) => true,
            Some(Opening::Batch) => {
                if let Some(conn) = self.tx.take() {
                    self.check_in(conn);
                }
                true
            }
        }
    }

    /// Commits the batch; every write in it learns the outcome once the
    /// batch is durable (at once, or when [`Committing::outcome`] returns).
    async fn commit(&mut self) -> Committing {
        let Some(tx) = self.tx.take() else {
            if self.writes > 0 {
                // A commit was interrupted (its future dropped) after it took
                // the transaction: whether it committed is unknown.
                let e = StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(
                    "the commit was interrupted",
                )));
                self.publish(Outcome::failed(&e));
                if let Some(number) = self.committing.take() {
                    self.settle_unsynced(number);
                }
                return Committing::Ended(Err(e));
            }
            return Committing::Ended(Ok(()));
        };
        let mut conn = tx;
        // Numbered before it can become visible to readers (see `settled`).
        let number = self.settling.begun.fetch_add(1, Ordering::SeqCst) + 1;
        self.committing = Some(number);
        // Writes leave their savepoints open (`SqliteWrite::commit`). Had
        // SQLite rolled the batch's transaction back by itself, a later
        // write's SAVEPOINT would have begun a new one, and a bare COMMIT
        // would acknowledge writes that are gone: the batch's savepoint is
        // released first, and fails unless the transaction is still the one
        // the batch began.
        match sqlx::query("RELEASE hangar_batch; COMMIT")
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {
                self.check_in(conn);
                self.committing = None;
                self.counters
                    .add(u64::try_from(self.writes).unwrap_or(u64::MAX), 1);
                if self.syncer.is_none() {
                    self.settling.settle(number);
                    self.publish(Outcome::Committed);
                    return Committing::Ended(Ok(()));
                }
                let outcome = self.outcome.subscribe();
                let ended = self.end();
                let queued = self
                    .syncer
                    .as_ref()
                    .is_some_and(|syncer| syncer.queue.send((number, Some(ended))).is_ok());
                if !queued {
                    // The thread is gone (it panicked): nothing can be vouched for.
                    return Committing::Ended(
                        Outcome::broken("the write-ahead log's sync thread stopped").into_result(),
                    );
                }
                Committing::Syncing(outcome)
            }
            Err(e) => {
                // Never the caller's mistake: a full disk, an I/O error, or a
                // transaction SQLite already rolled back by itself.
                let e = StoreError::Unavailable(e);
                self.committing = None;
                self.settle_unsynced(number);
                roll_back(conn).await;
                self.publish(Outcome::failed(&e));
                Committing::Ended(Err(e))
            }
        }
    }

    /// Settles batch `number`, which did not commit, once the batches
    /// before it (which may be syncing) have settled.
    fn settle_unsynced(&self, number: u64) {
        match &self.syncer {
            Some(syncer) => {
                let _ = syncer.queue.send((number, None));
            }
            None => self.settling.settle(number),
        }
    }

    /// Keeps the connection of a batch that ended (or gives it back to the
    /// pool, as [`GroupWriter::new`] says).
    fn check_in(&mut self, conn: PoolConnection<Sqlite>) {
        if self.keep_connection {
            self.idle = Some(conn);
        }
    }

    /// Rolls the batch back: every write in it fails with `e`.
    async fn fail(&mut self, e: &StoreError) {
        if let Some(conn) = self.tx.take() {
            roll_back(conn).await;
        }
        self.publish(Outcome::failed(e));
    }

    /// Ends the batch: its writes learn `outcome`, and the next batch starts
    /// with a channel of its own.
    fn publish(&mut self, outcome: Outcome) {
        self.end().send_replace(Some(outcome));
    }

    /// Ends the batch: the next one starts with a channel of its own, and
    /// the ended batch's is returned for its outcome.
    fn end(&mut self) -> Published {
        self.writes = 0;
        std::mem::replace(&mut self.outcome, watch::channel(None).0)
    }
}

/// Ends whatever transaction `conn` still has (SQLite may have rolled it
/// back already) before it goes back to the pool; a connection that cannot
/// even do that is closed rather than reused.
async fn roll_back(mut conn: PoolConnection<Sqlite>) {
    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        let autocommit = e.to_string().contains("no transaction is active");
        if !autocommit {
            tracing::warn!(error = %e, "closing the writer connection: its transaction did not roll back");
            conn.close_on_drop();
        }
    }
}

/// One write in a batch: a savepoint on the writer's connection, which it
/// dereferences to ([`WriteConn`], an executor). [`SqliteWrite::commit`]
/// returns once the write is durable; dropping the guard (or
/// [`SqliteWrite::rollback`]) undoes it.
#[derive(Debug)]
pub(crate) struct SqliteWrite {
    conn: WriteConn,
    writer: GroupWriter,
}

impl SqliteWrite {
    /// Keeps this write and returns once the batch holding it has committed;
    /// fails if the batch does not commit.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let arriving = self.writer.arriving.clone();
        let batch = self.conn.batch();
        batch.unopened();
        if batch.tx.is_none() {
            // The batch's first write, and it ran no statement: no
            // transaction was begun, nothing to commit.
            self.conn.batch = None;
            return Ok(());
        }
        // The savepoint stays open: the next write's nests inside it, and the
        // batch's COMMIT releases them all (a round trip less per write). A
        // transaction SQLite rolled back by itself (a full disk, an I/O
        // error) fails at that COMMIT, and every write in it with it.
        batch.writes += 1;
        let outcome = batch.outcome.subscribe();
        if arriving.load(Ordering::Acquire) == 0 || batch.writes >= MAX_BATCH {
            let committing = batch.commit().await;
            self.conn.batch = None;
            return committing.outcome().await;
        }
        // Let the next writer in; its write joins this batch.
        self.conn.batch = None;
        self.writer.outcome_of(outcome).await
    }

    /// Undoes this write; the rest of the batch goes on.
    pub(crate) async fn rollback(mut self) -> StoreResult<()> {
        let arriving = self.writer.arriving.clone();
        let batch = self.conn.batch();
        if !batch.unopened() {
            let undone = sqlx::query("ROLLBACK TO hangar_write; RELEASE hangar_write")
                .execute(batch.conn())
                .await;
            if let Err(e) = undone {
                // As in `commit`: the transaction is gone.
                let e = StoreError::Unavailable(e);
                batch.fail(&e).await;
                self.conn.batch = None;
                return Err(e);
            }
        }
        // Others may wait on the batch, and its transaction holds the
        // connection: commit it now if nobody follows to do it.
        let lone = arriving.load(Ordering::Acquire) == 0;
        let committing = if lone {
            batch.commit().await
        } else {
            Committing::Ended(Ok(()))
        };
        self.conn.batch = None;
        committing.outcome().await
    }
}

impl Drop for SqliteWrite {
    fn drop(&mut self) {
        let Some(mut batch) = self.conn.batch.take() else {
            return;
        };
        // Dropped inside its savepoint: whoever takes the lock next undoes it.
        batch.abandoned = true;
        drop(batch);
        if self.writer.arriving.load(Ordering::Acquire) == 0
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Nobody follows to settle it: do it now, or the batch's
            // transaction (and the connection) would stay open until the next
            // write. The task ends once it has had the lock.
            let writer = self.writer.clone();
            runtime.spawn(async move {
                if let Err(e) = writer.flush().await {
                    tracing::warn!(error = %e, "committing the writes before an abandoned one failed");
                }
            });
        }
    }
}

impl Deref for SqliteWrite {
    type Target = WriteConn;

    fn deref(&self) -> &WriteConn {
        &self.conn
    }
}

impl DerefMut for SqliteWrite {
    fn deref_mut(&mut self) -> &mut WriteConn {
        &mut self.conn
    }
}

#[cfg(test)]
// The tests own the tasks they spawn and join them.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::sync::SyncFn;
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    /// A writer of a table `t` in `dir`, synced as the store's is.
    pub(super) async fn writer(dir: &std::path::Path) -> (GroupWriter, SqlitePool) {
        let sync = wal_sync(dir.join("batch.db-wal"));
        synced_writer(dir, sync).await
    }

    /// A writer of a table `t` in `dir` whose commits `sync` makes durable
    /// (keeping its connection, as the store's), and a pool that reads it.
    async fn synced_writer(dir: &std::path::Path, sync: SyncFn) -> (GroupWriter, SqlitePool) {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("batch.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        let pool = || {
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
        };
        let (writes, reads) = (pool().await.unwrap(), pool().await.unwrap());
        sqlx::query("CREATE TABLE t (v TEXT PRIMARY KEY)")
            .execute(&writes)
            .await
            .unwrap();
        let writer = GroupWriter::new(writes, Durability::Synced(sync), true).unwrap();
        (writer, reads)
    }

    /// One write: insert `v` and commit it, or roll it back on error.
    pub(super) async fn insert(writer: &GroupWriter, v: &str) -> StoreResult<()> {
        let mut w = writer.begin().await?;
        sqlx::query("INSERT INTO t (v) VALUES ($1)")
            .bind(v)
            .execute(&mut *w)
            .await?;
        w.commit().await
    }

    pub(super) async fn rows(pool: &SqlitePool) -> Vec<String> {
        sqlx::query_scalar("SELECT v FROM t ORDER BY v")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// Waits until `n` writers queue for the lock.
    pub(super) async fn queued(writer: &GroupWriter, n: usize) {
        while writer.arriving.load(Ordering::Acquire) < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_lone_write_commits_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(dir.path()).await;
        insert(&writer, "a").await.unwrap();
        insert(&writer, "b").await.unwrap();
        assert_eq!(
            writer.counters().snapshot(),
            crate::WriteCounts {
                writes: 2,
                commits: 2
            }
        );
        assert_eq!(rows(&pool).await, ["a", "b"]);
    }

    #[tokio::test]
    async fn the_writer_keeps_its_connection_between_batches_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _reads) = writer(dir.path()).await;
        let pool = writer.batch.lock().await.pool.clone();
        insert(&writer, "a").await.unwrap();
        insert(&writer, "b").await.unwrap();
        // Time for a connection given back to come back (see below).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!((pool.size(), pool.num_idle()), (1, 0));
        writer.close().await.unwrap();
        // sqlx gives it back to the pool in a task of its own.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while pool.num_idle() != 1 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the closed writer gives its connection back");
    }

    #[tokio::test]
    async fn a_failing_statement_inside_a_batch_fails_only_its_caller() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(dir.path()).await;
        insert(&writer, "taken").await.unwrap();
        // Hold the writer while three writes queue behind it: one of them
        // breaks the primary key.
        let mut first = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ('first')")
            .execute(&mut *first)
            .await
            .unwrap();
        let behind = ["second", "taken", "third"].map(|v| {
            let writer = writer.clone();
            tokio::spawn(async move { insert(&writer, v).await })
        });
        queued(&writer, 3).await;
        first.commit().await.unwrap();
        let [second, taken, third] = behind;
        second.await.unwrap().unwrap();
        let err = taken.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        third.await.unwrap().unwrap();
        // The four good writes shared one commit (plus the first insert's own).
        assert_eq!(
            writer.counters().snapshot(),
            crate::WriteCounts {
                writes: 4,
                commits: 2
            }
        );
        assert_eq!(rows(&pool).await, ["first", "second", "taken", "third"]);
    }

    #[tokio::test]
    async fn a_batch_sqlite_rolled_back_by_itself_is_never_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(dir.path()).await;
        let mut first = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ('lost')")
            .execute(&mut *first)
            .await
            .unwrap();
        // What SQLite does by itself on a full disk or an I/O error, behind
        // the back of a write that went on as if its statement had worked.
        sqlx::query("ROLLBACK").execute(&mut *first).await.unwrap();
        // A second write queues: it joins the batch, and its SAVEPOINT
        // begins a new transaction outside the one the batch began.
        let second = {
            let writer = writer.clone();
            tokio::spawn(async move { insert(&writer, "after").await })
        };
        queued(&writer, 1).await;
        let first = first.commit().await;
        let second = second.await.unwrap();
        assert!(
            matches!(first, Err(StoreError::Unavailable(_))),
            "{first:?}"
        );
        assert!(
            matches!(second, Err(StoreError::Unavailable(_))),
            "{second:?}"
        );
        assert!(rows(&pool).await.is_empty(), "{:?}", rows(&pool).await);
        // The writer goes on.
        insert(&writer, "next").await.unwrap();
        assert_eq!(rows(&pool).await, ["next"]);
    }

    #[tokio::test]
    async fn an_abandoned_write_is_undone_and_its_batch_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(dir.path()).await;
        let mut first = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ('kept')")
            .execute(&mut *first)
            .await
            .unwrap();
        // A writer queues, so `first` hands the batch on instead of committing.
        let abandoning = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut w = writer.begin().await.unwrap();
                sqlx::query("INSERT INTO t (v) VALUES ('dropped')")
                    .execute(&mut *w)
                    .await
                    .unwrap();
                // Dropped without commit: as an early `?` return would.
            })
        };
        queued(&writer, 1).await;
        first.commit().await.unwrap();
        abandoning.await.unwrap();
        assert_eq!(rows(&pool).await, ["kept"]);
        insert(&writer, "after").await.unwrap();
        assert_eq!(rows(&pool).await, ["after", "kept"]);
    }

    #[tokio::test]
    async fn a_write_is_acknowledged_only_once_a_sync_after_its_commit_returns() {
        let dir = tempfile::tempdir().unwrap();
        // A sync that tells when it starts and returns when the test says.
        let (started, syncing) = std::sync::mpsc::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let sync: SyncFn = Arc::new(move || {
            started.send(()).ok();
            gate.lock().unwrap().recv().map_err(std::io::Error::other)
        });
        let (writer, pool) = synced_writer(dir.path(), sync).await;
        let syncing = Arc::new(std::sync::Mutex::new(syncing));
        let sync_started = || {
            let syncing = syncing.clone();
            tokio::task::spawn_blocking(move || syncing.lock().unwrap().recv().unwrap())
        };

        let a = {
            let writer = writer.clone();
            tokio::spawn(async move { insert(&writer, "a").await })
        };
        sync_started().await.unwrap();
        // Committed (readers see it) but not synced: not acknowledged yet,
        // and a reader that saw it is held until it is durable.
        assert_eq!(rows(&pool).await, ["a"]);
        let reader = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.settled().await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!a.is_finished());
        assert!(!reader.is_finished(), "a read of an unsynced batch settled");
        // The next write runs while the sync is under way (the sync does not
        // hold the writer), and waits for a sync of its own.
        let b = {
            let writer = writer.clone();
            tokio::spawn(async move { insert(&writer, "b").await })
        };
        while rows(&pool).await.len() < 2 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        a.await.unwrap().unwrap();
        reader.await.unwrap();
        sync_started().await.unwrap();
        assert!(!b.is_finished(), "b committed after a's sync began");
        release.send(()).unwrap();
        b.await.unwrap().unwrap();
        // Nothing pending: settled at once.
        writer.settled().await;
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_writes_and_every_write_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let sync: SyncFn = Arc::new(|| Err(std::io::Error::other("injected EIO")));
        let (writer, _pool) = synced_writer(dir.path(), sync).await;
        assert_eq!(writer.broken(), None);
        let err = insert(&writer, "a").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("injected EIO"), "{err}");
        // The kernel may have dropped what that sync failed to write: no
        // later write can be vouched for until the store is reopened.
        let err = insert(&writer, "b").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.to_string().contains("restarted"), "{err}");
        let why = writer.broken().expect("the writer says why it is broken");
        assert!(why.contains("injected EIO"), "{why}");
    }
}
