//! Dispatch: from a queued run to an execution on a worker.
//!
//! The [`Dispatcher`] matches queued runs to connected workers. Routing is by
//! team and exact `worker_host` (a run without a host goes to any worker of
//! its team). A worker's advertised capacity is respected; a run with no
//! matching worker stays `QUEUED` and is dispatched the moment one connects
//! or frees a slot. Each assignment is an execution with its own id and run
//! token; reports name their execution and a stale one changes nothing.
//!
//! - `queue` (private): placing queued runs, building assignments with the
//!   run's environment and secrets;
//! - `connections` (private): registering a worker connection and
//!   reconciling what it runs, freeing and refusing slots;
//! - `leases` (private): renewing execution leases and ending the expired
//!   ones, on whichever replica notices first;
//! - [`worker_socket`]: the worker WebSocket
//!   (`GET /api/v1/selfhosted/worker/ws`), which applies what workers report;
//! - [`presence`]: the worker registry every replica shares
//!   (`GET /api/v1/workers`).

mod connections;
mod leases;
pub use leases::Reported;
pub mod presence;
mod queue;
pub mod worker_socket;

pub(crate) use queue::{environment_spec, parse_environment_snapshot};

use hangar_protocol::worker::ServerToWorker;
use hangar_protocol::{ExecutionId, RunId, Timestamp, WorkerId};
use hangar_store::{RunRecord, Store};
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
pub type WorkerKey = (i64, WorkerId);

/// What the server knows about a connected worker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerInfo {
    /// Worker id.
    pub worker_id: WorkerId,
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
    /// The executions it holds, and their runs (an execution's run and
    /// worker never change: a report naming one is resolved from here).
    active: HashMap<ExecutionId, RunId>,
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
    fn info(&self, worker_id: &WorkerId) -> WorkerInfo {
        WorkerInfo {
            worker_id: worker_id.clone(),
            backend: self.backend.clone(),
            version: self.version.clone(),
            max_concurrent_tasks: self.capacity,
            running_tasks: self.active.len(),
            draining: self.draining,
            labels: self.labels.clone(),
            connected_at: self.connected_at,
            credential_id: self.credential_id.clone(),
            heard_at: self.liveness.heard_at(),
        }
    }

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
    affinity: HashMap<RunId, WorkerId>,
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
#[derive(Debug)]
struct Reserved {
    worker_id: WorkerId,
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
    pub fn prefer_worker(&self, run: &RunId, worker_id: WorkerId) {
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
            .map(|((_, id), s)| s.info(id))
            .collect();
        list.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        list
    }

    /// Every worker connected to this replica: `(team, connection id, info)`.
    pub fn connected_workers(&self) -> Vec<(i64, u64, WorkerInfo)> {
        let reg = self.registry();
        reg.workers
            .iter()
            .map(|((team, id), s)| (*team, s.conn_id, s.info(id)))
            .collect()
    }

    /// What the server knows about one registered connection, if it is
    /// still the worker's (a lookup, not a scan of every connection).
    pub fn connected_worker(&self, registration: &Registration) -> Option<WorkerInfo> {
        let reg = self.registry();
        reg.workers
            .get(&registration.key)
            .filter(|s| s.conn_id == registration.conn_id)
            .map(|s| s.info(&registration.key.1))
    }

    /// The liveness of every connection on this replica (for the shared
    /// ping timer, [`worker_socket::sweep`]).
    pub fn livenesses(&self) -> Vec<Arc<worker_socket::Liveness>> {
        let reg = self.registry();
        reg.workers.values().map(|s| s.liveness.clone()).collect()
    }

    /// Whether no worker of the team that could take `host` has room.
    pub fn at_capacity(&self, team_id: i64, host: Option<&str>) -> bool {
        let reg = self.registry();
        !reg.workers.iter().any(|((team, id), s)| {
            *team == team_id && host.is_none_or(|h| h == id.as_str()) && s.has_room()
        })
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
}
