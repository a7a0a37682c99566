//! Who may hold a worker id: one connection per worker id across the
//! replicas (a second one is refused with 409 unless it presents the same
//! credential and the old connection is dead), and the connections whose
//! credential was revoked since they connected.

use super::{Liveness, probe_wait};
use crate::AppState;
use crate::auth::WorkerCredential;
use crate::dispatch::Occupant;
use crate::error::{ApiError, ApiResult};
use hangar_protocol::{Timestamp, WorkerId};
use hangar_store::StoreResult;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Closes this replica's worker connections whose credential was revoked
/// or has expired since they connected (each replica checks its own, as it
/// refreshes the registry): expiring a worker token cuts its worker off
/// within a refresh interval, and it cannot reconnect.
pub async fn close_revoked(app: &AppState) {
    let now = Timestamp::now().unix_millis();
    let mut by_team: HashMap<i64, Vec<(WorkerId, String, Arc<Liveness>)>> = HashMap::new();
    for (team, worker_id, credential_id, liveness) in app.dispatcher.connections() {
        if !liveness.is_closed() {
            by_team
                .entry(team)
                .or_default()
                .push((worker_id, credential_id, liveness));
        }
    }
    for (team, connections) in by_team {
        let active = async {
            let mut active: std::collections::HashSet<String> = app
                .store
                .list_worker_tokens(team)
                .await?
                .into_iter()
                .filter(|t| t.is_active(now))
                .map(|t| t.id)
                .collect();
            active.extend(
                app.store
                    .list_api_keys(team)
                    .await?
                    .into_iter()
                    .filter(|k| k.is_active(now))
                    .map(|k| k.id),
            );
            StoreResult::Ok(active)
        };
        let active = match active.await {
            Ok(a) => a,
            Err(e) => {
                // Keep the connections: a store hiccup is no revocation.
                tracing::warn!(error = %e, team_id = team, "cannot check the workers' credentials");
                continue;
            }
        };
        for (worker_id, credential_id, liveness) in connections {
            if !active.contains(&credential_id) {
                tracing::warn!(
                    worker_id = worker_id.as_str(),
                    credential_id,
                    "disconnecting a worker: its credential was revoked or has expired"
                );
                liveness.close();
            }
        }
    }
}

/// Refuses (409) a connection for a worker id that is already connected,
/// unless it comes with the same credential and the old connection is dead:
/// then that one is closed to let it in. Never a silent takeover.
pub(super) async fn admit(
    app: &AppState,
    credential: &WorkerCredential,
    worker_id: &WorkerId,
) -> ApiResult<()> {
    let team_id = credential.team_id();
    let other_credential = || {
        ApiError::Conflict(format!(
            "worker `{worker_id}` is already connected with another credential; a second \
             connection never takes it over: stop the other worker, or pick another `--worker-id`"
        ))
    };
    match app.dispatcher.occupant(team_id, worker_id) {
        Occupant::Free => {}
        Occupant::Connecting => {
            return Err(ApiError::Conflict(format!(
                "worker `{worker_id}` is connecting on another connection right now; retry shortly"
            )));
        }
        Occupant::Connected {
            credential_id,
            liveness,
        } => {
            if credential_id != credential.id() {
                return Err(other_credential());
            }
            if liveness
                .answers(probe_wait(app.config.heartbeat_interval))
                .await
            {
                return Err(ApiError::Conflict(format!(
                    "worker `{worker_id}` is already connected with this credential and its \
                     connection is alive; stop the other worker process with this id, or give \
                     this one another `--worker-id`"
                )));
            }
            tracing::warn!(
                worker_id = worker_id.as_str(),
                "the worker's previous connection does not answer pings; closing it for its reconnection"
            );
            liveness.close();
        }
    }
    // Held by another replica: its presence row is fresh while that replica
    // refreshes it. Only the same credential may connect here, and only once
    // the worker has gone silent there: its last-heard time, published with
    // each refresh, is older than a heartbeat, a refresh and a probe (a live
    // worker answers a ping every heartbeat). That replica drops the dead
    // connection itself at its read timeout.
    let now = Timestamp::now().unix_millis();
    let refresh = crate::dispatch::presence::refresh_interval(app.config.worker_lost_timeout);
    let fresh = 2 * refresh + Duration::from_secs(1);
    let silent_after =
        app.config.heartbeat_interval + refresh + probe_wait(app.config.heartbeat_interval);
    // One row by its key: listing the team's workers here made every
    // connection cost O(workers), and 10,000 of them connecting O(n²).
    let held_elsewhere = app.store.worker(team_id, worker_id).await?.filter(|w| {
        w.connected
            && w.replica_id != app.runtime.replica_id
            && now - w.last_seen <= fresh.as_millis() as i64
    });
    if let Some(row) = held_elsewhere {
        if row.credential_id.as_deref() != Some(credential.id()) {
            return Err(other_credential());
        }
        let heard = row.heard_at.unwrap_or(row.last_seen);
        if now - heard <= silent_after.as_millis() as i64 {
            return Err(ApiError::Conflict(format!(
                "worker `{worker_id}` is connected to another server replica with this \
                 credential and was heard from {}s ago; retry once that connection is found \
                 dead (no answer for {}s)",
                (now - heard).max(0) / 1000,
                silent_after.as_secs()
            )));
        }
        tracing::warn!(
            worker_id = worker_id.as_str(),
            replica_id = %row.replica_id,
            "the worker's connection to another replica has gone silent; letting its reconnection in"
        );
    }
    Ok(())
}
