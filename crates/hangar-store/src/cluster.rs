//! What the replicas of one deployment share besides runs: the registry of
//! connected workers ([`ClusterStore::upsert_worker`]) and the first-start
//! lock ([`ClusterStore::bootstrap_lock`]).
//!
//! A worker holds one WebSocket to one replica. That replica writes the
//! worker's presence when it connects, refreshes it periodically (running
//! tasks, `last_seen`) and marks it disconnected when the socket closes, so
//! `GET /workers` on any replica lists the workers of every replica. A row
//! whose `last_seen` is old belongs to a replica that died: readers show it as
//! lost.

use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use hangar_protocol::WorkerId;
use sqlx::query::Query;
use sqlx::{Database, Encode, Type};
use std::collections::BTreeMap;

/// A worker as last seen by the replica holding its connection.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPresence {
    /// Team.
    pub team_id: i64,
    /// Worker id.
    pub worker_id: WorkerId,
    /// Replica holding the connection.
    pub replica_id: String,
    /// The connection (a reconnect gets a new one).
    pub connection_id: String,
    /// Backend.
    pub backend: String,
    /// Version.
    pub version: String,
    /// Capacity (0 = unlimited).
    pub capacity: i64,
    /// Executions running.
    pub running_tasks: i64,
    /// Taking no new work.
    pub draining: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Whether the connection is open (as far as its replica knows).
    pub connected: bool,
    /// Connection time (ms).
    pub connected_at: i64,
    /// Last refresh (ms).
    pub last_seen: i64,
    /// The credential (worker token or team key id) that holds the
    /// connection; a second connection with another one is refused.
    pub credential_id: Option<String>,
    /// When the worker was last heard on the connection (ms).
    pub heard_at: Option<i64>,
}

/// Held while a replica runs first-start bootstrap; other replicas wait for
/// it. Released by [`BootstrapLock::release`], or when dropped (the
/// connection holding it closes).
pub struct BootstrapLock {
    pub(crate) conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

impl std::fmt::Debug for BootstrapLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapLock")
            .field("held", &self.conn.is_some())
            .finish()
    }
}

impl BootstrapLock {
    /// A lock that excludes nothing (one process owns the database).
    pub fn none() -> Self {
        BootstrapLock { conn: None }
    }

    /// Releases the lock.
    pub async fn release(mut self) -> StoreResult<()> {
        if let Some(mut conn) = self.conn.take() {
            sqlx::query(
                "SELECT pg_advisory_unlock(hashtext('hangar-bootstrap:' || current_schema()))",
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

impl Drop for BootstrapLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Closing the session releases its advisory locks; returning it to
            // the pool would keep the lock held.
            drop(conn.detach());
        }
    }
}

/// The worker registry and the bootstrap lock.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Inserts or refreshes a worker's presence.
    async fn upsert_worker(&self, worker: &WorkerPresence) -> StoreResult<()>;
    /// Inserts or refreshes many workers' presence in one write (a
    /// replica's periodic refresh of every worker it holds), in statements
    /// of [`WORKER_UPSERT_BATCH`] rows. The rows name distinct workers.
    async fn upsert_workers(&self, workers: &[WorkerPresence]) -> StoreResult<()>;
    /// One worker's presence, if the registry has it.
    async fn worker(
        &self,
        team_id: i64,
        worker_id: &WorkerId,
    ) -> StoreResult<Option<WorkerPresence>>;
    /// Marks a worker disconnected, if `connection_id` is still its connection
    /// (a reconnect to another replica is not undone by the old one closing).
    async fn worker_disconnected(
        &self,
        team_id: i64,
        worker_id: &WorkerId,
        connection_id: &str,
        at: i64,
    ) -> StoreResult<()>;
    /// A team's workers, by id.
    async fn list_workers(&self, team_id: i64) -> StoreResult<Vec<WorkerPresence>>;
    /// Forgets workers not seen since `before` (ms); returns how many.
    async fn prune_workers(&self, before: i64) -> StoreResult<u64>;
    /// Waits until no other replica is bootstrapping, and holds that until released.
    async fn bootstrap_lock(&self) -> StoreResult<BootstrapLock>;
}

/// Rows per statement of [`ClusterStore::upsert_workers`]: 15 parameters a
/// row stays far below SQLite's 32,766 and PostgreSQL's 65,535.
pub const WORKER_UPSERT_BATCH: usize = 500;

/// `VALUES ($1, …, $15), ($16, …)` for `rows` workers.
pub(crate) fn worker_values(rows: usize) -> String {
    let per_row = WORKER_COLUMNS.split(',').count();
    let mut sql = String::with_capacity(rows * per_row * 5);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..per_row {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * per_row + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// The `worker_presence` columns, in the order [`bind_worker`] binds them.
pub(crate) const WORKER_COLUMNS: &str = "team_id, worker_id, replica_id, connection_id, backend, \
    version, capacity, running_tasks, draining, labels, connected, connected_at, last_seen, \
    credential_id, heard_at";

/// Refreshes an existing row on `INSERT INTO worker_presence`.
pub(crate) const WORKER_ON_CONFLICT: &str = "ON CONFLICT (team_id, worker_id) DO UPDATE SET \
    replica_id = excluded.replica_id, connection_id = excluded.connection_id, \
    backend = excluded.backend, version = excluded.version, capacity = excluded.capacity, \
    running_tasks = excluded.running_tasks, draining = excluded.draining, \
    labels = excluded.labels, connected = excluded.connected, \
    connected_at = excluded.connected_at, last_seen = excluded.last_seen, \
    credential_id = excluded.credential_id, heard_at = excluded.heard_at";

/// Decodes a worker's stored labels (a JSON object).
pub(crate) fn decode_labels(labels: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(labels).map_err(|e| StoreError::Corrupt(format!("worker labels: {e}")))
}

/// Binds every column of a worker, in [`WORKER_COLUMNS`] order.
pub(crate) fn bind_worker<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    w: &WorkerPresence,
) -> StoreResult<Query<'q, DB, DB::Arguments>>
where
    DB: Database,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
{
    let labels = serde_json::to_string(&w.labels)
        .map_err(|e| StoreError::Corrupt(format!("worker labels: {e}")))?;
    Ok(query
        .bind(w.team_id)
        .bind(w.worker_id.as_str())
        .bind(w.replica_id.as_str())
        .bind(w.connection_id.as_str())
        .bind(w.backend.as_str())
        .bind(w.version.as_str())
        .bind(w.capacity)
        .bind(w.running_tasks)
        .bind(w.draining)
        .bind(labels)
        .bind(w.connected)
        .bind(w.connected_at)
        .bind(w.last_seen)
        .bind(w.credential_id.clone())
        .bind(w.heard_at))
}
