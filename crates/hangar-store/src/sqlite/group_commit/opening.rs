//! A write's opening statements ride with its first statement.
//!
//! Every statement is a round trip to the writer connection's thread, and on
//! a small VM each costs more than SQLite's work for it. So a write does not
//! open its savepoint (nor the first write of a batch its transaction) in a
//! round trip of its own: [`GroupWriter::begin`](super::GroupWriter::begin)
//! only notes what must run first ([`Opening`]), and the write's first
//! statement carries it, in the same call, through [`WriteConn`]'s
//! [`Executor`]. SQLite runs a multi-statement query in order, and binds
//! `$N` by number in each statement, so the statement itself is unchanged.
//! The opening's own results are left out of what the caller reads: a
//! `SAVEPOINT` reports the previous statement's row count, which would
//! otherwise be added to the first statement's.
//!
//! A write that ends before it ran a statement has opened nothing: its
//! commit, rollback or abandonment undoes nothing ([`super::Batch::unopened`]).

use super::Batch;
use futures::future::{self, BoxFuture};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use sqlx::sqlite::{Sqlite, SqliteQueryResult, SqliteRow, SqliteStatement};
use sqlx::{AssertSqlSafe, Either, Execute, Executor, SqlStr};
use tokio::sync::OwnedMutexGuard;

/// What a write must run before its first statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Opening {
    /// The batch's transaction, the batch's savepoint and the write's own.
    /// IMMEDIATE takes the write lock up front, so a writer in another
    /// process on the same file waits (busy timeout) instead of failing to
    /// upgrade a stale read snapshot. The batch's savepoint marks the
    /// transaction as this batch's (see `Batch::commit`).
    Batch,
    /// The write's savepoint, inside the open batch.
    Write,
}

impl Opening {
    pub(super) fn sql(self) -> &'static str {
        match self {
            Opening::Batch => "BEGIN IMMEDIATE; SAVEPOINT hangar_batch; SAVEPOINT hangar_write;",
            Opening::Write => "SAVEPOINT hangar_write;",
        }
    }

    /// How many statements [`Opening::sql`] holds: each yields one result.
    fn statements(self) -> usize {
        match self {
            Opening::Batch => 3,
            Opening::Write => 1,
        }
    }

    /// `query` with this opening before it, as one query.
    fn before<'q>(
        self,
        mut query: impl Execute<'q, Sqlite>,
    ) -> Result<sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>, sqlx::Error>
    {
        let persistent = query.persistent();
        let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
        let sql = AssertSqlSafe(format!("{} {}", self.sql(), query.sql().as_str()));
        let query = match arguments {
            Some(arguments) => sqlx::query_with(sql, arguments),
            None => sqlx::query(sql),
        };
        Ok(query.persistent(persistent))
    }
}

/// The writer's connection as one write sees it: an [`Executor`] that runs
/// the write's [`Opening`] with its first statement.
#[derive(Debug)]
pub(crate) struct WriteConn {
    /// `None` once the write committed or rolled back.
    pub(super) batch: Option<OwnedMutexGuard<Batch>>,
}

impl WriteConn {
    pub(super) fn batch(&mut self) -> &mut Batch {
        match self.batch.as_mut() {
            Some(b) => b,
            None => unreachable!("a finished write is consumed"),
        }
    }
}

