//! The docker backend: each execution is one container, labelled with its run,
//! execution and worker, talking to the Docker Engine API (`bollard`).
//!
//! Daemon discovery: `DOCKER_HOST` (`unix://` or `tcp://`), then
//! `/var/run/docker.sock`, then the rootless socket
//! `$XDG_RUNTIME_DIR/docker.sock`. [`Backend::start`] pings the daemon,
//! negotiates the API version and checks the platform (linux/amd64|arm64).
//!
//! Per execution:
//! - **image**: environment image → worker `default_image` → `ubuntu:24.04`,
//!   pulled per [`PullPolicy`] (credentials from `~/.docker/config.json` `auths`);
//! - **agent**: the worker's own binary, copied once into a content-addressed
//!   directory (`<agent_cache>/<sha256>/hangar`, read-only) bind-mounted at
//!   `/agent`; the command is `/agent/hangar agent run --task-id … --server-url
//!   … --sandboxed`, so images stay unmodified. Glibc floor: the build
//!   host's glibc for a plain `cargo build`; `scripts/build-portable` builds
//!   against glibc 2.28 (cargo-zigbuild), so any glibc ≥ 2.28 image works
//!   (musl/distroless images without glibc do not);
//! - **workspace**: `<workspace_root>/<execution>/workspace` bind-mounted at
//!   `/workspace`; repositories are cloned there by the worker's git before the
//!   container starts, so the image needs no git;
//! - **setup commands** run in the task container (so what they install stays
//!   for the agent) from a generated `/bin/sh` script that `exec`s the agent
//!   once they all succeeded; a failure ends the task with
//!   `failure_reason: setup_command` and the command's output;
//! - **hardening** (S1): `cap_drop: ALL` plus [`DEFAULT_CAPABILITIES`],
//!   `no-new-privileges`, PID/memory(+swap)/CPU limits (instance shape or
//!   worker defaults), an init process that forwards signals and reaps, never
//!   privileged, no host PID/IPC/UTS/user namespace, no Docker socket (a
//!   configured volume that names it is refused). `network: host` is allowed
//!   only when configured explicitly.
//! - **network policy** (per environment): `full` uses the configured network
//!   (default bridge); `none` gives the container only loopback, so the agent
//!   cannot reach the server either (suits only self-contained tasks);
//!   `allowlist` puts the container alone on an internal network of its own
//!   with an egress proxy and a server relay served by the worker on the
//!   network's gateway, plus host firewall rules (see `backends/egress.rs`);
//!   repositories are cloned by the worker, so they need no allowlist entry.
//!   The proxy refuses internal destinations (see `backends/egress.rs`), and
//!   `full` still blocks the cloud metadata address (`metadata.rs`).
//! - **secrets** (and all task env, including the run token) go into a
//!   file in the 0700 execution directory that the container's start script
//!   (`/bin/sh /.hangar/start.sh`) exports and deletes before it runs the
//!   setup commands and `exec`s the agent, so `docker inspect` shows none of
//!   them (see `spec.rs`); images need a `/bin/sh`.
//! - **lifecycle**: cancel is SIGTERM, then SIGKILL after the grace (D8);
//!   the container and workspace are removed after the task unless cleanup is
//!   off. On start the worker lists its own containers by label and
//!   [recovers](Backend::recover) them (D2): running ones are waited on again,
//!   ended ones have their result reported and are removed.
//! - **idle** (`--idle-on-complete`): after the agent ended by itself the
//!   stopped container and its workspace are kept ([`Execution::park`]); a
//!   follow-up of the same run rewrites the start files (new env, token,
//!   execution id in `ctl/execution`, read by reconcile) and starts the same
//!   container again without clone or setup ([`Execution::adopt`]).
//!   Allowlist runs are not kept.

mod client;
mod egress;
mod execution;
mod image;
mod materialise;
pub mod metadata;
mod reconcile;
mod spec;

pub use client::discover_endpoint;
pub use spec::labels_for;

use super::factory::{self, BackendFactory};
use super::{Backend, BackendError, Execution, Recovered, TaskSpec, is_safe_segment};
use crate::config::{BackendKind, PullPolicy, WorkerConfig};
use crate::worker::WorkerError;
use async_trait::async_trait;
use client::{connect, docker_err};
use execution::DockerExecution;
use hangar_protocol::worker::FailureReason;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinSet;

