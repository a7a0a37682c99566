//! The dispatcher: matches queued runs to connected workers and applies what
//! workers report.
//!
//! Routing is by team and exact `worker_host` (a run without a host goes to
//! any worker of its team). A worker's advertised capacity is respected; a run
//! with no matching worker stays `QUEUED` and is dispatched the moment one
//! connects or frees a slot. Each assignment is an execution with its own id and
//! run token; reports name their execution and a stale one changes nothing.

pub mod presence;
pub mod worker_socket;

use crate::auth::new_run_token;
use hangar_protocol::worker::{
    RunningTask, ServerToWorker, Task, TaskAssignment, TaskCancellation, TaskDefinition, TaskOwner,
    WorkerHello,
};
use hangar_protocol::{
    ENV_EXECUTION_ID, ENV_RUN_ID, ENV_RUN_TOKEN, ENV_SERVER_URL, ExecutionId, RunId, RunState,
    Timestamp,
};
use hangar_store::{
    ExecutionEnd, ExecutionRecord, ExecutionState, NewExecution, Outcome, RunRecord, Store,
    StoreResult, Transition,
};
use hangar_telemetry::trace::{TraceParent, at_millis as millis_to_system};
use opentelemetry::KeyValue;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Frames queued to one worker connection.
pub const WORKER_OUTBOX: usize = 1024;
/// Queued runs examined per dispatch pass.
const DISPATCH_BATCH: i64 = 256;
/// Freshly created runs waiting for the fast path; when full, runs are found by a scan.
const FRESH_CAPACITY: usize = 4096;

/// A worker is identified by its team and its self-chosen id.
pub type WorkerKey = (i64, String);

/// What the server knows about a connected worker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerInfo {
    /// Worker id.
    pub worker_id: String,
    /// Backend it runs tasks on.
    pub backend: String,
    /// Version it reported.
    pub version: String,
    /// Capacity (0 = unlimited).
    pub max_concurrent_tasks: u32,
    /// Executions it is running.
    pub running_tasks: usize,
    /// Taking no new work.
    pub draining: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Connection time.
    pub connected_at: Timestamp,
    /// The credential holding the connection (recorded in the shared
    /// registry; not shown).
    #[serde(skip)]
    pub credential_id: String,
    /// When the worker was last heard on the connection (ms; not shown).
    #[serde(skip)]
    pub heard_at: i64,
}

/// What occupies a worker id on this replica.
pub enum Occupant {
    /// Nothing: the id is free here.
    Free,
    /// A connection is registering right now.
    Connecting,
    /// A registered connection.
    Connected {
        /// Its credential's id.
        credential_id: String,
        /// Its liveness, to probe it or close it.
        liveness: Arc<crate::dispatch::worker_socket::Liveness>,
    },
}

struct Slot {
    conn_id: u64,
    /// The credential the connection presented.
    credential_id: String,
    /// Probes and closes the connection.
    liveness: Arc<crate::dispatch::worker_socket::Liveness>,
    tx: mpsc::Sender<ServerToWorker>,
    capacity: u32,
    active: HashSet<ExecutionId>,
    draining: bool,
    /// The worker refused for capacity: assign nothing until one of its executions ends.
    refused: bool,
    backend: String,
    version: String,
    labels: BTreeMap<String, String>,
    connected_at: Timestamp,
    /// Connected without `worker_hello`: a stock `oz-agent-worker`, which
    /// needs the agent sidecar image in its assignments.
    stock: bool,
}

impl Slot {
    fn has_room(&self) -> bool {
        // A connection being closed (found dead, or its credential revoked) takes no work.
        !self.liveness.is_closed()
            && !self.draining
            && !self.refused
            && (self.capacity == 0 || (self.active.len() as u32) < self.capacity)
    }
}

#[derive(Default)]
struct Registry {
    workers: HashMap<WorkerKey, Slot>,
    /// Workers whose connection is registering (reconciling its executions):
    /// a second connection for them is refused until it is done.
    connecting: HashSet<WorkerKey>,
    next_conn: u64,
    /// Runs reopened by a follow-up, and the worker of their last execution
    /// (soft affinity: its idle sandbox may still hold the workspace).
    affinity: HashMap<hangar_protocol::RunId, String>,
}

