//! The worker core: accepts or rejects assignments, owns every running task,
//! and drains on shutdown.

use crate::backends::Execution;
use crate::backends::direct::{Direct, DirectConfig};
use crate::backends::docker::{self, Docker, DockerConfig};
use crate::backends::{Backend, BackendError, TaskSpec};
use crate::config::{BackendKind, ConfigError, WorkerConfig};
use crate::connection::{self, Greeting, INBOX_CAPACITY, Outbox, Settings};
use crate::task::{self, Parked, StopCause, TaskControl, TaskRun};
use hangar_protocol::redact::{LogSecrets, LogSecretsGuard};
use hangar_protocol::worker::{
    RunningTask, ServerToWorker, TaskAssignment, TaskCancellation, TaskClaimed, TaskRejected,
    WorkerHello, WorkerToServer,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reason sent in `task_rejected` when every slot is taken.
pub const REJECT_AT_CAPACITY: &str = "worker at maximum concurrency";
/// Reason sent in `task_rejected` while draining.
pub const REJECT_DRAINING: &str = "worker is draining";
/// Extra time, after the kill grace, that stopped tasks get to clean up and report.
const HARD_SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);
/// Limit for flushing the outbox and closing the socket at the end.
const CLOSE_DEADLINE: Duration = Duration::from_secs(15);
/// How often the core checks whether it must self-fence.
const FENCE_CHECK: Duration = Duration::from_millis(500);
/// Reconnect attempts that fit in one lease (`fence_after`) at the longest
/// backoff: the reconnect delay is capped at `fence_after / RECONNECTS_PER_LEASE`.
const RECONNECTS_PER_LEASE: u32 = 4;
/// Bound on idle sandboxes (`--idle-on-complete`) when concurrency is
/// unlimited; otherwise the bound is `max_concurrent_tasks`.
pub const MAX_IDLE_SANDBOXES_UNLIMITED: usize = 16;

/// Why the worker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The backend is not in this build.
    #[error("the {0} backend is not supported yet in this build; use the docker or direct backend")]
    UnsupportedBackend(BackendKind),
    /// The backend could not start.
    #[error("cannot start the {backend} backend: {source}")]
    Backend {
        /// Backend name.
        backend: BackendKind,
        /// Cause.
        #[source]
        source: BackendError,
    },
    /// The agent binary could not be determined.
    #[error("cannot determine the agent binary (this executable): {0}; set --agent-path")]
    AgentPath(#[source] std::io::Error),
    /// No place for workspaces.
    #[error(
        "no data directory for workspaces ($XDG_DATA_HOME and $HOME are unset); set --workspace-root"
    )]
    NoWorkspaceRoot,
    /// The server URL is unusable.
    #[error(transparent)]
    ServerUrl(#[from] hangar_client::ClientError),
    /// The connection task stopped unexpectedly.
    #[error("the connection task stopped unexpectedly: {0}")]
    Connection(#[source] tokio::task::JoinError),
}

/// The default workspace root: `$XDG_DATA_HOME/hangar/workspaces`.
pub fn default_workspace_root() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("hangar").join("workspaces"))
}

/// Executions on this worker, shared with the connection's greeting.
#[derive(Debug, Default)]
struct Registry {
    running: BTreeMap<String, Entry>,
    draining: bool,
}

#[derive(Debug)]
struct Entry {
    task_id: String,
    control: TaskControl,
}

type Shared = Arc<Mutex<Registry>>;

fn lock(reg: &Shared) -> MutexGuard<'_, Registry> {
    // A panic while holding this lock cannot leave the map half-updated
    // (single inserts/removes), so the data is still sound.
    reg.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes an execution from the registry when its task ends, even by panic.
struct Deregister {
    registry: Shared,
    execution_id: String,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        lock(&self.registry).running.remove(&self.execution_id);
        crate::metrics::get().task_released();
    }
}