/// Image used when neither the environment nor the worker names one.
pub const FALLBACK_IMAGE: &str = "ubuntu:24.04";
/// Label: always `true` on containers this backend created.
pub const LABEL_MANAGED: &str = "dev.hangar.managed";
/// Label: the worker id that owns the container.
pub const LABEL_WORKER: &str = "dev.hangar.worker";
/// Label: run (task) id.
pub const LABEL_RUN: &str = "dev.hangar.run";
/// Label: execution id.
pub const LABEL_EXECUTION: &str = "dev.hangar.execution";
/// Label: host directory of the execution (workspace and control files).
pub const LABEL_DIR: &str = "dev.hangar.dir";
/// Capabilities kept after `cap_drop: ALL` unless configured otherwise: what
/// root needs inside its own container to install packages in setup commands
/// (apt drops to `_apt`, chowns files) and to manage its own files and
/// processes. Left out of Docker's default set: `NET_RAW`, `MKNOD`,
/// `AUDIT_WRITE`, `SYS_CHROOT`, `NET_BIND_SERVICE`, `SETPCAP`, `SETFCAP`.
pub const DEFAULT_CAPABILITIES: [&str; 7] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
];
/// Default CPU limit without an instance shape.
pub const DEFAULT_CPUS: f64 = 2.0;
/// Default memory limit (MiB) without an instance shape.
pub const DEFAULT_MEMORY_MB: u64 = 4096;
/// Default process limit.
pub const DEFAULT_PIDS_LIMIT: i64 = 1024;
/// Where the agent directory is mounted.
const AGENT_MOUNT: &str = "/agent";
/// Where the control directory (setup script, markers) is mounted.
const CTL_MOUNT: &str = "/.hangar";
/// Where the workspace is mounted.
const WORKSPACE_MOUNT: &str = "/workspace";
/// Lines of output kept in a setup failure message.
const SETUP_OUTPUT_LINES: &str = "60";
/// How often setup progress is checked.
const SETUP_POLL: Duration = Duration::from_millis(20);
/// Limit for Docker API calls made while cleaning up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the docker backend.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// This worker's id (label of every container; reconcile looks only at these).
    pub worker_id: String,
    /// Parent of the per-execution directories (created 0700 if missing).
    pub workspace_root: PathBuf,
    /// Content-addressed copies of the agent binary (created if missing).
    pub agent_cache: PathBuf,
    /// The binary mounted as `/agent/hangar`.
    pub agent_path: PathBuf,
    /// Passed to the agent as `--server-url` (must be reachable from the container).
    pub server_url: String,
    /// Image when the environment names none.
    pub default_image: Option<String>,
    /// When to pull.
    pub pull_policy: PullPolicy,
    /// Network for task containers; `None` = Docker's default bridge.
    pub network: Option<String>,
    /// `HOST:CTR[:ro|rw]` binds for every task.
    pub volumes: Vec<String>,
    /// Extra environment for tasks; wins over the assignment's except for the run identity.
    pub env: Vec<(String, String)>,
    /// Remove container and workspace after the task.
    pub cleanup: bool,
    /// Default `--idle-on-complete` for the agent.
    pub idle_on_complete: Option<String>,
    /// SIGTERM → SIGKILL grace when stopping a setup phase.
    pub kill_grace: Duration,
    /// CPU limit without an instance shape.
    pub cpus: f64,
    /// Memory limit (MiB) without an instance shape.
    pub memory_mb: u64,
    /// Process limit.
    pub pids_limit: i64,
    /// Capabilities added after dropping ALL.
    pub cap_add: Vec<String>,
    /// `NAME:IP` entries added to every container's `/etc/hosts`; the egress
    /// proxy resolves these names the same way.
    pub extra_hosts: Vec<String>,
    /// The server as the worker itself reaches it: the egress relay of
    /// allowlist tasks connects here. Defaults to `server_url`.
    pub egress_server_url: String,
    /// Allowlist tasks: install host firewall rules on the task network's
    /// bridge, failing closed when impossible. `false` is a relaxation.
    pub egress_host_firewall: bool,
    /// Hosts (names or IP literals) the egress proxy may reach although they
    /// are or resolve to loopback, link-local, private or metadata addresses.
    pub egress_allow_internal: Vec<String>,
    /// `full` policy: reject traffic from task containers to the cloud
    /// metadata addresses with host firewall rules (see `metadata.rs`).
    pub block_metadata_address: bool,
}