impl<'c> Executor<'c> for &'c mut WriteConn {
    type Database = Sqlite;

    fn fetch_many<'e, 'q, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<SqliteQueryResult, SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: Execute<'q, Sqlite>,
        'q: 'e,
        E: 'q,
    {
        let batch = self.batch();
        let Some(opening) = batch.pending.take() else {
            return batch.conn().fetch_many(query);
        };
        let query = match opening.before(query) {
            Ok(q) => q,
            Err(e) => return stream::once(future::ready(Err(e))).boxed(),
        };
        // Each opening statement ends with one result; an error passes.
        let mut opening_results = opening.statements();
        batch
            .conn()
            .fetch_many(query)
            .try_filter(move |result| {
                let opening = opening_results > 0 && result.is_left();
                if opening {
                    opening_results -= 1;
                }
                future::ready(!opening)
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<SqliteRow>, sqlx::Error>>
    where
        'c: 'e,
        E: Execute<'q, Sqlite>,
        'q: 'e,
        E: 'q,
    {
        let batch = self.batch();
        let Some(opening) = batch.pending.take() else {
            return batch.conn().fetch_optional(query);
        };
        // The opening's statements return no rows: the first row is the query's.
        match opening.before(query) {
            Ok(q) => batch.conn().fetch_optional(q),
            Err(e) => Box::pin(future::ready(Err(e))),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [sqlx::sqlite::SqliteTypeInfo],
    ) -> BoxFuture<'e, Result<SqliteStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        self.batch().conn().prepare_with(sql, parameters)
    }
}

#[cfg(test)]
// The tests own the tasks they spawn and join them.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::super::tests::{insert, queued, rows, writer};
    use sqlx::Row;

    /// Writes one statement that touches every row whose value is `v`, and
    /// answers how many rows it reported.
    async fn touch(w: &mut super::WriteConn, v: &str) -> u64 {
        sqlx::query("UPDATE t SET v = v WHERE v = $1 OR $1 = '*'")
            .bind(v)
            .execute(&mut *w)
            .await
            .unwrap()
            .rows_affected()
    }

    #[tokio::test]
    async fn a_writes_first_statement_reports_only_its_own_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(dir.path()).await;
        for v in ["a", "b", "c"] {
            insert(&writer, v).await.unwrap();
        }
        // The opening's statements report the previous statement's count:
        // a first statement touching nothing must still say 0, opening a
        // batch (after a statement that touched three rows) ...
        let mut w = writer.begin().await.unwrap();
        assert_eq!(touch(&mut w, "*").await, 3);
        w.commit().await.unwrap();
        let mut w = writer.begin().await.unwrap();
        assert_eq!(touch(&mut w, "none").await, 0);
        assert_eq!(touch(&mut w, "a").await, 1);
        w.commit().await.unwrap();
        // ... or inside one.
        let mut first = writer.begin().await.unwrap();
        assert_eq!(touch(&mut first, "*").await, 3);
        let second = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut w = writer.begin().await.unwrap();
                let touched = touch(&mut w, "none").await;
                // A row returned by the first statement is the statement's.
                let row = sqlx::query("INSERT INTO t (v) VALUES ($1) RETURNING v")
                    .bind("d")
                    .fetch_one(&mut *w)
                    .await
                    .unwrap();
                w.commit().await.unwrap();
                (touched, row.get::<String, _>("v"))
            })
        };
        queued(&writer, 1).await;
        first.commit().await.unwrap();
        assert_eq!(second.await.unwrap(), (0, "d".to_owned()));
        assert_eq!(rows(&pool).await, ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn a_write_that_runs_no_statement_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, pool) = writer(dir.path()).await;
        // Alone: committed, rolled back and dropped before any statement.
        writer.begin().await.unwrap().commit().await.unwrap();
        writer.begin().await.unwrap().rollback().await.unwrap();
        drop(writer.begin().await.unwrap());
        insert(&writer, "a").await.unwrap();
        // Inside a batch, behind a write that holds it.
        let mut first = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ('b')")
            .execute(&mut *first)
            .await
            .unwrap();
        let empty = ["commit", "rollback", "drop"].map(|how| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let w = writer.begin().await?;
                match how {
                    "commit" => w.commit().await,
                    "rollback" => w.rollback().await,
                    _ => {
                        drop(w);
                        Ok(())
                    }
                }
            })
        });
        queued(&writer, 3).await;
        first.commit().await.unwrap();
        for task in empty {
            task.await.unwrap().unwrap();
        }
        insert(&writer, "c").await.unwrap();
        assert_eq!(rows(&pool).await, ["a", "b", "c"]);
    }
}