/// Most remembered worker preferences of reopened runs.
const MAX_AFFINITY: usize = 10_000;
/// Lifecycle event recorded when an execution's lease expires (`ref_id`: the worker).
pub const LEASE_EXPIRED_EVENT: &str = "lease_expired";
/// How long a reconnected worker has to report an execution it no longer runs.
const REPORT_GRACE: Duration = Duration::from_secs(5);

/// Matches runs to workers. Shared by the REST API, the worker gateway and the dispatch loop.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    registry: Mutex<Registry>,
    wake: Notify,
    fresh_tx: mpsc::Sender<RunRecord>,
    fresh_rx: Mutex<Option<mpsc::Receiver<RunRecord>>>,
    public_url: String,
    /// How long an execution's lease lasts without a renewal.
    lost_timeout: Duration,
    /// What an expired lease does to a started run.
    expiry_policy: crate::config::LeaseExpiryPolicy,
    secrets: crate::secrets::SecretBox,
    /// This replica, as named in the lease holders it writes.
    replica_id: String,
    /// Agent sessions on this replica: an execution ended by its lease loses its socket.
    sessions: Arc<crate::sessions::hub::SessionHub>,
    /// `sidecar_image` for stock workers' assignments.
    sidecar_image: Option<String>,
}

/// A worker slot taken for one assignment.
struct Reserved {
    worker_id: String,
    conn_id: u64,
    tx: mpsc::Sender<ServerToWorker>,
    /// A stock `oz-agent-worker` (no `worker_hello`).
    stock: bool,
}

/// Marks a worker id as registering while it lives.
struct Connecting<'a> {
    dispatcher: &'a Dispatcher,
    key: WorkerKey,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.dispatcher.registry().connecting.remove(&self.key);
    }
}

/// A registered connection; dropping it does not unregister (call [`Dispatcher::disconnect`]).
#[derive(Debug, Clone)]
pub struct Registration {
    /// The worker.
    pub key: WorkerKey,
    /// This connection's id (a reconnect gets a new one).
    pub conn_id: u64,
}