/// A worker daemon: one connection to the control plane and the tasks it runs.
///
/// ```no_run
/// # async fn f(config: hangar_worker::WorkerConfig) -> Result<(), hangar_worker::WorkerError> {
/// use tokio_util::sync::CancellationToken;
/// let (shutdown, hard) = (CancellationToken::new(), CancellationToken::new());
/// hangar_worker::Worker::new(config)?.run(shutdown, hard).await
/// # }
/// ```
pub struct Worker {
    config: WorkerConfig,
    backend: Arc<dyn Backend>,
    /// Values the log writer masks (see [`Worker::with_log_secrets`]).
    log_secrets: LogSecrets,
    /// Keeps the API key registered in `log_secrets`.
    _api_key: LogSecretsGuard,
    /// Where undelivered session spools are kept (the spool backlog metric).
    spool_root: Option<PathBuf>,
    /// `OTEL_*` variables passed to agents so their spans are exported too.
    trace_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("backend", &self.backend.name())
            .finish()
    }
}

impl Worker {
    /// Validates the configuration and starts the backend (for direct: creates
    /// the workspace root). Nothing is connected yet.
    pub fn new(config: WorkerConfig) -> Result<Self, WorkerError> {
        config.validate()?;
        let mut spool_root = None;
        let backend: Arc<dyn Backend> = match config.backend {
            BackendKind::Direct => {
                let workspace_root = match &config.direct.workspace_root {
                    Some(root) => root.clone(),
                    None => default_workspace_root().ok_or(WorkerError::NoWorkspaceRoot)?,
                };
                spool_root = Some(workspace_root.clone());
                let agent_path = match &config.agent_path {
                    Some(p) => p.clone(),
                    None => std::env::current_exe().map_err(WorkerError::AgentPath)?,
                };
                let direct = Direct::new(DirectConfig {
                    workspace_root,
                    target_dir: config.direct.target_dir.clone(),
                    agent_path,
                    server_url: config.server_url.clone(),
                    setup_command: config.direct.setup_command.clone(),
                    teardown_command: config.direct.teardown_command.clone(),
                    env: config.env.clone(),
                    cleanup: config.cleanup,
                    idle_on_complete: config.idle_on_complete.clone(),
                    kill_grace: config.kill_grace,
                    sandbox: config.direct.sandbox,
                    sandbox_mounts: config.direct.sandbox_mounts.clone(),
                    egress_allow_internal: config.direct.egress_allow_internal.clone(),
                    pids_limit: config
                        .direct
                        .pids_limit
                        .unwrap_or(crate::backends::direct::DEFAULT_PIDS_LIMIT),
                    memory_mb: config.direct.memory_mb,
                })
                .map_err(|source| WorkerError::Backend {
                    backend: BackendKind::Direct,
                    source,
                })?;
                Arc::new(direct)
            }
            BackendKind::Docker => {
                let d = &config.docker;
                let workspace_root = match &d.workspace_root {
                    Some(root) => root.clone(),
                    None => dirs::data_dir()
                        .map(|p| p.join("hangar").join("docker-workspaces"))
                        .ok_or(WorkerError::NoWorkspaceRoot)?,
                };
                spool_root = Some(workspace_root.clone());
                let agent_path = match &config.agent_path {
                    Some(p) => p.clone(),
                    None => std::env::current_exe().map_err(WorkerError::AgentPath)?,
                };
                let server_url = d
                    .agent_server_url
                    .clone()
                    .unwrap_or_else(|| config.server_url.clone());
                let mut dc = DockerConfig::new(
                    config.worker_id.clone(),
                    workspace_root,
                    agent_path,
                    server_url,
                );
                dc.default_image = d.default_image.clone();
                dc.pull_policy = d.image_pull_policy;
                dc.network = d.network.clone();
                dc.volumes = config.volumes.clone();
                dc.env = config.env.clone();
                dc.cleanup = config.cleanup;
                dc.idle_on_complete = config.idle_on_complete.clone();
                dc.kill_grace = config.kill_grace;
                dc.cpus = d.cpus.unwrap_or(docker::DEFAULT_CPUS);
                dc.memory_mb = d.memory_mb.unwrap_or(docker::DEFAULT_MEMORY_MB);
                dc.pids_limit = d.pids_limit.unwrap_or(docker::DEFAULT_PIDS_LIMIT);
                if let Some(caps) = &d.cap_add {
                    dc.cap_add = caps.clone();
                }
                dc.extra_hosts = d.extra_hosts.clone();
                dc.egress_server_url = config.server_url.clone();
                dc.egress_host_firewall = d.egress_host_firewall.unwrap_or(true);
                dc.egress_allow_internal = d.egress_allow_internal.clone();
                dc.block_metadata_address = d.block_metadata_address.unwrap_or(true);
                let backend = Docker::new(dc).map_err(|source| WorkerError::Backend {
                    backend: BackendKind::Docker,
                    source,
                })?;
                Arc::new(backend)
            }
            BackendKind::Command => {
                let backend = crate::backends::command::CommandConfig::from_worker(&config)
                    .and_then(crate::backends::command::CommandBackend::new)
                    .map_err(|source| WorkerError::Backend {
                        backend: BackendKind::Command,
                        source,
                    })?;
                Arc::new(backend)
            }
            BackendKind::Kubernetes => {
                let config = crate::backends::kubernetes::KubernetesConfig::from_worker(&config)
                    .map_err(|source| WorkerError::Backend {
                        backend: BackendKind::Kubernetes,
                        source,
                    })?;
                Arc::new(crate::backends::kubernetes::Kubernetes::new(config))
            }
        };
        let mut worker = Worker::assemble(config, backend);
        worker.spool_root = spool_root;
        Ok(worker)
    }

