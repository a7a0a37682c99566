//! The worker registry every replica shares (`GET /api/v1/workers`).
//!
//! The replica holding a worker's WebSocket writes its presence to the store
//! when it connects ([`connected`]), refreshes every worker it holds each
//! [`refresh_interval`] ([`run`]) and marks it disconnected when the socket
//! closes ([`disconnected`]). Readers derive a status from the row: a
//! connected row not refreshed within the lost timeout belongs to a replica
//! that stopped, and shows as `lost`. Rows not seen for [`FORGET_AFTER`] are
//! deleted. Each refresh also closes the connections whose credential was
//! revoked or expired ([`crate::dispatch::worker_socket::close_revoked`]).

use crate::AppState;
use crate::dispatch::{Registration, WorkerInfo};
use hangar_protocol::{Timestamp, WorkerId};
use hangar_store::WorkerPresence;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Workers not seen for this long are dropped from the registry.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How often a replica refreshes its workers: well within the lost timeout.
pub fn refresh_interval(lost_timeout: Duration) -> Duration {
    (lost_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(15))
}

/// A worker as `GET /workers` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerItem {
    /// Worker id (`--worker-id`).
    #[schema(value_type = String)]
    pub worker_id: WorkerId,
    /// `connected`, `disconnected` (closed its socket recently) or `lost`
    /// (not heard from within the lost timeout).
    pub status: String,
    /// Backend it runs tasks on (`docker`, `process`, …).
    pub backend: String,
    /// Version it reported.
    pub version: String,
    /// Capacity (0 = unlimited).
    pub max_concurrent_tasks: i64,
    /// Executions it is running.
    pub running_tasks: i64,
    /// Taking no new work.
    pub draining: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Replica holding (or that last held) its connection.
    pub replica_id: String,
    /// Connection time.
    #[schema(value_type = String, format = DateTime)]
    pub connected_at: Timestamp,
    /// Last refresh by its replica.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: Timestamp,
    /// The leases of the executions it runs: each ends (or its run is queued
    /// again) if the worker renews it through no replica before `expires_at`.
    pub leases: Vec<LeaseItem>,
}

/// One execution lease held by a worker.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeaseItem {
    /// Run.
    pub run_id: String,
    /// Execution.
    pub execution_id: String,
    /// The execution's ordinal within its run: the fencing epoch.
    pub epoch: i64,
    /// Connection holding the lease (`replica:connection`).
    pub holder: Option<String>,
    /// When the lease expires unless renewed.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// `GET /workers` answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListWorkersResponse {
    /// Workers of the caller's team on every replica, by id.
    pub workers: Vec<WorkerItem>,
}

fn row(app: &AppState, team_id: i64, conn_id: u64, w: &WorkerInfo, now: i64) -> WorkerPresence {
    WorkerPresence {
        team_id,
        worker_id: w.worker_id.clone(),
        replica_id: app.runtime.replica_id.clone(),
        connection_id: format!("{}:{conn_id}", app.runtime.replica_id),
        backend: w.backend.clone(),
        version: w.version.clone(),
        capacity: i64::from(w.max_concurrent_tasks),
        running_tasks: w.running_tasks as i64,
        draining: w.draining,
        labels: w.labels.clone(),
        connected: true,
        connected_at: w.connected_at.unix_millis(),
        last_seen: now,
        credential_id: Some(w.credential_id.clone()),
        heard_at: Some(w.heard_at),
    }
}

/// Writes the presence of every worker connected to this replica, in one
/// write (batched statements) rather than one per worker.
pub async fn publish(app: &AppState) {
    let now = Timestamp::now().unix_millis();
    let rows: Vec<WorkerPresence> = app
        .dispatcher
        .connected_workers()
        .iter()
        .map(|(team, conn, info)| row(app, *team, *conn, info, now))
        .collect();
    if let Err(e) = app.store.upsert_workers(&rows).await {
        tracing::warn!(error = %e, workers = rows.len(), "could not record the workers' presence");
    }
}

/// A worker just registered on this replica.
pub async fn connected(app: &AppState, registration: &Registration) {
    let now = Timestamp::now().unix_millis();
    let (team, _) = &registration.key;
    if let Some(info) = app.dispatcher.connected_worker(registration)
        && let Err(e) = app
            .store
            .upsert_worker(&row(app, *team, registration.conn_id, &info, now))
            .await
    {
        tracing::warn!(error = %e, worker_id = %info.worker_id, "could not record worker presence");
    }
}

/// A worker's connection to this replica closed.
pub async fn disconnected(app: &AppState, registration: &Registration) {
    let (team, worker) = &registration.key;
    let conn = format!("{}:{}", app.runtime.replica_id, registration.conn_id);
    let now = Timestamp::now().unix_millis();
    if let Err(e) = app
        .store
        .worker_disconnected(*team, worker, &conn, now)
        .await
    {
        tracing::warn!(error = %e, worker_id = %worker, "could not record worker disconnection");
    }
}

/// Refreshes this replica's workers until shutdown, and forgets old entries.
pub async fn run(app: AppState, shutdown: CancellationToken) {
    let every = refresh_interval(app.config.worker_lost_timeout);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        publish(&app).await;
        crate::dispatch::worker_socket::close_revoked(&app).await;
        ticks += 1;
        if ticks % 100 == 1 {
            let before = Timestamp::now().unix_millis() - FORGET_AFTER.as_millis() as i64;
            if let Err(e) = app.store.prune_workers(before).await {
                tracing::warn!(error = %e, "could not prune the worker registry");
            }
        }
    }
}

/// The status a reader shows for a row.
pub fn status(w: &WorkerPresence, now: i64, lost_timeout: Duration) -> &'static str {
    let fresh = now - w.last_seen <= lost_timeout.as_millis() as i64;
    match (w.connected, fresh) {
        (true, true) => "connected",
        (false, true) => "disconnected",
        (_, false) => "lost",
    }
}

/// A team's workers on every replica.
pub async fn list(app: &AppState, team_id: i64) -> hangar_store::StoreResult<Vec<WorkerItem>> {
    let now = Timestamp::now().unix_millis();
    let lost = app.config.worker_lost_timeout;
    let mut leases: std::collections::HashMap<WorkerId, Vec<LeaseItem>> = Default::default();
    for l in app.store.team_leases(team_id).await? {
        leases.entry(l.worker_id).or_default().push(LeaseItem {
            run_id: l.run_id.0,
            execution_id: l.execution_id.0,
            epoch: l.epoch,
            holder: l.holder,
            expires_at: Timestamp::from_unix_millis(l.expires_at),
        });
    }
    Ok(app
        .store
        .list_workers(team_id)
        .await?
        .into_iter()
        .map(|w| WorkerItem {
            leases: leases.remove(&w.worker_id).unwrap_or_default(),
            status: status(&w, now, lost).to_owned(),
            worker_id: w.worker_id,
            backend: w.backend,
            version: w.version,
            max_concurrent_tasks: w.capacity,
            running_tasks: w.running_tasks,
            draining: w.draining,
            labels: w.labels,
            replica_id: w.replica_id,
            connected_at: Timestamp::from_unix_millis(w.connected_at),
            last_seen: Timestamp::from_unix_millis(w.last_seen),
        })
        .collect())
}
