//! Worker connections on this replica: registering one (reconciling the
//! executions the store thinks it runs with what its hello reports),
//! unregistering it, and the slots it frees or refuses.

use super::{Connecting, Dispatcher, Occupant, REPORT_GRACE, Registration, Slot, WorkerKey};
use hangar_protocol::worker::{RunningTask, ServerToWorker, TaskCancellation, WorkerHello};
use hangar_protocol::{ExecutionId, RunId, RunState, Timestamp, WorkerId};
use hangar_store::{ExecutionEnd, ExecutionRecord, ExecutionState, Outcome, StoreResult};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;

impl Dispatcher {
    /// Ends an execution its reconnecting worker no longer runs, unless the
    /// worker's own report of it (queued while it was cut off, sent right
    /// after its hello) arrives within [`REPORT_GRACE`].
    fn end_unless_reported(&self, worker_id: &WorkerId, exec: ExecutionRecord) {
        let store = self.store.clone();
        let message = format!("worker `{worker_id}` restarted and no longer runs this task");
        #[allow(clippy::disallowed_methods)]
        // a bounded grace timer that only writes the execution's end to the store
        tokio::spawn(async move {
            tokio::time::sleep(REPORT_GRACE).await;
            let end = ExecutionEnd {
                outcome: Outcome {
                    state: RunState::Error,
                    message,
                    error_code: Some("resource_unavailable".to_owned()),
                },
                exit_code: None,
                failure_reason: Some("unknown".to_owned()),
                at: Timestamp::now().unix_millis(),
            };
            // Fenced: a no-op if the report came (the execution has ended).
            if let Err(e) = store.finish_execution(&exec.run_id, &exec.id, &end).await {
                tracing::warn!(error = %e, run_id = %exec.run_id, execution_id = %exec.id, "cannot end an execution its worker no longer runs");
            }
        });
    }

    /// Every connection on this replica: `(team, worker id, credential id, liveness)`.
    pub fn connections(
        &self,
    ) -> Vec<(
        i64,
        WorkerId,
        String,
        Arc<crate::dispatch::worker_socket::Liveness>,
    )> {
        self.registry()
            .workers
            .iter()
            .map(|((team, id), s)| {
                (
                    *team,
                    id.clone(),
                    s.credential_id.clone(),
                    s.liveness.clone(),
                )
            })
            .collect()
    }

    /// What holds worker `worker_id` of `team_id` on this replica.
    pub fn occupant(&self, team_id: i64, worker_id: &WorkerId) -> Occupant {
        let key: WorkerKey = (team_id, worker_id.clone());
        let reg = self.registry();
        if reg.connecting.contains(&key) {
            return Occupant::Connecting;
        }
        match reg.workers.get(&key) {
            Some(slot) => Occupant::Connected {
                credential_id: slot.credential_id.clone(),
                liveness: slot.liveness.clone(),
            },
            None => Occupant::Free,
        }
    }

    /// Registers a connection and reconciles the executions the store thinks
    /// it runs with what it reports. A worker id already held by a live
    /// connection (one not closed by [`crate::dispatch::worker_socket::Liveness::close`]),
    /// or being registered, is a `Conflict`: never a silent takeover, and
    /// nothing is reconciled for the refused connection.
    pub async fn connect(
        &self,
        team_id: i64,
        worker_id: &WorkerId,
        credential_id: &str,
        liveness: Arc<crate::dispatch::worker_socket::Liveness>,
        tx: mpsc::Sender<ServerToWorker>,
        hello: Option<WorkerHello>,
    ) -> StoreResult<Registration> {
        let key: WorkerKey = (team_id, worker_id.clone());
        {
            let mut reg = self.registry();
            let held = reg
                .workers
                .get(&key)
                .is_some_and(|s| !s.liveness.is_closed());
            if held || !reg.connecting.insert(key.clone()) {
                return Err(hangar_store::StoreError::Conflict(format!(
                    "worker `{worker_id}` is already connected"
                )));
            }
        }
        // Cleared however registration ends, a dropped future included, so
        // the id is never left stuck "connecting".
        let _connecting = Connecting {
            dispatcher: self,
            key: key.clone(),
        };
        self.register(key, credential_id, liveness, tx, hello).await
    }

    async fn register(
        &self,
        key: WorkerKey,
        credential_id: &str,
        liveness: Arc<crate::dispatch::worker_socket::Liveness>,
        tx: mpsc::Sender<ServerToWorker>,
        hello: Option<WorkerHello>,
    ) -> StoreResult<Registration> {
        let team_id = key.0;
        let worker_id = &key.1.clone();
        let live = self
            .reconcile(team_id, worker_id, hello.as_ref(), &tx)
            .await?;
        let holds_work = !live.is_empty();
        let stock = hello.is_none();
        let (capacity, backend, version, labels) = match hello {
            Some(h) => (h.max_concurrent_tasks, h.backend, h.version, h.labels),
            None => (
                0,
                "unknown".to_owned(),
                "unknown".to_owned(),
                BTreeMap::new(),
            ),
        };
        let conn_id = {
            let mut reg = self.registry();
            reg.next_conn += 1;
            let conn_id = reg.next_conn;
            reg.workers.insert(
                key.clone(),
                Slot {
                    conn_id,
                    credential_id: credential_id.to_owned(),
                    liveness,
                    tx,
                    capacity,
                    active: live.into_iter().map(|e| (e.id, e.run_id)).collect(),
                    draining: false,
                    refused: false,
                    backend,
                    version,
                    labels,
                    connected_at: Timestamp::now(),
                    stock,
                },
            );
            conn_id
        };
        let registration = Registration { key, conn_id };
        // The executions it kept are held by this connection from now on
        // (none kept: nothing to write, as for most connections).
        if holds_work {
            self.renew(&registration).await?;
        }
        tracing::info!(
            team_id,
            worker_id = worker_id.as_str(),
            conn_id,
            capacity,
            "worker connected"
        );
        self.wake();
        Ok(registration)
    }