    fn assemble(config: WorkerConfig, backend: Arc<dyn Backend>) -> Self {
        let log_secrets = LogSecrets::default();
        let api_key = log_secrets.register([config.api_key.expose().to_owned()]);
        Worker {
            config,
            backend,
            log_secrets,
            _api_key: api_key,
            spool_root: None,
            trace_env: Vec::new(),
        }
    }

    /// When this process exports traces over OTLP, agents get the same
    /// `OTEL_TRACES_EXPORTER` and OTLP endpoint and protocol (never the
    /// headers, which may hold credentials), so their spans join the run's
    /// trace. The collector must be reachable from the task's sandbox.
    pub fn with_trace_export(mut self, exported: bool) -> Self {
        self.trace_env = if exported {
            [
                "OTEL_TRACES_EXPORTER",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            ]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
            .collect()
        } else {
            Vec::new()
        };
        self
    }

    /// Masks, in everything written through `secrets`' log writer, this
    /// worker's API key and the secrets and run token of every task while it
    /// runs. Install the same set in the log subscriber
    /// (`secrets.writer(std::io::stderr())`).
    pub fn with_log_secrets(mut self, secrets: LogSecrets) -> Self {
        self._api_key = secrets.register([self.config.api_key.expose().to_owned()]);
        self.log_secrets = secrets;
        self
    }