impl Dispatcher {
    /// A dispatcher over `store`; `public_url` is handed to tasks as the server URL.
    pub fn new(
        store: Arc<dyn Store>,
        public_url: String,
        config: &crate::config::ServerConfig,
        secrets: crate::secrets::SecretBox,
        replica_id: String,
        sessions: Arc<crate::sessions::hub::SessionHub>,
    ) -> Arc<Self> {
        let lost_timeout = config.worker_lost_timeout;
        let expiry_policy = config.lease_expiry_policy;
        let sidecar_image = config.sidecar_image();
        let (fresh_tx, fresh_rx) = mpsc::channel(FRESH_CAPACITY);
        Arc::new(Dispatcher {
            store,
            registry: Mutex::new(Registry::default()),
            wake: Notify::new(),
            fresh_tx,
            fresh_rx: Mutex::new(Some(fresh_rx)),
            public_url,
            lost_timeout,
            expiry_policy,
            secrets,
            replica_id,
            sessions,
            sidecar_image,
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the maps half-updated in a
        // way that matters more than losing dispatch entirely, so recover.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the loop to look at the queue now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Prefers `worker_id` for the next assignment of `run` (a run reopened by
    /// a follow-up goes back to the worker of its last execution when that
    /// worker is connected here with room; otherwise anywhere, as usual).
    pub fn prefer_worker(&self, run: &hangar_protocol::RunId, worker_id: String) {
        let mut reg = self.registry();
        // Bounded: entries are consumed at assignment; forget stale ones.
        if reg.affinity.len() >= MAX_AFFINITY {
            reg.affinity.clear();
        }
        reg.affinity.insert(run.clone(), worker_id);
    }

    /// Hands a just-created run to the loop, which places it without scanning
    /// the queue (the common case: a worker has room).
    pub fn submit(&self, run: RunRecord) {
        if self.fresh_tx.try_send(run).is_err() {
            self.wake();
        }
    }

    /// Connected workers of a team.
    pub fn workers(&self, team_id: i64) -> Vec<WorkerInfo> {
        let reg = self.registry();
        let mut list: Vec<WorkerInfo> = reg
            .workers
            .iter()
            .filter(|((team, _), _)| *team == team_id)
            .map(|((_, id), s)| WorkerInfo {
                worker_id: id.clone(),
                backend: s.backend.clone(),
                version: s.version.clone(),
                max_concurrent_tasks: s.capacity,
                running_tasks: s.active.len(),
                draining: s.draining,
                labels: s.labels.clone(),
                connected_at: s.connected_at,
                credential_id: s.credential_id.clone(),
                heard_at: s.liveness.heard_at(),
            })
            .collect();
        list.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        list
    }

    /// Every worker connected to this replica: `(team, connection id, info)`.
    pub fn connected_workers(&self) -> Vec<(i64, u64, WorkerInfo)> {
        let reg = self.registry();
        reg.workers
            .iter()
            .map(|((team, id), s)| {
                (
                    *team,
                    s.conn_id,
                    WorkerInfo {
                        worker_id: id.clone(),
                        backend: s.backend.clone(),
                        version: s.version.clone(),
                        max_concurrent_tasks: s.capacity,
                        running_tasks: s.active.len(),
                        draining: s.draining,
                        labels: s.labels.clone(),
                        connected_at: s.connected_at,
                        credential_id: s.credential_id.clone(),
                        heard_at: s.liveness.heard_at(),
                    },
                )
            })
            .collect()
    }

    /// Whether no worker of the team that could take `host` has room.
    pub fn at_capacity(&self, team_id: i64, host: Option<&str>) -> bool {
        let reg = self.registry();
        !reg.workers
            .iter()
            .any(|((team, id), s)| *team == team_id && host.is_none_or(|h| h == id) && s.has_room())
    }

    /// Ends an execution its reconnecting worker no longer runs, unless the
    /// worker's own report of it (queued while it was cut off, sent right
    /// after its hello) arrives within [`REPORT_GRACE`].
    fn end_unless_reported(&self, worker_id: &str, exec: ExecutionRecord) {
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
        String,
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
    pub fn occupant(&self, team_id: i64, worker_id: &str) -> Occupant {
        let key: WorkerKey = (team_id, worker_id.to_owned());
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
        worker_id: &str,
        credential_id: &str,
        liveness: Arc<crate::dispatch::worker_socket::Liveness>,
        tx: mpsc::Sender<ServerToWorker>,
        hello: Option<WorkerHello>,
    ) -> StoreResult<Registration> {
        let key: WorkerKey = (team_id, worker_id.to_owned());
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
        let worker_id = key.1.clone();
        let worker_id = worker_id.as_str();
        let live: Vec<ExecutionRecord> = {
            let mut mine = Vec::new();
            for exec in self.store.live_executions(worker_id).await? {
                let run = self.store.run_any_team(&exec.run_id).await?;
                if run.team_id == team_id {
                    mine.push((exec, run));
                }
            }
            let reported: Option<HashSet<&str>> = hello
                .as_ref()
                .map(|h| h.running.iter().map(|r| r.execution_id.as_str()).collect());
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
            if let Some(h) = &hello {
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
            keep
        };
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
                    active: live.into_iter().map(|e| e.id).collect(),
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
        // The executions it kept are held by this connection from now on.
        self.renew(&registration).await?;
        tracing::info!(team_id, worker_id, conn_id, capacity, "worker connected");
        self.wake();
        Ok(registration)
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

    /// The lease holder name of a connection of this replica.
    fn holder(&self, conn_id: u64) -> String {
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
        let reg = self.registry();
        if let Some(slot) = reg.workers.get(&(team_id, exec.worker_id.clone())) {
            let msg = ServerToWorker::TaskCancellation(TaskCancellation {
                task_id: exec.run_id.0.clone(),
            });
            if slot.tx.try_send(msg).is_err() {
                tracing::warn!(worker_id = %exec.worker_id, run_id = %exec.run_id, "cancellation not delivered: worker outbox full or closed; it is resent when the worker reconnects");
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

    /// Runs the dispatch loop until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tick =
            (self.lost_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut failures = 0u32;
        let taken = self
            .fresh_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut fresh) = taken else {
            tracing::error!("dispatcher loop started twice; the second one exits");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(run) = fresh.recv() => {
                    match self.place(&run).await {
                        Ok(_) => continue,
                        Err(e) => tracing::warn!(error = %e, run_id = %run.id, "fast dispatch failed; falling back to a scan"),
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(tick) => {
                    if let Err(e) = self.sweep_leases().await {
                        tracing::warn!(error = %e, "lease sweep failed; retrying on the next tick");
                    }
                }
            }
            match self.dispatch_pending().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "dispatch pass failed; retrying");
                    let backoff = Duration::from_millis(50u64 << failures.min(6));
                    tokio::time::sleep(backoff).await;
                    self.wake();
                }
            }
        }
    }

    fn any_room(&self) -> bool {
        self.registry().workers.values().any(Slot::has_room)
    }

    /// Picks a worker for `run` and reserves a slot on it.
    fn reserve(&self, run: &RunRecord, exec: &ExecutionId) -> Option<Reserved> {
        let mut reg = self.registry();
        let key = match run.worker_host() {
            Some(host) => {
                let key = (run.team_id, host.to_owned());
                reg.workers.get(&key).filter(|s| s.has_room())?;
                key
            }
            None => {
                let preferred = reg
                    .affinity
                    .get(&run.id)
                    .map(|w| (run.team_id, w.clone()))
                    .filter(|k| reg.workers.get(k).is_some_and(Slot::has_room));
                match preferred {
                    Some(key) => key,
                    None => reg
                        .workers
                        .iter()
                        .filter(|((team, _), s)| *team == run.team_id && s.has_room())
                        .min_by_key(|(_, s)| s.active.len())
                        .map(|(k, _)| k.clone())?,
                }
            }
        };
        reg.affinity.remove(&run.id);
        let slot = reg.workers.get_mut(&key)?;
        slot.active.insert(exec.clone());
        Some(Reserved {
            worker_id: key.1,
            conn_id: slot.conn_id,
            tx: slot.tx.clone(),
            stock: slot.stock,
        })
    }

    async fn dispatch_pending(&self) -> StoreResult<()> {
        loop {
            if !self.any_room() {
                return Ok(());
            }
            let queued = self.store.queued_runs(DISPATCH_BATCH).await?;
            let full_batch = queued.len() as i64 == DISPATCH_BATCH;
            let mut assigned = 0usize;
            for run in queued {
                if self.place(&run).await? {
                    assigned += 1;
                }
            }
            if assigned == 0 || !full_batch {
                return Ok(());
            }
        }
    }

    /// Assigns one queued run to a worker with room, if any. Returns whether it was assigned.
    async fn place(&self, run: &RunRecord) -> StoreResult<bool> {
        let environment = match &run.config.environment_id {
            Some(_) => match self.store.run_environment(&run.id).await? {
                Some(spec) => Some(spec),
                // Its snapshot is being written; the next pass picks it up.
                None => return Ok(false),
            },
            None => None,
        };
        let exec_id = ExecutionId::generate();
        let Some(Reserved {
            worker_id,
            conn_id,
            tx,
            stock,
        }) = self.reserve(run, &exec_id)
        else {
            return Ok(false);
        };
        let key = (run.team_id, worker_id.clone());
        let (token, token_hash) = new_run_token();
        let now = Timestamp::now().unix_millis();
        let placed = self
            .store
            .assign(NewExecution {
                id: exec_id.clone(),
                run_id: run.id.clone(),
                worker_id: worker_id.clone(),
                token_hash,
                created_at: now,
                lease_holder: Some(self.holder(conn_id)),
                lease_expires_at: Some(now + self.lost_timeout.as_millis() as i64),
                issuer_key_id: None,
            })
            .await;
        match placed {
            Ok(Transition::Applied) => {
                let mut assignment = self.assignment(run, &exec_id, token);
                // Reopened by a follow-up: on the Oz wire the task's prompt is
                // the follow-up and the conversation is the run's, so any
                // Oz-compatible agent continues (Hangar's agent reads both
                // from the run itself).
                if let Some(followup) = self.store.latest_followup(&run.id).await? {
                    assignment.task.task_definition.prompt = followup.message;
                    assignment.task.agent_conversation_id = Some(run.id.0.clone());
                }
                if let Some(spec) = environment {
                    self.attach_environment(run, &spec, &mut assignment).await?;
                }
                if stock {
                    // Its Docker and Kubernetes backends mount this at /agent
                    // and run /agent/entrypoint.sh; a Hangar worker brings
                    // its own agent.
                    assignment.sidecar_image = self.sidecar_image.clone();
                }
                if tx
                    .try_send(ServerToWorker::TaskAssignment(Box::new(assignment)))
                    .is_err()
                {
                    // The connection went away between reserve and send; the
                    // run is queued again when the execution's lease expires.
                    tracing::warn!(run_id = %run.id, worker_id, "assignment not delivered");
                } else {
                    // Ready since its last change: creation, or a requeue.
                    let ready = run.updated_at.min(now);
                    crate::metrics::get()
                        .dispatched(Duration::from_millis((now - ready).max(0) as u64));
                    hangar_telemetry::trace::record(
                        "run.dispatch",
                        &TraceParent::for_run(&run.id.0),
                        millis_to_system(ready),
                        std::time::SystemTime::now(),
                        vec![
                            KeyValue::new("hangar.worker.id", worker_id.clone()),
                            KeyValue::new("hangar.execution.id", exec_id.0.clone()),
                        ],
                    );
                }
                tracing::debug!(run_id = %run.id, execution_id = %exec_id, worker_id, "assigned");
                Ok(true)
            }
            Ok(_) => {
                self.unreserve(&key, &exec_id);
                Ok(false)
            }
            Err(e) => {
                self.unreserve(&key, &exec_id);
                Err(e)
            }
        }
    }

    fn unreserve(&self, key: &WorkerKey, exec: &ExecutionId) {
        if let Some(slot) = self.registry().workers.get_mut(key) {
            slot.active.remove(exec);
        }
    }

    fn assignment(&self, run: &RunRecord, exec: &ExecutionId, token: String) -> TaskAssignment {
        let created = Timestamp::from_unix_millis(run.created_at);
        let mut env = BTreeMap::new();
        env.insert(ENV_RUN_TOKEN.to_owned(), token);
        env.insert(ENV_RUN_ID.to_owned(), run.id.0.clone());
        env.insert(ENV_EXECUTION_ID.to_owned(), exec.0.clone());
        env.insert(ENV_SERVER_URL.to_owned(), self.public_url.clone());
        // The run's trace: the worker's and the agent's spans nest under it.
        env.insert(
            hangar_telemetry::trace::ENV.to_owned(),
            TraceParent::for_run(&run.id.0).header(),
        );
        env.insert("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned());
        env.insert("GH_PROMPT_DISABLED".to_owned(), "1".to_owned());
        TaskAssignment {
            task_id: run.id.0.clone(),
            execution_id: exec.0.clone(),
            task: Task {
                id: run.id.0.clone(),
                title: run.title.clone(),
                task_definition: TaskDefinition {
                    prompt: run.prompt.clone(),
                },
                created_at: created,
                updated_at: Timestamp::from_unix_millis(run.updated_at),
                owner: TaskOwner {
                    kind: "TEAM".to_owned(),
                    id: run.team_id,
                },
                agent_config_snapshot: Some(run.config.clone()),
                agent_conversation_id: None,
            },
            docker_image: None,
            sidecar_image: None,
            env_vars: env,
            additional_sidecars: Vec::new(),
            additional_oz_args: Vec::new(),
            instance_shape: None,
            environment: None,
        }
    }

    /// Adds a run's environment to its assignment: image, repositories, setup
    /// commands, network policy, variables and decrypted secrets.
    async fn attach_environment(
        &self,
        run: &RunRecord,
        snapshot: &str,
        assignment: &mut TaskAssignment,
    ) -> StoreResult<()> {
        let env = parse_environment_snapshot(snapshot)?;
        let mut secret_names: Vec<String> = env.secrets.clone();
        secret_names.extend(env.repos.iter().filter_map(|r| r.token_secret.clone()));
        secret_names.sort();
        secret_names.dedup();
        for (k, v) in &env.env {
            assignment.env_vars.insert(k.clone(), v.clone());
        }
        let mut injected = Vec::new();
        for name in &secret_names {
            match self.store.secret(run.team_id, name).await? {
                Some(s) => match self
                    .secrets
                    .open(run.team_id, name, &s.nonce, &s.ciphertext)
                {
                    Some(value) => {
                        assignment.env_vars.insert(name.clone(), value);
                        injected.push(name.clone());
                    }
                    None => {
                        tracing::error!(run_id = %run.id, secret = %name, "secret does not decrypt with this master key; not injected")
                    }
                },
                None => {
                    tracing::warn!(run_id = %run.id, secret = %name, "secret was deleted after the run was created; not injected")
                }
            }
        }
        if !injected.is_empty() {
            assignment.env_vars.insert(
                hangar_protocol::ENV_SECRET_NAMES.to_owned(),
                injected.join(","),
            );
        }
        assignment.docker_image = env.docker_image.clone();
        assignment.environment = Some(environment_spec(
            run.config.environment_id.clone().unwrap_or_default(),
            &env,
            injected,
        ));
        Ok(())
    }
}

/// Reads a run's environment snapshot (stored at creation).
pub(crate) fn parse_environment_snapshot(
    snapshot: &str,
) -> StoreResult<hangar_protocol::environment::EnvironmentRequest> {
    serde_json::from_str(snapshot)
        .map_err(|e| hangar_store::StoreError::Corrupt(format!("environment snapshot: {e}")))
}

/// What a sandbox is prepared from: the environment `id`'s snapshot `env`,
/// with `secret_names` naming the variables that carry its secrets. The
/// worker gets it in the assignment; an agent started by a stock worker
/// fetches it (`GET /agent/runs/{id}/environment`).
pub(crate) fn environment_spec(
    id: String,
    env: &hangar_protocol::environment::EnvironmentRequest,
    secret_names: Vec<String>,
) -> hangar_protocol::worker::EnvironmentSpec {
    hangar_protocol::worker::EnvironmentSpec {
        id,
        name: env.name.clone(),
        docker_image: env.docker_image.clone(),
        repos: env
            .repos
            .iter()
            .map(|r| hangar_protocol::worker::RepoSpec {
                url: r.url.clone(),
                git_ref: r.git_ref.clone(),
                token_env: r.token_secret.clone(),
                path: r.path.clone(),
            })
            .collect(),
        setup_commands: env.setup_commands.clone(),
        network_policy: env.network_policy.clone(),
        secret_names,
    }
}

/// Expired leases ended per sweep pass.
const SWEEP_BATCH: i64 = 256;

impl Dispatcher {
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
                tracing::warn!(run_id = %exec.run_id, execution_id = %exec.id, worker_id, "lease expired before the task started; run queued again");
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
                tracing::warn!(run_id = %exec.run_id, execution_id = %exec.id, worker_id, "lease expired; run queued again for another worker (requeue policy)");
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
                tracing::warn!(run_id = %exec.run_id, execution_id = %exec.id, worker_id, "lease expired; run marked ERROR (worker_lost)");
                crate::metrics::run_ended(self.store.as_ref(), &exec.run_id).await;
            }
            // Operators and pollers see why: `lease_expired`, naming the worker.
            let event = hangar_store::NewLifecycleEvent {
                run_id: exec.run_id.0.clone(),
                event_type: LEASE_EXPIRED_EVENT.to_owned(),
                execution_id: Some(exec.id.0.clone()),
                ref_id: Some(worker_id.clone()),
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
    /// executions of this worker are accepted.
    pub async fn resolve_execution(
        &self,
        key: &WorkerKey,
        task_id: &str,
        execution_id: Option<&str>,
    ) -> StoreResult<Option<ExecutionRecord>> {
        let exec_id = match execution_id.filter(|e| !e.is_empty()) {
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
        Ok((run.team_id == key.0).then_some(exec))
    }
}
