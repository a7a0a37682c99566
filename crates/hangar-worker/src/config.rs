//! Worker configuration: command-line flags, the YAML file, and the resolved
//! [`WorkerConfig`] (PROTOCOL.md §3).
//!
//! Precedence is flags > file > defaults. [`WorkerArgs::resolve`] is the one
//! loader; `hangar up` skips it and fills a [`WorkerConfig`] directly.

mod file;

pub use file::{
    FileBackend, FileCommand, FileConfig, FileDirect, FileDocker, FileEnvVar, FileKubernetes,
};

use clap::ValueEnum;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default control-plane URL (a local `hangar server` / `hangar up`).
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:7420";
/// Default number of tasks run at once. Unlimited (0) is a foot-gun on the
/// direct backend, where every task is a process tree on the host.
pub const DEFAULT_MAX_CONCURRENT_TASKS: u32 = 4;
/// Default WebSocket ping interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default read deadline: the connection is dead when nothing arrives for this long.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default self-fencing delay: the server's default lease (`worker_lost_timeout`).
pub const DEFAULT_FENCE_AFTER: Duration = Duration::from_secs(120);
/// Default time between SIGTERM and SIGKILL when stopping a task.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// An API key. `Debug` and `Display` print `***` so it never reaches a log.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no key was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where tasks run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// A container per task (the documented default).
    #[default]
    Docker,
    /// A Kubernetes Job per task (not in this build yet).
    Kubernetes,
    /// A process per task in a workspace directory on the host.
    Direct,
    /// Hand the task to an operator command (not in this build yet).
    Command,
}

impl BackendKind {
    /// The name used on the command line, in the file and in `worker_hello`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendKind::Docker => "docker",
            BackendKind::Kubernetes => "kubernetes",
            BackendKind::Direct => "direct",
            BackendKind::Command => "command",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log verbosity; the binary installs the subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including agent output.
    Debug,
    /// Lifecycle events.
    #[default]
    Info,
    /// Problems that the worker recovers from.
    Warn,
    /// Problems that need an operator.
    Error,
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, with the run, execution and worker ids of
    /// the spans an event happened in (what log shippers want).
    Json,
    /// Human-readable lines.
    Pretty,
}

impl LogFormat {
    /// `json` when stderr is not a terminal, `pretty` when it is.
    pub fn for_stderr() -> LogFormat {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        }
    }
}

/// Flags of `hangar worker` (names as in oz-agent-worker). Flatten into the
/// subcommand and call [`WorkerArgs::resolve`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkerArgs {
    /// Name of this worker; runs created with `--host <ID>` go to it (exact match).
    /// Required here or as `worker_id` in the config file.
    #[arg(long, value_name = "ID")]
    pub worker_id: Option<String>,

    /// Credential the worker authenticates with: a worker token (`hw_…`,
    /// from `hangar worker token create`) or a team API key. Never passed
    /// into tasks.
    #[arg(
        long,
        env = "HANGAR_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,

    /// Base URL of the control plane [default: http://127.0.0.1:7420].
    #[arg(long, env = "HANGAR_SERVER_URL", value_name = "URL")]
    pub server_url: Option<String>,

    /// YAML config file (PROTOCOL.md §3); flags override it.
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Execution backend [default: docker, or the one configured in the file].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,

    /// Log verbosity [default: info].
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,

    /// Log format [default: json when stderr is not a terminal, else pretty].
    #[arg(long, value_enum, env = "HANGAR_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Keep workspaces, containers and Jobs after tasks end (for debugging).
    #[arg(long)]
    pub no_cleanup: bool,

    /// Volume for task containers, `HOST:CONTAINER[:ro|rw]` (docker; repeatable; no comma splitting).
    #[arg(short = 'v', long = "volumes", value_name = "HOST:CTR[:MODE]")]
    pub volumes: Vec<String>,

    /// Environment variable for tasks: `KEY=VALUE`, or `KEY` to pass the host's value (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Tasks run at once; 0 = unlimited [default: 4].
    #[arg(long, value_name = "N")]
    pub max_concurrent_tasks: Option<u32>,

    /// Keep a finished run's sandbox this long, e.g. `10m`, for a follow-up of that run.
    #[arg(long, value_name = "DURATION")]
    pub idle_on_complete: Option<String>,

    /// Direct backend: run every task in this existing directory (shared, never cleaned).
    #[arg(long, value_name = "DIR")]
    pub target_dir: Option<PathBuf>,

    /// Direct backend: run tasks without the bubblewrap sandbox (`sandbox: none`):
    /// they then see the host as the worker's user does. Shown in each run's details.
    #[arg(long)]
    pub no_sandbox: bool,

    /// Direct backend: a host path the sandbox shows to tasks, `PATH[:ro|rw]`
    /// (read-only by default; repeatable), e.g. a toolchain under /opt.
    #[arg(long = "sandbox-mount", value_name = "PATH[:MODE]")]
    pub sandbox_mounts: Vec<String>,

    /// WebSocket ping interval.
    #[arg(long, hide = true, value_parser = parse_duration, value_name = "DURATION")]
    pub heartbeat_interval: Option<Duration>,

    /// The connection is considered dead when nothing is read for this long.
    #[arg(long, hide = true, value_parser = parse_duration, value_name = "DURATION")]
    pub read_timeout: Option<Duration>,

    /// Time between SIGTERM and SIGKILL when stopping a task.
    #[arg(long, hide = true, value_parser = parse_duration, value_name = "DURATION")]
    pub kill_grace: Option<Duration>,

    /// Self-fencing: stop running tasks after this long without hearing from
    /// the server; set it to the server's `worker_lost_timeout` (the lease)
    /// [default: 2m].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub fence_after: Option<Duration>,

    /// Docker backend: when to pull task images [default: if-not-present].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Docker backend: image when the run's environment names none [default: ubuntu:24.04].
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,

    /// Direct/docker backend: where per-task workspaces are created.
    #[arg(long, hide = true, value_name = "DIR")]
    pub workspace_root: Option<PathBuf>,

    /// Binary launched for tasks as `<PATH> agent run …` [default: this executable].
    #[arg(long, hide = true, value_name = "PATH")]
    pub agent_path: Option<PathBuf>,

    /// Allow repositories given as `file://` URLs or local paths on this host
    /// (tests only: a task could otherwise clone any repository the worker can read).
    #[arg(long)]
    pub allow_local_repositories: bool,

    /// Print the effective configuration (flags > file > defaults) as YAML, with
    /// the API key and environment values redacted, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Direct-backend settings of a [`WorkerConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectSettings {
    /// Parent of the per-execution workspaces; `None` = `$XDG_DATA_HOME/hangar/workspaces`.
    pub workspace_root: Option<PathBuf>,
    /// Run every task in this existing directory instead (shared, never removed).
    pub target_dir: Option<PathBuf>,
    /// `/bin/sh -c` command run in the workspace before the agent.
    pub setup_command: Option<String>,
    /// `/bin/sh -c` command run in the workspace after the agent, whatever the outcome.
    pub teardown_command: Option<String>,
    /// How tasks are isolated from the host [default: bubblewrap].
    pub sandbox: SandboxKind,
    /// Extra host paths shown in the sandbox.
    pub sandbox_mounts: Vec<SandboxMount>,
    /// Hosts (names or IP literals) the egress proxy of allowlist tasks may
    /// reach although they are loopback, link-local, private or metadata addresses.
    pub egress_allow_internal: Vec<String>,
    /// Most processes of one execution [default: 4096; 0 = unlimited].
    pub pids_limit: Option<u64>,
    /// Memory limit of one execution in MiB when the run has no instance shape.
    pub memory_mb: Option<u64>,
}