    /// Reconciles the executions the store thinks a connecting worker runs
    /// with what its hello reports (a stock worker reports nothing: all are
    /// kept). Answers the executions it keeps running; the others are queued
    /// again or ended, and what it runs that the server ended is cancelled.
    async fn reconcile(
        &self,
        team_id: i64,
        worker_id: &WorkerId,
        hello: Option<&WorkerHello>,
        tx: &mpsc::Sender<ServerToWorker>,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let mut mine = Vec::new();
        for exec in self.store.live_executions(worker_id).await? {
            let run = self.store.run_any_team(&exec.run_id).await?;
            if run.team_id == team_id {
                mine.push((exec, run));
            }
        }
        let reported: Option<HashSet<&str>> =
            hello.map(|h| h.running.iter().map(|r| r.execution_id.as_str()).collect());
        let now = Timestamp::now().unix_millis();
        let mut keep = Vec::new();
        for (exec, run) in mine {
            let still_running = reported
                .as_ref()
                .is_none_or(|r| r.contains(exec.id.as_str()));
            if still_running {
                if run.state.is_terminal() {
                    // Cancelled while the worker was away: tell it now.
                    let _ = tx.try_send(ServerToWorker::TaskCancellation(TaskCancellation {
                        task_id: run.id.0.clone(),
                    }));
                }
                keep.push(exec);
            } else if exec.state == ExecutionState::Assigned {
                // Never claimed, and the worker does not have it: queue the run again.
                self.store
                    .reject(&exec.run_id, &exec.id, "worker restarted", now)
                    .await?;
            } else {
                // Not running any more: either the worker restarted, or
                // the task ended while it was cut off and its report
                // follows this hello. The report wins if it comes.
                self.end_unless_reported(worker_id, exec);
            }
        }
        // Executions the worker still runs but the server already ended: stop them.
        if let Some(h) = hello {
            let known: HashSet<&str> = keep.iter().map(|e| e.id.as_str()).collect();
            for RunningTask {
                task_id,
                execution_id,
            } in &h.running
            {
                if !known.contains(execution_id.as_str()) {
                    let _ = tx.try_send(ServerToWorker::TaskCancellation(TaskCancellation {
                        task_id: task_id.clone(),
                    }));
                }
            }
        }
        Ok(keep)
    }

    /// Unregisters a connection (unless a newer one replaced it). Its live
    /// executions are kept: they end only if their leases expire, that is if
    /// the worker renews them through no replica for `lost_timeout`.
    pub fn disconnect(&self, reg_: &Registration) {
        let mut reg = self.registry();
        let current = reg.workers.get(&reg_.key).map(|s| s.conn_id);
        if current == Some(reg_.conn_id) {
            reg.workers.remove(&reg_.key);
            tracing::info!(worker_id = %reg_.key.1, conn_id = reg_.conn_id, "worker disconnected");
        }
    }

    /// Whether a connection still holds executions (its leases need renewing).
    pub fn holds_work(&self, reg: &Registration) -> bool {
        self.registry()
            .workers
            .get(&reg.key)
            .is_some_and(|s| s.conn_id == reg.conn_id && !s.active.is_empty())
    }

    /// Marks a worker as draining: it gets no new work.
    pub fn set_draining(&self, key: &WorkerKey) {
        if let Some(slot) = self.registry().workers.get_mut(key) {
            slot.draining = true;
        }
    }

    /// Sends a cancellation to the worker running `exec`, if connected.
    pub fn send_cancellation(&self, team_id: i64, exec: &ExecutionRecord) {
        self.cancel_on(&(team_id, exec.worker_id.clone()), &exec.run_id);
    }

    /// Tells worker `key`, if it is connected here, to cancel run `run`.
    pub fn cancel_on(&self, key: &WorkerKey, run: &RunId) {
        let reg = self.registry();
        if let Some(slot) = reg.workers.get(key) {
            let msg = ServerToWorker::TaskCancellation(TaskCancellation {
                task_id: run.0.clone(),
            });
            if slot.tx.try_send(msg).is_err() {
                tracing::warn!(worker_id = %key.1, run_id = %run, "cancellation not delivered: worker outbox full or closed; it is resent when the worker reconnects");
            }
        }
    }

    /// Frees the slot held by an execution that ended.
    pub fn release(&self, key: &WorkerKey, exec: &ExecutionId) {
        let mut reg = self.registry();
        if let Some(slot) = reg.workers.get_mut(key) {
            slot.active.remove(exec);
            slot.refused = false;
        }
        drop(reg);
        self.wake();
    }

    /// The worker refused an assignment for capacity: stop assigning to it until a slot frees.
    pub fn refused(&self, key: &WorkerKey, exec: &ExecutionId) {
        let mut reg = self.registry();
        if let Some(slot) = reg.workers.get_mut(key) {
            slot.active.remove(exec);
            slot.refused = true;
        }
        drop(reg);
        self.wake();
    }
}