    /// A worker over an already-built backend (other backends, tests).
    pub fn with_backend(
        config: WorkerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, WorkerError> {
        config.validate()?;
        Ok(Worker::assemble(config, backend))
    }

    /// The configuration in use.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Runs until shut down.
    ///
    /// - `shutdown` fired: drain — send `worker_draining`, reject new work,
    ///   keep heartbeating, let running tasks finish and report, close the
    ///   socket with 1000, return.
    /// - `hard_shutdown` fired (alone or after `shutdown`): additionally stop
    ///   running tasks (reported as `graceful_shutdown`) and return once they
    ///   are cleaned up, abandoning any still busy after the kill grace plus a
    ///   short margin.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        hard_shutdown: CancellationToken,
    ) -> Result<(), WorkerError> {
        let cfg = &self.config;
        let url = connection::worker_ws_url(&cfg.server_url, &cfg.worker_id)?;
        let backend_err = |source| WorkerError::Backend {
            backend: cfg.backend,
            source,
        };
        self.backend.start().await.map_err(backend_err)?;
        let recovered = self.backend.recover().await.map_err(backend_err)?;
        crate::metrics::init(
            &cfg.worker_id,
            self.backend.name(),
            cfg.max_concurrent_tasks,
            self.spool_root.clone(),
        );
        let registry: Shared = Arc::default();
        let (outbox, outbox_rx) = Outbox::new();
        let mut tasks = JoinSet::new();
        for r in recovered {
            let control = TaskControl::default();
            lock(&registry).running.insert(
                r.execution_id.clone(),
                Entry {
                    task_id: r.task_id.clone(),
                    control: control.clone(),
                },
            );
            tracing::info!(task_id = %r.task_id, execution_id = %r.execution_id, "reattached to an execution from before the restart");
            crate::metrics::get().task_recovered();
            let guard = Deregister {
                registry: registry.clone(),
                execution_id: r.execution_id.clone(),
            };
            let outbox = outbox.clone();
            let kill_grace = cfg.kill_grace;
            tasks.spawn(async move {
                let _guard = guard;
                task::drive_recovered(r, control, outbox, kill_grace).await;
            });
        }
        let (inbox_tx, inbox) = mpsc::channel(INBOX_CAPACITY);
        let close = CancellationToken::new();
        let heard = crate::connection::LastHeard::now();
        let settings = Settings {
            heard: heard.clone(),
            url,
            api_key: cfg.api_key.clone(),
            worker_id: cfg.worker_id.clone(),
            heartbeat_interval: cfg.heartbeat_interval,
            read_timeout: cfg.read_timeout,
            connect_timeout: cfg.connect_timeout,
            reconnect_initial: cfg.reconnect_initial,
            // A blip shorter than the lease must never cost a run: however
            // far the backoff has grown (it resets only after a connection
            // stayed up), retry several times within the lease.
            reconnect_max: cfg
                .reconnect_max
                .min(cfg.fence_after / RECONNECTS_PER_LEASE),
            reconnect_reset_after: cfg.reconnect_reset_after,
        };
        let greeting = self.greeting(registry.clone());
        // Owned: awaited (or aborted) below before run() returns.
        #[allow(clippy::disallowed_methods)] // awaited (or aborted) before run() returns
        let conn = tokio::spawn(connection::run(
            settings,
            greeting,
            outbox_rx,
            inbox_tx,
            close.clone(),
        ));
        tracing::info!(
            worker_id = %cfg.worker_id,
            backend = self.backend.name(),
            max_concurrent_tasks = cfg.max_concurrent_tasks,
            server_url = %cfg.server_url,
            "worker starting"
        );
        let (parked_tx, parked_rx) = mpsc::unbounded_channel();
        let idle_for = cfg
            .idle_on_complete
            .as_deref()
            .and_then(|d| crate::config::parse_duration(d).ok())
            .filter(|d| !d.is_zero());
        let mut core = Core {
            worker: &self,
            registry,
            outbox,
            inbox,
            tasks,
            draining: false,
            idle: BTreeMap::new(),
            idle_for,
            parked_tx,
            parked_rx,
            heard,
            fenced: false,
        };
        let result = core.run_loop(&shutdown, &hard_shutdown, conn, &close).await;
        self.backend.shutdown().await;
        tracing::info!(worker_id = %self.config.worker_id, "worker stopped");
        result
    }

    fn greeting(&self, registry: Shared) -> Greeting {
        let backend = self.backend.name().to_owned();
        let max = self.config.max_concurrent_tasks;
        let labels = self.config.labels.clone();
        Arc::new(move || {
            let reg = lock(&registry);
            let running = reg
                .running
                .iter()
                .map(|(execution_id, e)| RunningTask {
                    task_id: e.task_id.clone(),
                    execution_id: execution_id.clone(),
                })
                .collect();
            let mut frames = vec![WorkerToServer::WorkerHello(WorkerHello {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                backend: backend.clone(),
                max_concurrent_tasks: max,
                labels: labels.clone(),
                running,
            })];
            if reg.draining {
                frames.push(WorkerToServer::WorkerDraining);
            }
            frames
        })
    }
}

/// The state of one `run`.
struct Core<'a> {
    worker: &'a Worker,
    registry: Shared,
    outbox: Outbox,
    inbox: mpsc::Receiver<ServerToWorker>,
    /// Every running task; nothing is spawned outside it.
    tasks: JoinSet<()>,
    draining: bool,
    /// Sandboxes kept after their run ended, by run id (`--idle-on-complete`).
    /// They take no task slot; at most [`Core::max_idle`] are kept.
    idle: BTreeMap<String, Idle>,
    /// How long a sandbox is kept; `None` = never.
    idle_for: Option<Duration>,
    parked_tx: mpsc::UnboundedSender<Parked>,
    parked_rx: mpsc::UnboundedReceiver<Parked>,
    /// When the server was last heard from.
    heard: crate::connection::LastHeard,
    /// Running tasks were stopped for being cut off; cleared when heard again.
    fenced: bool,
}