impl BackendFactory for DockerConfig {
    const KIND: BackendKind = BackendKind::Docker;
    type Backend = Docker;

    fn from_worker(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let d = &config.docker;
        let workspace_root = match &d.workspace_root {
            Some(root) => root.clone(),
            None => dirs::data_dir()
                .map(|p| p.join("hangar").join("docker-workspaces"))
                .ok_or(WorkerError::NoWorkspaceRoot)?,
        };
        let agent_path = factory::agent_path(config)?;
        let server_url = d
            .agent_server_url
            .clone()
            .unwrap_or_else(|| config.server_url.clone());
        let mut dc = DockerConfig::new(
            config.worker_id.to_string(),
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
        dc.cpus = d.cpus.unwrap_or(DEFAULT_CPUS);
        dc.memory_mb = d.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        dc.pids_limit = d.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT);
        if let Some(caps) = &d.cap_add {
            dc.cap_add = caps.clone();
        }
        dc.extra_hosts = d.extra_hosts.clone();
        dc.egress_server_url = config.server_url.clone();
        dc.egress_host_firewall = d.egress_host_firewall.unwrap_or(true);
        dc.egress_allow_internal = d.egress_allow_internal.clone();
        dc.block_metadata_address = d.block_metadata_address.unwrap_or(true);
        Ok(dc)
    }

    fn spool_root(&self) -> Option<PathBuf> {
        Some(self.workspace_root.clone())
    }

    fn build(self) -> Result<Docker, BackendError> {
        Docker::new(self)
    }
}

impl DockerConfig {
    /// A configuration with the documented defaults.
    pub fn new(
        worker_id: impl Into<String>,
        workspace_root: PathBuf,
        agent_path: PathBuf,
        server_url: impl Into<String>,
    ) -> Self {
        let agent_cache = workspace_root
            .parent()
            .map(|p| p.join("agent-cache"))
            .unwrap_or_else(|| workspace_root.join(".agent-cache"));
        let server_url = server_url.into();
        DockerConfig {
            worker_id: worker_id.into(),
            workspace_root,
            agent_cache,
            agent_path,
            egress_server_url: server_url.clone(),
            server_url,
            default_image: None,
            pull_policy: PullPolicy::default(),
            network: None,
            volumes: Vec::new(),
            env: Vec::new(),
            cleanup: true,
            idle_on_complete: None,
            kill_grace: Duration::from_secs(10),
            cpus: DEFAULT_CPUS,
            memory_mb: DEFAULT_MEMORY_MB,
            pids_limit: DEFAULT_PIDS_LIMIT,
            cap_add: DEFAULT_CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            extra_hosts: Vec::new(),
            egress_host_firewall: true,
            egress_allow_internal: Vec::new(),
            block_metadata_address: true,
        }
    }
}

/// The docker backend.
#[derive(Debug, Clone)]
pub struct Docker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: DockerConfig,
    /// Client before version negotiation.
    raw: bollard::Docker,
    /// Client after [`Backend::start`].
    negotiated: OnceLock<bollard::Docker>,
    /// Host directory holding `hangar` (the agent), mounted at `/agent`.
    agent_dir: PathBuf,
    /// Where the daemon was found, for messages.
    endpoint: String,
}

impl Shared {
    fn client(&self) -> &bollard::Docker {
        self.negotiated.get().unwrap_or(&self.raw)
    }
}

