//! Execution leases: the replica holding a worker's connection renews the
//! leases of the executions it runs; any replica ends those whose lease
//! expired (the worker was heard through no replica for `lost_timeout`).
//! No replica's memory decides the fate of a run: the leases in the store do.

use super::{Dispatcher, LEASE_EXPIRED_EVENT, Registration, WorkerKey};
use hangar_protocol::{ExecutionId, RunId, RunState, Timestamp};
use hangar_store::{ExecutionEnd, ExecutionState, Outcome, StoreResult};

/// Expired leases ended per sweep pass.
const SWEEP_BATCH: i64 = 256;

impl Dispatcher {
    /// The lease holder name of a connection of this replica.
    pub(super) fn holder(&self, conn_id: u64) -> String {
        format!("{}:{conn_id}", self.replica_id)
    }

    /// Renews the leases of the executions a connected worker runs: called
    /// when it connects and, while it keeps talking, once per heartbeat.
    pub async fn renew(&self, reg: &Registration) -> StoreResult<u64> {
        let now = Timestamp::now().unix_millis();
        let expires = now + self.lost_timeout.as_millis() as i64;
        self.store
            .renew_leases(
                reg.key.0,
                &reg.key.1,
                &self.holder(reg.conn_id),
                expires,
                now,
            )
            .await
    }

    /// Ends the executions whose leases expired, on whichever replica this
    /// is: one that never started is queued again; one that started ends
    /// `ERROR` with `failure_reason` `worker_lost`. Safe when every replica
    /// sweeps at once: each lease is taken by exactly one.
    pub async fn sweep_leases(&self) -> StoreResult<usize> {
        let now = Timestamp::now().unix_millis();
        let expired = self.store.expired_leases(now, SWEEP_BATCH).await?;
        let mut ended = 0;
        for (team_id, exec) in expired {
            if !self.store.take_expired_lease(&exec.id, now).await? {
                continue; // renewed meanwhile, or another replica took it
            }
            ended += 1;
            crate::metrics::get().lease_expired();
            let lease = humantime::format_duration(self.lost_timeout);
            let worker_id = &exec.worker_id;
            let run = self.store.run_any_team(&exec.run_id).await?;
            let started = exec.state == ExecutionState::Started
                || !matches!(
                    run.state,
                    RunState::Queued | RunState::Pending | RunState::Claimed
                );
            if !started {
                let why = format!(
                    "lease expired: worker `{worker_id}` was not heard from for {lease} \
                     before the task started; the run is queued again"
                );
                self.store.reject(&exec.run_id, &exec.id, &why, now).await?;
                tracing::warn!(run_id = %exec.run_id, execution_id = %exec.id, worker_id = worker_id.as_str(), "lease expired before the task started; run queued again");
            } else if self.expiry_policy == crate::config::LeaseExpiryPolicy::Requeue
                && self.store.lost_executions(&exec.run_id).await? == 0
            {
                let why = format!(
                    "lease expired: lost contact with worker `{worker_id}` for more than {lease}; \
                     the run is queued again (lease_expiry_policy: requeue)"
                );
                self.store
                    .requeue_lost(&exec.run_id, &exec.id, &why, now)
                    .await?;
                tracing::warn!(run_id = %exec.run_id, execution_id = %exec.id, worker_id = worker_id.as_str(), "lease expired; run queued again for another worker (requeue policy)");
            } else {
                let end = ExecutionEnd {
                    outcome: Outcome {
                        state: RunState::Error,
                        message: format!(
                            "lease expired: lost contact with worker `{worker_id}` for more \
                             than {lease}; the worker stops the task itself when it notices"
                        ),
                        error_code: Some("resource_unavailable".to_owned()),
                    },
                    exit_code: None,
                    failure_reason: Some("worker_lost".to_owned()),
                    at: now,
                };
                self.store
                    .finish_execution(&exec.run_id, &exec.id, &end)
                    .await?;
                tracing::warn!(run_id = %exec.run_id, execution_id = %exec.id, worker_id = worker_id.as_str(), "lease expired; run marked ERROR (worker_lost)");
                crate::metrics::run_ended(self.store.as_ref(), &exec.run_id).await;
            }
            // Operators and pollers see why: `lease_expired`, naming the worker.
            let event = hangar_store::NewLifecycleEvent {
                run_id: exec.run_id.0.clone(),
                event_type: LEASE_EXPIRED_EVENT.to_owned(),
                execution_id: Some(exec.id.0.clone()),
                ref_id: Some(worker_id.to_string()),
                occurred_at: now,
            };
            if let Err(e) = self.store.record_lifecycle_event(team_id, &event).await {
                tracing::warn!(error = %e, run_id = %exec.run_id, "cannot record the lease_expired event");
            }
            // If the worker or its agent is connected here after all, it stops now.
            self.release(&(team_id, worker_id.clone()), &exec.id);
            self.send_cancellation(team_id, &exec);
            self.sessions.close(&exec.run_id, &exec.id);
        }
        if ended > 0 {
            self.wake();
        }
        Ok(ended)
    }

    /// Resolves the execution a worker report refers to: the one it names, or
    /// (for Oz workers that do not send it) the run's current one. Only
    /// executions of this worker are accepted. A named execution this
    /// replica assigned to the worker (or adopted when it connected) is
    /// known without reading the store: its run and worker never change,
    /// and the store's writes fence whatever is stale.
    pub async fn resolve_execution(
        &self,
        key: &WorkerKey,
        task_id: &str,
        execution_id: Option<&str>,
    ) -> StoreResult<Option<Reported>> {
        let named = execution_id.filter(|e| !e.is_empty());
        if let Some(named) = named
            && let Some(run_id) = self.held(key, named)
        {
            return Ok((run_id.0 == task_id).then(|| Reported {
                id: ExecutionId(named.to_owned()),
                run_id,
                created_at: None,
            }));
        }
        let exec_id = match named {
            Some(e) => ExecutionId(e.to_owned()),
            None => match self.store.run_any_team(&RunId(task_id.to_owned())).await {
                Ok(run) => match run.current_execution_id {
                    Some(e) => e,
                    None => return Ok(None),
                },
                Err(hangar_store::StoreError::NotFound) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let exec = match self.store.execution(&exec_id).await {
            Ok(e) => e,
            Err(hangar_store::StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if exec.worker_id != key.1 || exec.run_id.0 != task_id {
            return Ok(None);
        }
        let run = self.store.run_any_team(&exec.run_id).await?;
        Ok((run.team_id == key.0).then_some(Reported {
            id: exec.id,
            run_id: exec.run_id,
            created_at: Some(exec.created_at),
        }))
    }

    /// The run of execution `exec`, if this replica holds it for worker `key`.
    fn held(&self, key: &WorkerKey, exec: &str) -> Option<RunId> {
        let reg = self.registry();
        let slot = reg.workers.get(key)?;
        slot.active.get(exec).cloned()
    }
}

/// The execution a worker's report is about.
#[derive(Debug, Clone)]
pub struct Reported {
    /// The execution.
    pub id: ExecutionId,
    /// Its run.
    pub run_id: RunId,
    /// When it was made (ms); `None` when it was known without reading the
    /// store (only for reports that name it).
    pub created_at: Option<i64>,
}