/// How the direct backend isolates tasks (`backend.direct.sandbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxKind {
    /// Each process in its own namespaces under bubblewrap (`bwrap`): its own
    /// PID, mount, IPC and UTS namespaces, only the workspace writable, the
    /// host's data, config and home directories absent, the environment's
    /// network policy enforced, and never as root.
    #[default]
    Bwrap,
    /// No sandbox: tasks run as the worker's user and see what it sees (an
    /// explicit relaxation, shown in every run's details).
    None,
}

impl SandboxKind {
    /// The name used in the config file and in run details.
    pub fn as_str(&self) -> &'static str {
        match self {
            SandboxKind::Bwrap => "bwrap",
            SandboxKind::None => "none",
        }
    }
}

/// A host path shown in the direct backend's sandbox (`PATH[:ro|rw]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxMount {
    /// Absolute host path, shown at the same path.
    pub path: PathBuf,
    /// Whether tasks may write to it.
    pub writable: bool,
}

impl std::str::FromStr for SandboxMount {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (path, writable) = match spec.rsplit_once(':') {
            Some((p, "rw")) => (p, true),
            Some((p, "ro")) => (p, false),
            _ => (spec, false),
        };
        let ok = path.starts_with('/')
            && !path.split('/').any(|s| s == "..")
            && !path.chars().any(|c| c.is_control() || c == ':');
        if !ok {
            return Err(format!(
                "invalid sandbox mount {spec:?}: expected PATH[:ro|rw] with PATH absolute, \
                 without `..` or `:` (e.g. /opt/toolchain:ro)"
            ));
        }
        Ok(SandboxMount {
            path: PathBuf::from(path),
            writable,
        })
    }
}

impl std::fmt::Display for SandboxMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.writable { "rw" } else { "ro" };
        write!(f, "{}:{mode}", self.path.display())
    }
}

/// When the docker backend pulls the task image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull before every task (fails when the registry is unreachable).
    #[serde(alias = "Always")]
    Always,
    /// Pull only when the image is missing locally.
    #[default]
    #[serde(alias = "IfNotPresent")]
    IfNotPresent,
    /// Never pull; a missing image fails the task with `image_pull`.
    #[serde(alias = "Never")]
    Never,
}

impl PullPolicy {
    /// The name used in the config file.
    pub fn as_str(&self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if_not_present",
            PullPolicy::Never => "never",
        }
    }
}

