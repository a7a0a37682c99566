//! Follow-ups to live executions, written once for both databases (`$N`
//! placeholders, see [`crate::sql`]).
//!
//! A follow-up is stored for the run's current execution before the API
//! acknowledges it ([`ADD`] inserts only while that execution is live). The
//! replica holding the agent's session socket sends every pending one
//! ([`PENDING`], in the order they were stored), and marks each delivered
//! when the agent acknowledges it ([`DELIVERED`]); the agent ignores an id it
//! has already seen, so a resend after a reconnect is harmless.

/// Stores a follow-up for a live execution:
/// `(run_id, execution_id, message, sender, at, execution_id, run_id)`;
/// returns its `id`, or no row when the execution has ended.
pub(crate) const ADD: &str = "INSERT INTO run_followups \
     (run_id, execution_id, message, sender, created_at) SELECT $1, $2, $3, $4, $5 \
     WHERE EXISTS (SELECT 1 FROM executions WHERE id = $6 AND run_id = $7 AND ended_at IS NULL) \
     RETURNING id";

/// The follow-ups of an execution its agent has not acknowledged: `(execution_id)`.
pub(crate) const PENDING: &str = "SELECT id, message, sender, created_at FROM run_followups \
     WHERE execution_id = $1 AND delivered_at IS NULL ORDER BY id";

/// The agent acknowledged one: `(at, id, execution_id)`.
pub(crate) const DELIVERED: &str = "UPDATE run_followups SET delivered_at = $1 \
     WHERE id = $2 AND execution_id = $3 AND delivered_at IS NULL";

/// The latest follow-up that reopened the run: `(run_id)`.
pub(crate) const LATEST_REOPENING: &str = "SELECT id, message, sender, created_at \
     FROM run_followups WHERE run_id = $1 AND execution_id IS NULL ORDER BY id DESC LIMIT 1";

/// A [`FollowupRecord`](crate::FollowupRecord) from a row of [`PENDING`] or
/// [`LATEST_REOPENING`], on either database.
pub(crate) fn from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<crate::FollowupRecord, sqlx::Error>
where
    &'static str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::FollowupRecord {
        id: row.try_get("id")?,
        message: row.try_get("message")?,
        sender: row.try_get("sender")?,
        created_at: row.try_get("created_at")?,
    })
}
