//! The worker core: accepts or rejects assignments, owns every running task,
//! and drains on shutdown.

mod event_loop;

use crate::backends::{Backend, BackendError};
use crate::config::{BackendKind, ConfigError, WorkerConfig};
use crate::connection::{self, Greeting, INBOX_CAPACITY, Outbox, Settings};
use crate::task::{self, TaskControl};
use event_loop::Core;
use hangar_protocol::redact::{LogSecrets, LogSecretsGuard};
use hangar_protocol::worker::{RunningTask, WorkerHello, WorkerToServer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Reason sent in `task_rejected` when every slot is taken.
pub const REJECT_AT_CAPACITY: &str = "worker at maximum concurrency";
/// Reason sent in `task_rejected` while draining.
pub const REJECT_DRAINING: &str = "worker is draining";
/// Extra time, after the kill grace, that stopped tasks get to clean up and report.
pub(crate) const HARD_SHUTDOWN_MARGIN: Duration = Duration::from_secs(5);
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
        let built = crate::backends::factory::build(&config)?;
        let mut worker = Worker::assemble(config, built.backend);
        worker.spool_root = built.spool_root;
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
        let url = connection::worker_ws_url(&cfg.server_url, cfg.worker_id.as_str())?;
        let backend_err = |source| WorkerError::Backend {
            backend: cfg.backend,
            source,
        };
        self.backend.start().await.map_err(backend_err)?;
        let recovered = self.backend.recover().await.map_err(backend_err)?;
        crate::metrics::init(
            cfg.worker_id.as_str(),
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
        let mut core = Core::new(&self, registry, outbox, inbox, tasks, heard);
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