/// Kubernetes-backend settings of a [`WorkerConfig`] (`backend.kubernetes`,
/// PROTOCOL.md §3). Checked when the backend starts (`backends::kubernetes`).
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSettings {
    /// Namespace of the task Jobs (default: the kubeconfig's, else `default`).
    pub namespace: Option<String>,
    /// Kubeconfig file; `None`: in-cluster, else the default loading rules.
    pub kubeconfig: Option<PathBuf>,
    /// Image when the environment names none [default `ubuntu:24.04`].
    pub default_image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never` [default `IfNotPresent`].
    pub image_pull_policy: Option<String>,
    /// Image of the start-up preflight Job [default: the agent image].
    pub preflight_image: Option<String>,
    /// Resources of the preflight Job's container (a ResourceRequirements).
    pub preflight_resources: Option<serde_json::Value>,
    /// Runs in the task container before the agent.
    pub setup_command: Option<String>,
    /// Runs in the task container after the agent, and on deletion (preStop).
    pub teardown_command: Option<String>,
    /// Labels on every task Job and Pod.
    pub extra_labels: BTreeMap<String, String>,
    /// Annotations on every task Job and Pod.
    pub extra_annotations: BTreeMap<String, String>,
    /// Job `activeDeadlineSeconds` [default 8 h].
    pub active_deadline_seconds: u64,
    /// How long a failed Job is kept [default 1 day]; succeeded ones go at once.
    pub ttl_seconds_after_finished: u64,
    /// `sizeLimit` of the `/workspace` emptyDir.
    pub workspace_size_limit: Option<String>,
    /// How long a pod may stay unschedulable [default 30 s].
    pub unschedulable_timeout: Duration,
    /// A PodSpec merged into every task pod.
    pub pod_template: Option<serde_json::Value>,
    /// Image the pods copy `/agent` from [default: env `HANGAR_AGENT_IMAGE`].
    pub agent_image: Option<String>,
    /// Server URL as task pods reach it [default: `--server-url`].
    pub agent_server_url: Option<String>,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            namespace: None,
            kubeconfig: None,
            default_image: None,
            image_pull_policy: None,
            preflight_image: None,
            preflight_resources: None,
            setup_command: None,
            teardown_command: None,
            extra_labels: BTreeMap::new(),
            extra_annotations: BTreeMap::new(),
            active_deadline_seconds: 8 * 3600,
            ttl_seconds_after_finished: 86_400,
            workspace_size_limit: None,
            unschedulable_timeout: Duration::from_secs(30),
            pod_template: None,
            agent_image: None,
            agent_server_url: None,
        }
    }
}

/// Command-backend settings of a [`WorkerConfig`] (`backend.command`).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    /// Starts a task: `/bin/sh -c` with the JSON payload on stdin; prints
    /// the task's external id on its first line of output.
    pub dispatch_command: Option<String>,
    /// Stops a task (`HANGAR_EXTERNAL_ID` in its environment).
    pub cancel_command: Option<String>,
    /// Whether a task still runs: exit 0 running, exit 1 ended.
    pub status_command: Option<String>,
    /// Longest a dispatch (or a cancel or status command) may take.
    pub dispatch_timeout: Duration,
    /// Interval between checks of a dispatched task.
    pub status_interval: Duration,
    /// Where dispatched executions are recorded (see [`FileCommand`]).
    pub state_dir: Option<PathBuf>,
}

impl Default for CommandSettings {
    fn default() -> Self {
        CommandSettings {
            dispatch_command: None,
            cancel_command: None,
            status_command: None,
            dispatch_timeout: Duration::from_secs(60),
            status_interval: Duration::from_secs(10),
            state_dir: None,
        }
    }
}

/// Docker-backend settings of a [`WorkerConfig`]. `None` fields take the
/// backend's defaults (see `backends::docker`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DockerSettings {
    /// Image when the environment names none [default: `ubuntu:24.04`].
    pub default_image: Option<String>,
    /// When to pull task images.
    pub image_pull_policy: PullPolicy,
    /// Docker network for task containers [default: `bridge`]. `host` is an
    /// explicit relaxation (host network namespace).
    pub network: Option<String>,
    /// Where per-task workspaces (bind-mounted at `/workspace`) are created;
    /// `None` = `$XDG_DATA_HOME/hangar/docker-workspaces`.
    pub workspace_root: Option<PathBuf>,
    /// CPU limit when the run has no instance shape.
    pub cpus: Option<f64>,
    /// Memory limit in MiB when the run has no instance shape.
    pub memory_mb: Option<u64>,
    /// Process limit.
    pub pids_limit: Option<i64>,
    /// Capabilities granted after dropping ALL; `None` = the documented minimal set.
    pub cap_add: Option<Vec<String>>,
    /// URL the agent inside the container uses for the server; `None` = the worker's server URL.
    pub agent_server_url: Option<String>,
    /// `NAME:IP` entries for every task container's `/etc/hosts`; the egress
    /// proxy of allowlist tasks resolves these names the same way.
    pub extra_hosts: Vec<String>,
    /// Allowlist tasks: install host firewall rules on the task network's
    /// bridge (fail closed when impossible); `Some(false)` is a relaxation.
    pub egress_host_firewall: Option<bool>,
    /// Hosts (names or IP literals) the egress proxy may reach although they
    /// are, or resolve to, loopback, link-local, private or metadata
    /// addresses. Empty by default: such destinations are refused even when
    /// an environment's allowlist names them.
    pub egress_allow_internal: Vec<String>,
    /// `full` network policy: block the cloud metadata addresses
    /// (169.254.169.254, fd00:ec2::254) with host firewall rules [default:
    /// true]; `Some(false)` is a relaxation.
    pub block_metadata_address: Option<bool>,
}

/// The resolved worker configuration. Build it with [`WorkerArgs::resolve`] or
/// fill it directly (`hangar up`), starting from `WorkerConfig::default()`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Name of this worker (exact match for `--host`).
    pub worker_id: String,
    /// Team API key; only ever sent in the `Authorization` header.
    pub api_key: ApiKey,
    /// Base URL of the control plane.
    pub server_url: String,
    /// Execution backend.
    pub backend: BackendKind,
    /// Log verbosity (applied by the binary).
    pub log_level: LogLevel,
    /// Remove sandboxes after tasks end.
    pub cleanup: bool,
    /// Docker volumes (`HOST:CTR[:ro|rw]`).
    pub volumes: Vec<String>,
    /// Extra environment for every task, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Tasks run at once; 0 = unlimited.
    pub max_concurrent_tasks: u32,
    /// How long a finished run's sandbox is kept for a follow-up (also passed
    /// to the agent as `--idle-on-complete`).
    pub idle_on_complete: Option<String>,
    /// Free-form labels announced in `worker_hello`.
    pub labels: BTreeMap<String, String>,
    /// WebSocket ping interval.
    pub heartbeat_interval: Duration,
    /// Read deadline of the connection.
    pub read_timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Stop running tasks after this long without a frame from the server
    /// (the server has ended them when their leases expired).
    pub fence_after: Duration,
    /// Limit for the WebSocket handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay (before jitter); doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Cap of the reconnect delay.
    pub reconnect_max: Duration,
    /// A connection that stayed up this long resets the reconnect delay.
    pub reconnect_reset_after: Duration,
    /// Binary launched for tasks; `None` = the current executable.
    pub agent_path: Option<PathBuf>,
    /// Direct-backend settings.
    pub direct: DirectSettings,
    /// Docker-backend settings.
    pub docker: DockerSettings,
    /// Command-backend settings (`backend.command`).
    pub command: CommandSettings,
    /// Kubernetes-backend settings (`backend.kubernetes`).
    pub kubernetes: KubernetesSettings,
    /// Accept `file://` URLs and local paths as repositories (tests).
    pub allow_local_repositories: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: String::new(),
            api_key: ApiKey::default(),
            server_url: DEFAULT_SERVER_URL.to_owned(),
            backend: BackendKind::default(),
            log_level: LogLevel::default(),
            cleanup: true,
            volumes: Vec::new(),
            env: Vec::new(),
            max_concurrent_tasks: DEFAULT_MAX_CONCURRENT_TASKS,
            idle_on_complete: None,
            labels: BTreeMap::new(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            read_timeout: DEFAULT_READ_TIMEOUT,
            fence_after: DEFAULT_FENCE_AFTER,
            kill_grace: DEFAULT_KILL_GRACE,
            connect_timeout: Duration::from_secs(30),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            reconnect_reset_after: Duration::from_secs(10),
            agent_path: None,
            direct: DirectSettings::default(),
            docker: DockerSettings::default(),
            command: CommandSettings::default(),
            kubernetes: KubernetesSettings::default(),
            allow_local_repositories: false,
        }
    }
}