impl Docker {
    /// Checks the configuration, creates the workspace root and the
    /// content-addressed agent copy, and builds the client. Nothing is
    /// contacted yet: [`Backend::start`] pings the daemon.
    pub fn new(config: DockerConfig) -> Result<Self, BackendError> {
        let setup = |msg: String, e: std::io::Error| {
            BackendError::with_source(FailureReason::WorkspaceSetup, msg, e)
        };
        for v in &config.volumes {
            crate::config::validate_volume(v)
                .map_err(|e| BackendError::new(FailureReason::VolumeMount, e.to_string()))?;
            let host = v.split(':').next().unwrap_or_default();
            if host.ends_with("docker.sock") {
                return Err(BackendError::new(
                    FailureReason::VolumeMount,
                    format!("refusing volume {v:?}: tasks never get the Docker socket"),
                ));
            }
        }
        super::sandbox::egress::parse_extra_hosts(&config.extra_hosts)
            .map_err(|e| BackendError::new(FailureReason::ContainerCreate, e))?;
        if config.network.as_deref() == Some("host") {
            tracing::warn!(worker_id = %config.worker_id, "task containers share the host network namespace (network: host, configured explicitly)");
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.workspace_root)
            .map_err(|e| {
                setup(
                    format!(
                        "cannot create workspace root {}: {e}; set --workspace-root to a writable directory",
                        config.workspace_root.display()
                    ),
                    e,
                )
            })?;
        let agent_dir = materialise::materialise_agent(&config.agent_path, &config.agent_cache)?;
        let endpoint = discover_endpoint()?;
        let raw = connect(&endpoint).map_err(|e| {
            docker_err(
                FailureReason::ContainerCreate,
                format!("cannot use the Docker daemon at {endpoint}"),
                e,
            )
        })?;
        Ok(Docker {
            shared: Arc::new(Shared {
                config,
                raw,
                negotiated: OnceLock::new(),
                agent_dir,
                endpoint,
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &DockerConfig {
        &self.shared.config
    }

    /// The host directory mounted read-only at `/agent`.
    pub fn agent_dir(&self) -> &Path {
        &self.shared.agent_dir
    }

    /// The client (after [`Backend::start`], version-negotiated).
    pub fn client(&self) -> &bollard::Docker {
        self.shared.client()
    }
}

#[async_trait]
impl Backend for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self) -> Result<(), BackendError> {
        let endpoint = &self.shared.endpoint;
        let unreachable = |e: bollard::errors::Error| {
            docker_err(
                FailureReason::ContainerCreate,
                format!(
                    "the Docker daemon at {endpoint} does not answer (is it running, and may this user use it?)"
                ),
                e,
            )
        };
        self.shared.raw.ping().await.map_err(unreachable)?;
        let negotiated = self
            .shared
            .raw
            .clone()
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        let version = negotiated.version().await.map_err(unreachable)?;
        let os = version.os.clone().unwrap_or_default();
        let arch = version.arch.clone().unwrap_or_default();
        if os != "linux" || !matches!(arch.as_str(), "amd64" | "arm64") {
            return Err(BackendError::new(
                FailureReason::ContainerCreate,
                format!(
                    "the Docker daemon at {endpoint} runs {os}/{arch}; only linux/amd64 and linux/arm64 are supported"
                ),
            ));
        }
        tracing::info!(
            endpoint = %endpoint,
            version = version.version.as_deref().unwrap_or("?"),
            api = version.api_version.as_deref().unwrap_or("?"),
            platform = %format!("{os}/{arch}"),
            "docker daemon reachable"
        );
        let _ = self.shared.negotiated.set(negotiated);
        if self.shared.config.block_metadata_address {
            metadata::block(
                self.client(),
                &self.shared.config.worker_id,
                self.shared.config.network.as_deref(),
            )
            .await?;
        }
        Ok(())
    }

    fn execution(&self, spec: TaskSpec) -> Result<Box<dyn Execution>, BackendError> {
        if !is_safe_segment(&spec.execution_id) {
            return Err(BackendError::new(
                FailureReason::ContainerCreate,
                format!(
                    "execution id {:?} cannot be used in a container name (allowed: A-Z a-z 0-9 . _ -)",
                    spec.execution_id
                ),
            ));
        }
        let dir = self.shared.config.workspace_root.join(&spec.execution_id);
        let name = spec::container_name(&self.shared.config.worker_id, &spec.execution_id);
        Ok(Box::new(DockerExecution {
            shared: self.shared.clone(),
            task_id: spec.task_id.clone(),
            execution_id: spec.execution_id.clone(),
            spec: Some(spec),
            dir,
            name,
            created_dir: false,
            container: None,
            started: false,
            early_exit: None,
            readers: JoinSet::new(),
            egress: None,
            reused: false,
        }))
    }

    async fn recover(&self) -> Result<Vec<Recovered>, BackendError> {
        self.reconcile().await
    }
}