/// One kept sandbox.
struct Idle {
    execution_id: String,
    execution: Box<dyn Execution>,
    until: Instant,
}

impl Core<'_> {
    async fn run_loop(
        &mut self,
        shutdown: &CancellationToken,
        hard_shutdown: &CancellationToken,
        mut conn: tokio::task::JoinHandle<()>,
        close: &CancellationToken,
    ) -> Result<(), WorkerError> {
        let mut hard_deadline: Option<Instant> = None;
        let mut conn_result: Option<Result<(), tokio::task::JoinError>> = None;
        let mut inbox_open = true;
        let mut fence_check = tokio::time::interval(FENCE_CHECK);
        fence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.draining && self.tasks.is_empty() {
                break;
            }
            crate::metrics::get().idle_sandboxes(self.idle.len());
            let idle_expiry = self.next_idle_expiry();
            tokio::select! {
                biased;
                _ = hard_shutdown.cancelled(), if hard_deadline.is_none() => {
                    hard_deadline = Some(Instant::now() + self.worker.config.kill_grace + HARD_SHUTDOWN_MARGIN);
                    self.start_drain().await;
                    self.stop_all(StopCause::Shutdown);
                }
                _ = shutdown.cancelled(), if !self.draining => self.start_drain().await,
                Some(joined) = self.tasks.join_next() => {
                    if let Err(e) = joined {
                        tracing::error!(worker_id = %self.worker.config.worker_id, error = %e, "a task panicked; its report is lost");
                    }
                }
                // Before the inbox: a follow-up assignment must find the
                // sandbox its previous execution parked just before reporting.
                Some(parked) = self.parked_rx.recv() => self.keep(parked),
                _ = sleep_until_opt(idle_expiry) => self.expire_idle(),
                _ = fence_check.tick() => self.check_fence(),
                msg = self.inbox.recv(), if inbox_open => match msg {
                    Some(msg) => self.handle(msg).await,
                    // The connection task owned the sender and ended; handled below.
                    None => inbox_open = false,
                },
                r = &mut conn, if conn_result.is_none() => {
                    tracing::error!(worker_id = %self.worker.config.worker_id, "the connection task stopped; stopping all tasks");
                    conn_result = Some(r);
                    if hard_deadline.is_none() {
                        hard_deadline = Some(Instant::now() + self.worker.config.kill_grace + HARD_SHUTDOWN_MARGIN);
                    }
                    self.draining = true;
                    self.stop_all(StopCause::Shutdown);
                }
                _ = sleep_until_opt(hard_deadline) => {
                    tracing::error!(
                        worker_id = %self.worker.config.worker_id,
                        remaining = self.tasks.len(),
                        "tasks did not stop within the kill grace; abandoning them"
                    );
                    break;
                }
            }
        }
        // Sandboxes parked after the last check, and any still kept: cleaned
        // up here, each within the kill grace plus a margin.
        let mut leftovers: Vec<(String, String, Box<dyn Execution>)> =
            std::mem::take(&mut self.idle)
                .into_iter()
                .map(|(task_id, i)| (task_id, i.execution_id, i.execution))
                .collect();
        while let Ok(p) = self.parked_rx.try_recv() {
            leftovers.push((p.task_id, p.execution_id, p.execution));
        }
        for (task_id, execution_id, mut execution) in leftovers {
            let limit = self.worker.config.kill_grace + HARD_SHUTDOWN_MARGIN;
            match tokio::time::timeout(limit, execution.cleanup()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(task_id = %task_id, execution_id = %execution_id, error = %e, "cleanup of an idle sandbox failed")
                }
                Err(_) => {
                    tracing::warn!(task_id = %task_id, execution_id = %execution_id, "cleanup of an idle sandbox timed out")
                }
            }
        }
        // Nothing reads the inbox any more: let the connection fail fast on it.
        self.inbox.close();
        // Aborts only tasks abandoned at the hard deadline.
        self.tasks.shutdown().await;
        close.cancel();
        match conn_result {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(WorkerError::Connection(e)),
            None => match tokio::time::timeout(CLOSE_DEADLINE, &mut conn).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(WorkerError::Connection(e)),
                Err(_) => {
                    tracing::warn!(worker_id = %self.worker.config.worker_id, "closing the connection took too long; dropping it");
                    conn.abort();
                    Ok(())
                }
            },
        }
    }

    async fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        lock(&self.registry).draining = true;
        self.clean_all_idle();
        tracing::info!(worker_id = %self.worker.config.worker_id, running = self.tasks.len(), "draining: taking no new tasks");
        self.outbox.send(WorkerToServer::WorkerDraining).await;
    }

    /// At most this many sandboxes are kept idle.
    fn max_idle(&self) -> usize {
        match self.worker.config.max_concurrent_tasks {
            0 => MAX_IDLE_SANDBOXES_UNLIMITED,
            n => n as usize,
        }
    }

    /// Keeps a parked sandbox for `idle_for` (or cleans it up right away
    /// while draining), evicting the one closest to expiry beyond the bound.
    fn keep(&mut self, parked: Parked) {
        let Some(idle_for) = self.idle_for.filter(|_| !self.draining) else {
            self.clean(parked.task_id, parked.execution_id, parked.execution);
            return;
        };
        tracing::info!(task_id = %parked.task_id, execution_id = %parked.execution_id, ?idle_for, "sandbox kept idle for a follow-up");
        let entry = Idle {
            execution_id: parked.execution_id,
            execution: parked.execution,
            until: Instant::now() + idle_for,
        };
        if let Some(old) = self.idle.insert(parked.task_id.clone(), entry) {
            self.clean(parked.task_id, old.execution_id, old.execution);
        }
        while self.idle.len() > self.max_idle() {
            let Some(oldest) = self
                .idle
                .iter()
                .min_by_key(|(_, i)| i.until)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = self.idle.remove(&oldest) {
                tracing::info!(task_id = %oldest, max = self.max_idle(), "too many idle sandboxes; cleaning up the oldest");
                self.clean(oldest, old.execution_id, old.execution);
            }
        }
    }

    fn next_idle_expiry(&self) -> Option<Instant> {
        self.idle.values().map(|i| i.until).min()
    }

    fn expire_idle(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .idle
            .iter()
            .filter(|(_, i)| i.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for task_id in expired {
            if let Some(old) = self.idle.remove(&task_id) {
                tracing::info!(task_id = %task_id, execution_id = %old.execution_id, "idle sandbox expired; cleaning up");
                self.clean(task_id, old.execution_id, old.execution);
            }
        }
    }

    fn clean_all_idle(&mut self) {
        for (task_id, old) in std::mem::take(&mut self.idle) {
            self.clean(task_id, old.execution_id, old.execution);
        }
    }

    /// Cleans a sandbox up in the background (drain waits for it).
    fn clean(&mut self, task_id: String, execution_id: String, mut execution: Box<dyn Execution>) {
        self.tasks.spawn(async move {
            if let Err(e) = execution.cleanup().await {
                tracing::warn!(task_id = %task_id, execution_id = %execution_id, reason = ?e.reason, error = %e, "cleanup of an idle sandbox failed");
            }
        });
    }

    /// Self-fencing: cut off from the server for longer than the lease, the
    /// server has ended (or re-queued) every execution this worker runs, so
    /// keeping them would be work nobody supervises: stop them through the
    /// backend's normal cancel path. Their reports are sent on reconnect and
    /// refused as late.
    fn check_fence(&mut self) {
        let silent = self.heard.elapsed();
        let limit = self.worker.config.fence_after;
        if silent < limit {
            self.fenced = false;
            return;
        }
        let running = lock(&self.registry).running.len();
        if self.fenced || running == 0 {
            return;
        }
        self.fenced = true;
        crate::metrics::get().self_fenced();
        tracing::error!(
            worker_id = %self.worker.config.worker_id,
            silent_secs = silent.as_secs(),
            fence_after_secs = limit.as_secs(),
            running,
            "cut off from the control plane for longer than the lease; stopping every running task (self-fence)"
        );
        self.stop_all(StopCause::Fenced);
    }

    fn stop_all(&self, cause: StopCause) {
        for entry in lock(&self.registry).running.values() {
            entry.control.stop(cause);
        }
    }

    async fn handle(&mut self, msg: ServerToWorker) {
        match msg {
            ServerToWorker::TaskAssignment(a) => self.assign(*a).await,
            ServerToWorker::TaskCancellation(c) => self.cancel(c),
        }
    }

    async fn assign(&mut self, mut assignment: TaskAssignment) {
        let cfg = &self.worker.config;
        let task_id = assignment.task_id.clone();
        if assignment.execution_id.is_empty() {
            // Oz servers may omit it; the run id then names the execution.
            assignment.execution_id = task_id.clone();
        }
        let execution_id = assignment.execution_id.clone();
        let decision = {
            let mut reg = lock(&self.registry);
            if reg.running.contains_key(&execution_id) {
                None
            } else if self.draining {
                Some(Err(REJECT_DRAINING))
            } else if cfg.max_concurrent_tasks > 0
                && reg.running.len() >= cfg.max_concurrent_tasks as usize
            {
                Some(Err(REJECT_AT_CAPACITY))
            } else {
                let control = TaskControl::default();
                reg.running.insert(
                    execution_id.clone(),
                    Entry {
                        task_id: task_id.clone(),
                        control: control.clone(),
                    },
                );
                Some(Ok(control))
            }
        };
        match decision {
            None => {
                tracing::info!(task_id = %task_id, execution_id = %execution_id, "duplicate assignment ignored; the execution is already running");
            }
            Some(Err(reason)) => {
                tracing::info!(task_id = %task_id, execution_id = %execution_id, reason, "task rejected");
                crate::metrics::get().task_rejected(reason);
                self.outbox
                    .send(WorkerToServer::TaskRejected(TaskRejected {
                        task_id,
                        reason: reason.to_owned(),
                        execution_id: Some(execution_id),
                    }))
                    .await;
            }
            Some(Ok(control)) => {
                tracing::info!(task_id = %task_id, execution_id = %execution_id, worker_id = %cfg.worker_id, "task claimed");
                crate::metrics::get().task_claimed();
                self.outbox
                    .send(WorkerToServer::TaskClaimed(TaskClaimed {
                        task_id: task_id.clone(),
                        worker_id: cfg.worker_id.clone(),
                        execution_id: Some(execution_id.clone()),
                    }))
                    .await;
                let guard = Deregister {
                    registry: self.registry.clone(),
                    execution_id: execution_id.clone(),
                };
                let reuse = self.idle.remove(&task_id).map(|i| {
                    tracing::info!(task_id = %task_id, execution_id = %execution_id, previous = %i.execution_id, "reusing the idle sandbox of this run");
                    i.execution
                });
                let run = TaskRun {
                    reuse,
                    park: self.idle_for.map(|_| self.parked_tx.clone()),
                    backend: self.worker.backend.clone(),
                    spec: TaskSpec {
                        task_id,
                        execution_id,
                        assignment,
                        allow_local_repositories: cfg.allow_local_repositories,
                    },
                    control,
                    outbox: self.outbox.clone(),
                    kill_grace: cfg.kill_grace,
                    log_secrets: self.worker.log_secrets.clone(),
                    trace_env: self.worker.trace_env.clone(),
                    worker_id: cfg.worker_id.clone(),
                    backend_name: self.worker.backend.name(),
                };
                // Every log line of the task carries these (JSON logs: `spans`).
                let span = tracing::info_span!(
                    "task",
                    run_id = %run.spec.task_id,
                    execution_id = %run.spec.execution_id,
                    worker_id = %run.worker_id,
                    trace_id = %hangar_telemetry::trace::TraceParent::for_run(&run.spec.task_id).trace_id_hex(),
                );
                self.tasks.spawn(tracing::Instrument::instrument(
                    async move {
                        let _guard = guard;
                        task::drive(run).await;
                    },
                    span,
                ));
            }
        }
    }

    fn cancel(&self, c: TaskCancellation) {
        let reg = lock(&self.registry);
        let mut found = false;
        for (execution_id, entry) in reg.running.iter().filter(|(_, e)| e.task_id == c.task_id) {
            tracing::info!(task_id = %c.task_id, execution_id = %execution_id, "cancellation requested");
            entry.control.stop(StopCause::User);
            found = true;
        }
        if !found {
            tracing::warn!(task_id = %c.task_id, "cancellation for a task that is not running here; ignored");
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