/// What is wrong with the configuration, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid YAML for the schema.
    #[error(
        "invalid config file {}{}: {source} (see PROTOCOL.md §3 for the schema)",
        path.display(),
        location.map(|(l, c)| format!(" at line {l}, column {c}")).unwrap_or_default()
    )]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Line and column, when serde knows them.
        location: Option<(usize, usize)>,
        /// Cause.
        #[source]
        source: serde_norway::Error,
    },
    /// Any other invalid setting.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl WorkerArgs {
    /// Resolves flags > file > defaults into a [`WorkerConfig`], reading inherited
    /// `-e KEY` values from the process environment.
    pub fn resolve(&self) -> Result<WorkerConfig, ConfigError> {
        self.resolve_with_env(|k| std::env::var(k).ok())
    }

    /// Like [`resolve`](Self::resolve) with an explicit lookup for inherited variables.
    pub fn resolve_with_env(
        &self,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<WorkerConfig, ConfigError> {
        let (file, file_path) = match &self.config_file {
            Some(path) => (FileConfig::load(path)?, path.clone()),
            None => (FileConfig::default(), PathBuf::from("<none>")),
        };
        let file_backend = file.backend_kind(&file_path)?;
        let worker_id = match (&self.worker_id, &file.worker_id) {
            (Some(id), _) | (None, Some(id)) => id.clone(),
            (None, None) => {
                return Err(invalid(
                    "no worker id: pass --worker-id <ID> or set `worker_id` in the config file",
                ));
            }
        };
        validate_worker_id(&worker_id)?;
        let mut cfg = WorkerConfig {
            worker_id,
            ..WorkerConfig::default()
        };

        cfg.api_key = match &self.api_key {
            Some(k) if !k.trim().is_empty() => ApiKey::new(k.trim()),
            _ => {
                return Err(invalid(
                    "no credential: set HANGAR_API_KEY (or pass --api-key) to a worker token; an admin \
                     creates one with `hangar worker token create --worker-id ID`",
                ));
            }
        };
        if let Some(url) = &self.server_url {
            cfg.server_url = url.clone();
        }
        hangar_client::parse_server_url(&cfg.server_url)
            .map_err(|e| invalid(format!("--server-url: {e}")))?;

        cfg.backend = match (self.backend, file_backend) {
            (Some(flag), Some(in_file)) if flag != in_file => {
                return Err(invalid(format!(
                    "--backend {flag} conflicts with `backend.{in_file}` in {}: remove one of them",
                    file_path.display()
                )));
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => BackendKind::default(),
        };

        cfg.log_level = self.log_level.unwrap_or_default();
        cfg.allow_local_repositories =
            self.allow_local_repositories || file.allow_local_repositories.unwrap_or(false);
        cfg.cleanup = !self.no_cleanup && file.cleanup.unwrap_or(true);
        cfg.max_concurrent_tasks = self
            .max_concurrent_tasks
            .or(file.max_concurrent_tasks)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_TASKS);
        cfg.idle_on_complete = self
            .idle_on_complete
            .clone()
            .or(file.idle_on_complete.clone());
        if let Some(d) = &cfg.idle_on_complete {
            parse_duration(d).map_err(|e| invalid(format!("idle_on_complete: {e}")))?;
        }

        let backend = file.backend.clone().unwrap_or_default();
        let file_env = match cfg.backend {
            BackendKind::Docker => backend.docker.as_ref().map(|d| d.environment.clone()),
            BackendKind::Direct => backend.direct.as_ref().map(|d| d.environment.clone()),
            BackendKind::Command => backend.command.as_ref().map(|d| d.environment.clone()),
            BackendKind::Kubernetes => None,
        }
        .unwrap_or_default();
        let json = |key: &str,
                    v: Option<serde_norway::Value>|
         -> Result<Option<serde_json::Value>, ConfigError> {
            v.map(|v| {
                serde_json::to_value(v)
                    .map_err(|e| invalid(format!("backend.kubernetes.{key}: {e}")))
            })
            .transpose()
        };
        if let Some(k) = backend.kubernetes.clone() {
            let defaults = KubernetesSettings::default();
            cfg.kubernetes = KubernetesSettings {
                namespace: k.namespace,
                kubeconfig: k.kubeconfig,
                default_image: self.default_image.clone().or(k.default_image),
                image_pull_policy: k.image_pull_policy,
                preflight_image: k.preflight_image,
                preflight_resources: json("preflight_resources", k.preflight_resources)?,
                setup_command: k.setup_command,
                teardown_command: k.teardown_command,
                extra_labels: k.extra_labels,
                extra_annotations: k.extra_annotations,
                active_deadline_seconds: k
                    .active_deadline_seconds
                    .unwrap_or(defaults.active_deadline_seconds),
                ttl_seconds_after_finished: k
                    .ttl_seconds_after_finished
                    .unwrap_or(defaults.ttl_seconds_after_finished),
                workspace_size_limit: k.workspace_size_limit,
                unschedulable_timeout: match &k.unschedulable_timeout {
                    Some(t) => parse_duration(t).map_err(|e| {
                        invalid(format!("backend.kubernetes.unschedulable_timeout: {e}"))
                    })?,
                    None => defaults.unschedulable_timeout,
                },
                pod_template: json("pod_template", k.pod_template)?,
                agent_image: k.agent_image,
                agent_server_url: k.agent_server_url,
            };
        } else if cfg.backend == BackendKind::Kubernetes {
            cfg.kubernetes.default_image = self.default_image.clone();
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for var in &file_env {
            let spec = match &var.value {
                Some(v) => format!("{}={v}", var.name),
                None => var.name.clone(),
            };
            let entry = parse_env_spec(&spec, &host_env).map_err(|e| {
                invalid(format!(
                    "{} backend.{}.environment: {e}",
                    file_path.display(),
                    cfg.backend
                ))
            })?;
            set_env(&mut env, entry);
        }
        for spec in &self.env {
            let entry =
                parse_env_spec(spec, &host_env).map_err(|e| invalid(format!("-e/--env: {e}")))?;
            set_env(&mut env, entry);
        }
        cfg.env = env;

        let mut volumes = backend
            .docker
            .as_ref()
            .map(|d| d.volumes.clone())
            .unwrap_or_default();
        volumes.extend(self.volumes.iter().cloned());
        for v in &volumes {
            validate_volume(v)?;
        }
        cfg.volumes = volumes;

        if let Some(d) = self.heartbeat_interval {
            cfg.heartbeat_interval = d;
        }
        if let Some(d) = self.read_timeout {
            cfg.read_timeout = d;
        }
        if let Some(d) = self.kill_grace {
            cfg.kill_grace = d;
        }
        if let Some(d) = self.fence_after {
            cfg.fence_after = d;
        }
        cfg.agent_path = self.agent_path.clone();

        let direct = backend.direct.unwrap_or_default();
        cfg.direct = DirectSettings {
            workspace_root: self.workspace_root.clone().or(direct.workspace_root),
            target_dir: self.target_dir.clone().or(direct.target_dir),
            setup_command: direct.setup_command,
            teardown_command: direct.teardown_command,
            sandbox: if self.no_sandbox {
                SandboxKind::None
            } else {
                direct.sandbox.unwrap_or_default()
            },
            sandbox_mounts: direct
                .sandbox_mounts
                .iter()
                .chain(&self.sandbox_mounts)
                .map(|m| m.parse::<SandboxMount>().map_err(invalid))
                .collect::<Result<_, _>>()?,
            egress_allow_internal: direct.egress_allow_internal,
            pids_limit: direct.pids_limit,
            memory_mb: direct.memory_mb,
        };
        let docker = backend.docker.unwrap_or_default();
        cfg.docker = DockerSettings {
            default_image: self.default_image.clone().or(docker.default_image),
            image_pull_policy: self
                .image_pull_policy
                .or(docker.image_pull_policy)
                .unwrap_or_default(),
            network: docker.network,
            workspace_root: self.workspace_root.clone().or(docker.workspace_root),
            cpus: docker.cpus,
            memory_mb: docker.memory_mb,
            pids_limit: docker.pids_limit,
            cap_add: docker.cap_add,
            agent_server_url: docker.agent_server_url,
            extra_hosts: docker.extra_hosts,
            egress_host_firewall: docker.egress_host_firewall,
            egress_allow_internal: docker.egress_allow_internal,
            block_metadata_address: docker.block_metadata_address,
        };
        let command = backend.command.unwrap_or_default();
        let duration = |key: &str, text: &Option<String>, default: Duration| match text {
            Some(t) => {
                parse_duration(t).map_err(|e| invalid(format!("backend.command.{key}: {e}")))
            }
            None => Ok(default),
        };
        let defaults = CommandSettings::default();
        cfg.command = CommandSettings {
            dispatch_command: command.dispatch_command,
            cancel_command: command.cancel_command,
            status_command: command.status_command,
            dispatch_timeout: duration(
                "dispatch_timeout",
                &command.dispatch_timeout,
                defaults.dispatch_timeout,
            )?,
            status_interval: duration(
                "status_interval",
                &command.status_interval,
                defaults.status_interval,
            )?,
            state_dir: command.state_dir.or(self.workspace_root.clone()),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl WorkerConfig {
    /// Checks invariants that hold however the config was built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_worker_id(&self.worker_id)?;
        if self.api_key.is_empty() {
            return Err(invalid(
                "no API key: pass --api-key <KEY> or set HANGAR_API_KEY",
            ));
        }
        hangar_client::parse_server_url(&self.server_url)
            .map_err(|e| invalid(format!("server URL: {e}")))?;
        for v in &self.volumes {
            validate_volume(v)?;
        }
        if let Some(image) = &self.docker.default_image {
            hangar_protocol::repository::check_image_ref(image)
                .map_err(|e| invalid(format!("default_image: {e}")))?;
        }
        if self.heartbeat_interval.is_zero() || self.read_timeout.is_zero() {
            return Err(invalid(
                "--heartbeat-interval and --read-timeout must be greater than zero",
            ));
        }
        if self.fence_after <= self.heartbeat_interval {
            return Err(invalid(format!(
                "--fence-after ({:?}) must be longer than --heartbeat-interval ({:?}), \
                 otherwise tasks are stopped between two healthy heartbeats; use the \
                 server's worker_lost_timeout",
                self.fence_after, self.heartbeat_interval
            )));
        }
        if self.read_timeout <= self.heartbeat_interval {
            return Err(invalid(format!(
                "--read-timeout ({:?}) must be longer than --heartbeat-interval ({:?}), \
                 otherwise a healthy idle connection is declared dead",
                self.read_timeout, self.heartbeat_interval
            )));
        }
        if self.backend == BackendKind::Command {
            let c = &self.command;
            if c.dispatch_command
                .as_deref()
                .is_none_or(|d| d.trim().is_empty())
            {
                return Err(invalid(
                    "the command backend needs `backend.command.dispatch_command` in the config \
                     file: a shell command that starts the task from the JSON payload on its \
                     stdin (see examples/command-backend/)",
                ));
            }
            if c.dispatch_timeout.is_zero() || c.status_interval.is_zero() {
                return Err(invalid(
                    "backend.command.dispatch_timeout and status_interval must be above zero",
                ));
            }
        }
        for (key, _) in &self.env {
            if key == hangar_protocol::ENV_API_KEY {
                return Err(invalid(format!(
                    "refusing to pass {key} into tasks: tasks get a run-scoped token, never the worker's key"
                )));
            }
        }
        Ok(())
    }
}

impl WorkerConfig {
    /// The effective configuration as YAML, in the shape of the config file
    /// (PROTOCOL.md §3) plus the flag-only settings. The API key and every
    /// environment value are printed as `***`: values given with `-e` or in
    /// `environment:` are often tokens.
    pub fn to_yaml(&self) -> String {
        use serde_json::json;
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let env: Vec<_> = self
            .env
            .iter()
            .map(|(k, _)| json!({"name": k, "value": REDACTED}))
            .collect();
        let backend = match self.backend {
            BackendKind::Direct => json!({"direct": {
                "workspace_root": self.direct.workspace_root,
                "target_dir": self.direct.target_dir,
                "setup_command": self.direct.setup_command,
                "teardown_command": self.direct.teardown_command,
                "sandbox": self.direct.sandbox.as_str(),
                "sandbox_mounts": self.direct.sandbox_mounts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "egress_allow_internal": self.direct.egress_allow_internal,
                "pids_limit": self.direct.pids_limit,
                "memory_mb": self.direct.memory_mb,
                "environment": env,
            }}),
            BackendKind::Docker => {
                let d = &self.docker;
                json!({"docker": {
                    "volumes": self.volumes,
                    "environment": env,
                    "default_image": d.default_image.as_deref().unwrap_or(crate::backends::docker::FALLBACK_IMAGE),
                    "network": d.network,
                    "image_pull_policy": d.image_pull_policy.as_str(),
                    "workspace_root": d.workspace_root,
                    "cpus": d.cpus.unwrap_or(crate::backends::docker::DEFAULT_CPUS),
                    "memory_mb": d.memory_mb.unwrap_or(crate::backends::docker::DEFAULT_MEMORY_MB),
                    "pids_limit": d.pids_limit.unwrap_or(crate::backends::docker::DEFAULT_PIDS_LIMIT),
                    "cap_add": d.cap_add.clone().unwrap_or_else(|| crate::backends::docker::DEFAULT_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
                    "agent_server_url": d.agent_server_url,
                    "extra_hosts": d.extra_hosts,
                    "egress_host_firewall": d.egress_host_firewall.unwrap_or(true),
                    "egress_allow_internal": d.egress_allow_internal,
                    "block_metadata_address": d.block_metadata_address.unwrap_or(true),
                }})
            }
            BackendKind::Command => {
                let c = &self.command;
                json!({"command": {
                    "dispatch_command": c.dispatch_command,
                    "cancel_command": c.cancel_command,
                    "status_command": c.status_command,
                    "dispatch_timeout": secs(c.dispatch_timeout),
                    "status_interval": secs(c.status_interval),
                    "state_dir": c.state_dir,
                    "environment": env,
                }})
            }
            BackendKind::Kubernetes => {
                let k = &self.kubernetes;
                json!({"kubernetes": {
                    "namespace": k.namespace,
                    "kubeconfig": k.kubeconfig,
                    "default_image": k.default_image,
                    "image_pull_policy": k.image_pull_policy,
                    "agent_image": k.agent_image,
                    "agent_server_url": k.agent_server_url,
                    "preflight_image": k.preflight_image,
                    "preflight_resources": k.preflight_resources,
                    "setup_command": k.setup_command,
                    "teardown_command": k.teardown_command,
                    "extra_labels": k.extra_labels,
                    "extra_annotations": k.extra_annotations,
                    "active_deadline_seconds": k.active_deadline_seconds,
                    "ttl_seconds_after_finished": k.ttl_seconds_after_finished,
                    "workspace_size_limit": k.workspace_size_limit,
                    "unschedulable_timeout": secs(k.unschedulable_timeout),
                    "pod_template": k.pod_template,
                    "environment": env,
                }})
            }
        };
        let value = json!({
            "worker_id": self.worker_id,
            "api_key": if self.api_key.is_empty() { None } else { Some(REDACTED) },
            "server_url": self.server_url,
            "log_level": self.log_level.as_str(),
            "cleanup": self.cleanup,
            "allow_local_repositories": self.allow_local_repositories,
            "max_concurrent_tasks": self.max_concurrent_tasks,
            "idle_on_complete": self.idle_on_complete,
            "heartbeat_interval": secs(self.heartbeat_interval),
            "read_timeout": secs(self.read_timeout),
            "kill_grace": secs(self.kill_grace),
            "fence_after": secs(self.fence_after),
            "agent_path": self.agent_path,
            "backend": backend,
        });
        serde_norway::to_string(&value)
            .unwrap_or_else(|e| format!("# cannot render the config: {e}\n"))
    }
}

/// What [`WorkerConfig::to_yaml`] prints instead of a secret.
pub const REDACTED: &str = "***";

/// A worker id is non-empty and has no whitespace or `/`.
pub fn validate_worker_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty() {
        return Err(invalid("the worker id is empty: pass --worker-id <ID>"));
    }
    if !hangar_protocol::worker::is_valid_worker_id(id) {
        return Err(invalid(format!(
            "invalid worker id {id:?}: {}",
            hangar_protocol::worker::WORKER_ID_RULE
        )));
    }
    Ok(())
}

/// Parses `KEY=VALUE`, or `KEY` (value taken from `host_env`).
pub fn parse_env_spec(
    spec: &str,
    host_env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, String), ConfigError> {
    let (key, value) = match spec.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (spec, None),
    };
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "invalid environment entry {spec:?}: expected KEY=VALUE or KEY, with a non-empty KEY without whitespace"
        )));
    }
    let value = match value {
        Some(v) => v,
        None => host_env(key).ok_or_else(|| {
            invalid(format!(
                "{key} is to be inherited from the worker's environment, but it is not set there: \
                 set it, or pass {key}=VALUE"
            ))
        })?,
    };
    Ok((key.to_owned(), value))
}

