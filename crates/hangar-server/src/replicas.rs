//! Several `hangar server` replicas on one PostgreSQL database.
//!
//! The store signals every run creation, requeue, freed slot and cancel over
//! `LISTEN/NOTIFY`; each replica listens and reacts to what other replicas
//! did: it wakes its dispatcher (a run created on A may fit a worker connected
//! to B), forwards cancellations to the workers connected to it, and tells its
//! open session streams when a run's grants changed (a revocation on A closes
//! the viewer's stream on B).

use crate::AppState;
use hangar_store::{Notifier, Signal, StoreResult};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest pause between attempts to re-subscribe after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Listens for signals of other replicas until `shutdown`.
pub async fn listen(app: AppState, notifier: Arc<dyn Notifier>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = notifier.listen() => s,
        };
        let mut listener = match subscribed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to replica signals; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // Anything may have happened while we were not listening.
        resync(&app).await;
        backoff = Duration::from_millis(200);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => n,
            };
            match next {
                Ok(signal) => {
                    if let Err(e) = apply(&app, signal).await {
                        tracing::warn!(error = %e, "could not apply a replica signal");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replica signal stream failed; resubscribing");
                    break;
                }
            }
        }
    }
}

async fn resync(app: &AppState) {
    app.dispatcher.wake();
    // Follow-ups stored elsewhere while we were deaf.
    for run in app.sessions.hub.connected_runs() {
        crate::sessions::hub::deliver_followups(app, &run).await;
    }
    // Cancellations made elsewhere while we were deaf: forward them to our workers.
    match app.store.all_live_executions().await {
        Ok(live) => {
            for (team, exec) in live {
                // A revocation made elsewhere may have been missed: streams of
                // running runs re-check their access.
                app.sessions.shares.changed(&exec.run_id);
                // Cancelled runs, and runs the gateway ended over their budget
                // (FAILED `budget_exceeded`), must not keep an execution alive.
                if let Ok(run) = app.store.run_any_team(&exec.run_id).await
                    && (run.state == hangar_protocol::RunState::Cancelled
                        || crate::llm::meter::ended_over_budget(&run))
                {
                    app.dispatcher.send_cancellation(team, &exec);
                    app.sessions.hub.cancel(&exec.run_id);
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "resync: cannot list live executions"),
    }
}

async fn apply(app: &AppState, signal: Signal) -> StoreResult<()> {
    match signal {
        Signal::Dispatch { local: true, .. }
        | Signal::Cancel { local: true, .. }
        | Signal::SharesChanged { local: true, .. }
        | Signal::Followup { local: true, .. } => {}
        // A follow-up stored through another replica, for an agent that may
        // be connected here.
        Signal::Followup {
            local: false,
            run_id,
            ..
        } => crate::sessions::hub::deliver_followups(app, &run_id).await,
        // Streams of this replica that a grant change on another one ends.
        Signal::SharesChanged {
            local: false,
            run_id,
        } => app.sessions.shares.changed(&run_id),
        Signal::Dispatch {
            local: false,
            run_id,
            execution_id,
        } => {
            // An execution that ended elsewhere: its agent's socket here closes.
            if let (Some(run_id), Some(exec)) = (run_id, execution_id) {
                app.sessions.hub.close(&run_id, &exec);
            }
            app.dispatcher.wake();
        }
        Signal::Cancel {
            local: false,
            run_id,
            execution_id,
        } => {
            if let Some(exec_id) = execution_id {
                let exec = app.store.execution(&exec_id).await?;
                if exec.ended_at.is_none() {
                    let run = app.store.run_any_team(&run_id).await?;
                    app.dispatcher.send_cancellation(run.team_id, &exec);
                    app.sessions.hub.cancel(&run_id);
                }
            }
        }
        Signal::Resync => resync(app).await,
    }
    Ok(())
}