/// Sets `key` in an ordered env list, replacing an earlier value in place.
fn set_env(env: &mut Vec<(String, String)>, (key, value): (String, String)) {
    match env.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key, value)),
    }
}

/// A volume is `HOST:CONTAINER[:ro|rw]`: `HOST` an absolute path or a
/// volume name, `CONTAINER` an absolute path, neither starting with `-` nor
/// holding `..`, whitespace or control characters (they reach Docker as
/// given).
pub fn validate_volume(spec: &str) -> Result<(), ConfigError> {
    let plain = |p: &str| {
        !p.is_empty()
            && !p.starts_with('-')
            && !p.split('/').any(|s| s == "..")
            && !p.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    let host_ok = |h: &str| {
        plain(h)
            && (h.starts_with('/')
                || h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    };
    let ctr_ok = |c: &str| plain(c) && c.starts_with('/');
    let parts: Vec<&str> = spec.split(':').collect();
    let ok = match parts.as_slice() {
        [host, ctr] => host_ok(host) && ctr_ok(ctr),
        [host, ctr, mode] => host_ok(host) && ctr_ok(ctr) && matches!(*mode, "ro" | "rw"),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid volume {spec:?}: expected HOST:CONTAINER[:ro|rw], HOST an absolute path \
             or a volume name and CONTAINER an absolute path, without `..`, spaces or a leading `-`"
        )))
    }
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `1h30m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let bad = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 10m, 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2m5s").unwrap(), Duration::from_secs(125));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10x").is_err());
    }

    #[test]
    fn env_specs() {
        assert_eq!(
            parse_env_spec("A=b=c", &no_env).unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(
            parse_env_spec("A=", &no_env).unwrap(),
            ("A".into(), String::new())
        );
        let host = |k: &str| (k == "HOSTY").then(|| "from-host".to_owned());
        assert_eq!(parse_env_spec("HOSTY", &host).unwrap().1, "from-host");
        let err = parse_env_spec("MISSING_ONE", &host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MISSING_ONE"), "{err}");
        assert!(parse_env_spec("=x", &no_env).is_err());
        assert!(parse_env_spec("A B=x", &no_env).is_err());
    }

    #[test]
    fn worker_ids() {
        assert!(validate_worker_id("my-worker.1").is_ok());
        assert!(validate_worker_id("").is_err());
        assert!(validate_worker_id("a b").is_err());
        assert!(validate_worker_id("a/b").is_err());
        assert!(validate_worker_id("a\tb").is_err());
    }

    #[test]
    fn api_key_is_redacted() {
        let key = ApiKey::new("hk_secret");
        assert_eq!(format!("{key:?}"), "***");
        assert_eq!(format!("{key}"), "***");
        let cfg = WorkerConfig {
            api_key: key,
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hk_secret"));
    }

    #[test]
    fn volumes_are_checked() {
        assert!(validate_volume("/a:/b").is_ok());
        assert!(validate_volume("/a:/b:ro").is_ok());
        assert!(validate_volume("/a:/b:xx").is_err());
        assert!(validate_volume("/a").is_err());
        assert!(validate_volume("named:/data").is_ok());
        assert!(validate_volume("-v:/b").is_err());
        assert!(validate_volume("/a:-b").is_err());
        assert!(validate_volume("/a/../etc:/b").is_err());
        assert!(validate_volume("rel/dir:/b").is_err());
        assert!(validate_volume("/a:b").is_err());
    }

    #[test]
    fn backend_section_must_be_exactly_one() {
        let p = Path::new("w.yaml");
        let f = FileConfig::parse("backend: {}\n", p).unwrap();
        assert!(
            f.backend_kind(p)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        let f = FileConfig::parse("backend: {direct: {}, docker: {}}\n", p).unwrap();
        let err = f.backend_kind(p).unwrap_err().to_string();
        assert!(err.contains("docker, direct"), "{err}");
        let f = FileConfig::parse("backend:\n  kubernetes:\n    namespace: x\n", p).unwrap();
        assert_eq!(f.backend_kind(p).unwrap(), Some(BackendKind::Kubernetes));
    }

    #[test]
    fn full_schema_parses() {
        let text = r#"
worker_id: my-worker
cleanup: true
max_concurrent_tasks: 4
backend:
  kubernetes: {namespace: default, kubeconfig: /k, default_image: img, image_pull_policy: IfNotPresent,
               preflight_image: p, setup_command: s, teardown_command: t, extra_labels: {a: b}, extra_annotations: {},
               active_deadline_seconds: 28800, ttl_seconds_after_finished: 86400, workspace_size_limit: 10Gi,
               unschedulable_timeout: 30s, pod_template: {containers: []}}
"#;
        FileConfig::parse(text, Path::new("k.yaml")).unwrap();
        let text = "backend:\n  docker: {volumes: [], environment: [{name: FOO, value: bar}, {name: INHERITED}], default_image: x, network: y}\n";
        FileConfig::parse(text, Path::new("d.yaml")).unwrap();
        let text = "backend:\n  command: {dispatch_command: a, cancel_command: b, dispatch_timeout: 60s, environment: []}\n";
        FileConfig::parse(text, Path::new("c.yaml")).unwrap();
    }
}
