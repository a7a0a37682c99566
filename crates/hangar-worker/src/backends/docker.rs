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
//! - **secrets** (and all task env) are container environment variables, so
//!   they are visible to `docker inspect` on the worker host (documented gap).
//! - **lifecycle**: cancel is SIGTERM, then SIGKILL after the grace (D8);
//!   the container and workspace are removed after the task unless cleanup is
//!   off. On start the worker lists its own containers by label and
//!   [recovers](Backend::recover) them (D2): running ones are waited on again,
//!   ended ones have their result reported and are removed.

use super::{
    Backend, BackendError, Execution, ExitStatus, Recovered, TaskSpec, is_safe_segment, repos,
};
use crate::config::PullPolicy;
use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use hangar_protocol::worker::{FailureReason, NetworkPolicy};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
/// Agent output line limit in the worker's log.
const MAX_LOG_LINE: usize = 16 * 1024;

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

/// A docker failure with its reason.
fn docker_err(
    reason: FailureReason,
    what: impl Into<String>,
    e: bollard::errors::Error,
) -> BackendError {
    let what = what.into();
    BackendError::with_source(reason, format!("{what}: {e}"), e)
}

/// Finds the daemon: `DOCKER_HOST`, the default socket, the rootless socket.
pub fn discover_endpoint() -> Result<String, BackendError> {
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && !host.is_empty()
    {
        return Ok(host);
    }
    let default = Path::new("/var/run/docker.sock");
    if default.exists() {
        return Ok(format!("unix://{}", default.display()));
    }
    let runtime = std::env::var("XDG_RUNTIME_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            Some(PathBuf::from(format!(
                "/run/user/{}",
                nix::unistd::getuid()
            )))
        });
    if let Some(dir) = runtime {
        let rootless = dir.join("docker.sock");
        if rootless.exists() {
            return Ok(format!("unix://{}", rootless.display()));
        }
    }
    Err(BackendError::new(
        FailureReason::ContainerCreate,
        "no Docker daemon found: DOCKER_HOST is unset, and neither /var/run/docker.sock nor \
         $XDG_RUNTIME_DIR/docker.sock (rootless) exists; start Docker or set DOCKER_HOST",
    ))
}

fn connect(endpoint: &str) -> Result<bollard::Docker, bollard::errors::Error> {
    const TIMEOUT_SECS: u64 = 120;
    if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        bollard::Docker::connect_with_http(endpoint, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else {
        bollard::Docker::connect_with_unix(endpoint, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
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
            let host = v.split(':').next().unwrap_or_default();
            if host.ends_with("docker.sock") {
                return Err(BackendError::new(
                    FailureReason::VolumeMount,
                    format!("refusing volume {v:?}: tasks never get the Docker socket"),
                ));
            }
        }
        super::egress::parse_extra_hosts(&config.extra_hosts)
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
        let agent_dir = materialise_agent(&config.agent_path, &config.agent_cache)?;
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

/// Copies the agent binary to `<cache>/<sha256 prefix>/hangar` (0555) unless
/// already there; returns the directory. Same content → same directory, so
/// running containers never see their `/agent` change under them.
fn materialise_agent(agent: &Path, cache: &Path) -> Result<PathBuf, BackendError> {
    let fail = |msg: String, e: std::io::Error| {
        BackendError::with_source(FailureReason::AgentInvocation, msg, e)
    };
    let bytes = std::fs::read(agent).map_err(|e| {
        fail(
            format!(
                "cannot read the agent binary {}: {e}; set --agent-path",
                agent.display()
            ),
            e,
        )
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let dir = cache.join(&digest[..32]);
    let target = dir.join("hangar");
    if target.is_file() {
        return Ok(dir);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display()), e))?;
    let tmp = dir.join(format!(".hangar.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
        std::fs::rename(&tmp, &target)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(
            format!("cannot copy the agent into {}: {e}", dir.display()),
            e,
        )
    })?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555))
        .map_err(|e| fail(format!("cannot seal {}: {e}", dir.display()), e))?;
    Ok(dir)
}

/// A Docker container name for this worker's execution.
fn container_name(worker_id: &str, execution_id: &str) -> String {
    let worker: String = worker_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("hangar-{worker}-{execution_id}")
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
        let name = container_name(&self.shared.config.worker_id, &spec.execution_id);
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
        }))
    }

    async fn recover(&self) -> Result<Vec<Recovered>, BackendError> {
        let cfg = &self.shared.config;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_WORKER}={}", cfg.worker_id)],
        )]);
        let list = self
            .shared
            .client()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                docker_err(
                    FailureReason::ContainerWait,
                    "cannot list task containers",
                    e,
                )
            })?;
        let mut found = Vec::new();
        for c in list {
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(id), Some(task_id), Some(execution_id)) = (
                c.id.clone(),
                labels.get(LABEL_RUN).cloned(),
                labels.get(LABEL_EXECUTION).cloned(),
            ) else {
                continue;
            };
            if !is_safe_segment(&execution_id) {
                continue;
            }
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            let dir = labels
                .get(LABEL_DIR)
                .map(PathBuf::from)
                .unwrap_or_else(|| cfg.workspace_root.join(&execution_id));
            let started = state != "created";
            tracing::info!(task_id = %task_id, execution_id = %execution_id, container = %id, state = %state, "recovered task container");
            let exec = DockerExecution {
                shared: self.shared.clone(),
                task_id: task_id.clone(),
                execution_id: execution_id.clone(),
                spec: None,
                name: container_name(&cfg.worker_id, &execution_id),
                // Only remove what this backend created: the label names it.
                created_dir: dir.starts_with(&cfg.workspace_root),
                dir,
                container: Some(id),
                started,
                early_exit: None,
                readers: JoinSet::new(),
                egress: None,
            };
            found.push(Recovered {
                task_id,
                execution_id,
                execution: Box::new(exec),
            });
        }
        Ok(found)
    }
}

struct DockerExecution {
    shared: Arc<Shared>,
    task_id: String,
    execution_id: String,
    /// `None` for a recovered execution (only wait/cancel/cleanup follow).
    spec: Option<TaskSpec>,
    /// `<workspace_root>/<execution>`: `workspace/` and `ctl/` live here.
    dir: PathBuf,
    /// Container name.
    name: String,
    created_dir: bool,
    /// Container id once created.
    container: Option<String>,
    /// The container was started (by `prepare` when there are setup commands).
    started: bool,
    /// The agent ended while `prepare` watched the setup phase.
    early_exit: Option<ExitStatus>,
    /// Output pump of the container.
    readers: JoinSet<()>,
    /// Egress proxy and task network of an allowlist run.
    egress: Option<super::egress::Egress>,
}

impl DockerExecution {
    fn config(&self) -> &DockerConfig {
        &self.shared.config
    }

    fn client(&self) -> &bollard::Docker {
        self.shared.client()
    }

    fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    fn ctl(&self) -> PathBuf {
        self.dir.join("ctl")
    }

    fn spec(&self) -> Result<&TaskSpec, BackendError> {
        self.spec.as_ref().ok_or_else(|| {
            BackendError::new(
                FailureReason::Unknown,
                "a recovered execution cannot be prepared again",
            )
        })
    }

    /// Image precedence: environment → `docker_image` of the assignment → worker default → fallback.
    fn image(spec: &TaskSpec, config: &DockerConfig) -> String {
        let a = &spec.assignment;
        a.environment
            .as_ref()
            .and_then(|e| e.docker_image.clone())
            .or_else(|| a.docker_image.clone())
            .filter(|i| !i.is_empty())
            .or_else(|| config.default_image.clone())
            .unwrap_or_else(|| FALLBACK_IMAGE.to_owned())
    }

    async fn ensure_image(
        &self,
        image: &str,
        stop: &CancellationToken,
    ) -> Result<(), BackendError> {
        let present = self.client().inspect_image(image).await.is_ok();
        let pull = match self.config().pull_policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never => {
                if !present {
                    return Err(BackendError::new(
                        FailureReason::ImagePull,
                        format!("image {image} is not present and image_pull_policy is never"),
                    ));
                }
                false
            }
        };
        if !pull {
            return Ok(());
        }
        tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, image = %image, "pulling image");
        let (repo, tag) = split_image(image);
        let creds = registry_credentials(&repo);
        let mut stream = self.client().create_image(
            Some(CreateImageOptions {
                from_image: Some(repo),
                tag: Some(tag),
                ..Default::default()
            }),
            None,
            creds,
        );
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        return Err(docker_err(FailureReason::ImagePull, format!("cannot pull image {image}"), e));
                    }
                },
                _ = stop.cancelled() => return Err(BackendError::cancelled()),
            }
        }
    }

    fn create_dirs(&mut self) -> Result<(), BackendError> {
        let io = |msg: String, e: std::io::Error| {
            BackendError::with_source(FailureReason::WorkspaceSetup, msg, e)
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io(format!("cannot create {}: {e}", self.dir.display()), e))?;
        self.created_dir = true;
        for (d, mode) in [(self.workspace(), 0o777), (self.ctl(), 0o755)] {
            std::fs::create_dir(&d)
                .and_then(|()| std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)))
                .map_err(|e| io(format!("cannot create {}: {e}", d.display()), e))?;
        }
        Ok(())
    }

    /// Writes the setup script; the container runs it instead of the agent.
    fn write_setup_script(&self, commands: &[String]) -> Result<(), BackendError> {
        let mut script =
            String::from("# Generated by the hangar worker: setup commands, then the agent.\n");
        script.push_str(&format!("cd {WORKSPACE_MOUNT} || exit 1\n"));
        for (i, c) in commands.iter().enumerate() {
            let n = i + 1;
            let q = shell_quote(c);
            script.push_str(&format!(
                "printf '%s\\n' {} >&2\n/bin/sh -c {q}\nrc=$?\nif [ $rc -ne 0 ]; then printf 'hangar: setup command {n} failed with exit code %s\\n' \"$rc\" >&2; echo \"{n} $rc\" > {CTL_MOUNT}/setup-failed; exit $rc; fi\n",
                shell_quote(&format!("+ {c}"))
            ));
        }
        script.push_str(&format!(
            ": > {CTL_MOUNT}/setup-ok\nexec {AGENT_MOUNT}/hangar \"$@\"\n"
        ));
        let path = self.ctl().join("setup.sh");
        std::fs::write(&path, script).map_err(|e| {
            BackendError::with_source(
                FailureReason::WorkspaceSetup,
                format!("cannot write {}: {e}", path.display()),
                e,
            )
        })
    }

    fn container_body(
        &self,
        spec: &TaskSpec,
        image: String,
        with_setup: bool,
    ) -> ContainerCreateBody {
        let cfg = self.config();
        let mut env = super::task_env(spec, &cfg.env);
        env.entry("HOME".to_owned())
            .or_insert_with(|| "/root".to_owned());
        if let Some(egress) = &self.egress {
            env.extend(egress.env.iter().cloned());
        }
        let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let server_url = self
            .egress
            .as_ref()
            .map_or(cfg.server_url.as_str(), |e| e.agent_server_url.as_str());
        let args = super::agent_args(spec, server_url, cfg.idle_on_complete.as_deref());
        let entrypoint = if with_setup {
            vec!["/bin/sh".to_owned(), format!("{CTL_MOUNT}/setup.sh")]
        } else {
            vec![format!("{AGENT_MOUNT}/hangar")]
        };
        let labels = HashMap::from([
            (LABEL_MANAGED.to_owned(), "true".to_owned()),
            (LABEL_WORKER.to_owned(), cfg.worker_id.clone()),
            (LABEL_RUN.to_owned(), spec.task_id.clone()),
            (LABEL_EXECUTION.to_owned(), spec.execution_id.clone()),
            (
                LABEL_DIR.to_owned(),
                self.dir.to_string_lossy().into_owned(),
            ),
        ]);
        let mut binds = vec![
            format!("{}:{AGENT_MOUNT}:ro", self.shared.agent_dir.display()),
            format!("{}:{WORKSPACE_MOUNT}:rw", self.workspace().display()),
            format!("{}:{CTL_MOUNT}:rw", self.ctl().display()),
        ];
        binds.extend(cfg.volumes.iter().cloned());
        let shape = spec.assignment.instance_shape.as_ref();
        let cpus = shape
            .and_then(|s| s.vcpus)
            .filter(|v| *v > 0.0)
            .unwrap_or(cfg.cpus);
        let memory = shape
            .and_then(|s| s.memory_gb)
            .filter(|m| *m > 0.0)
            .map(|gb| (gb * 1024.0 * 1024.0 * 1024.0) as i64)
            .unwrap_or((cfg.memory_mb as i64).saturating_mul(1024 * 1024));
        let policy = spec
            .assignment
            .environment
            .as_ref()
            .map(|e| e.network_policy.clone())
            .unwrap_or_default();
        let (network_mode, extra_hosts) = match (&policy, &self.egress) {
            // No interface but loopback: the agent cannot reach the server
            // either, which only suits agents that need no server (documented).
            (NetworkPolicy::None, _) => (Some("none".to_owned()), Vec::new()),
            // Alone on its internal network; names map as the proxy sees them.
            (NetworkPolicy::Allowlist { .. }, Some(egress)) => {
                (Some(egress.network.clone()), egress.extra_hosts.clone())
            }
            // prepare() always sets up the egress first; never fall back to full.
            (NetworkPolicy::Allowlist { .. }, None) => (Some("none".to_owned()), Vec::new()),
            (NetworkPolicy::Full, _) => (cfg.network.clone(), cfg.extra_hosts.clone()),
        };
        ContainerCreateBody {
            image: Some(image),
            entrypoint: Some(entrypoint),
            cmd: Some(args),
            env: Some(env),
            labels: Some(labels),
            working_dir: Some(WORKSPACE_MOUNT.to_owned()),
            host_config: Some(HostConfig {
                binds: Some(binds),
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(cfg.cap_add.clone()),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                privileged: Some(false),
                init: Some(true),
                pids_limit: Some(cfg.pids_limit),
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some((cpus * 1e9) as i64),
                network_mode,
                extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_id(&self) -> Result<&str, BackendError> {
        self.container.as_deref().ok_or_else(|| {
            BackendError::new(
                FailureReason::ContainerStart,
                "the container was never created",
            )
        })
    }

    async fn start_container(&mut self) -> Result<(), BackendError> {
        let id = self.container_id()?.to_owned();
        self.client()
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| {
                docker_err(
                    FailureReason::ContainerStart,
                    "cannot start the task container",
                    e,
                )
            })?;
        self.started = true;
        self.pump_logs(&id);
        Ok(())
    }

    /// Follows the container's output into the worker's log (debug: it may hold secrets).
    fn pump_logs(&mut self, id: &str) {
        let mut stream = self.client().logs(
            id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                tail: "all".to_owned(),
                ..Default::default()
            }),
        );
        let (task_id, execution_id) = (self.task_id.clone(), self.execution_id.clone());
        self.readers.spawn(async move {
            while let Some(Ok(chunk)) = stream.next().await {
                let source = match &chunk {
                    bollard::container::LogOutput::StdErr { .. } => "agent-stderr",
                    _ => "agent",
                };
                let bytes = chunk.into_bytes();
                for line in String::from_utf8_lossy(&bytes).lines() {
                    let truncated = line.len() > MAX_LOG_LINE;
                    let mut end = line.len().min(MAX_LOG_LINE);
                    while !line.is_char_boundary(end) {
                        end -= 1;
                    }
                    tracing::debug!(task_id = %task_id, execution_id = %execution_id, source, truncated, "{}", &line[..end]);
                }
            }
        });
    }

    /// Waits for the container to stop; maps OOM kills to `container_oom`.
    async fn wait_container(&self) -> Result<ExitStatus, BackendError> {
        let id = self.container_id()?.to_owned();
        let mut stream = self.client().wait_container(
            &id,
            Some(WaitContainerOptions {
                condition: "not-running".to_owned(),
            }),
        );
        let code = match stream.next().await {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => {
                return Err(docker_err(
                    FailureReason::ContainerWait,
                    "cannot wait for the task container",
                    e,
                ));
            }
            None => {
                return Err(BackendError::new(
                    FailureReason::ContainerWait,
                    "the Docker daemon ended the wait without a status",
                ));
            }
        };
        let inspect = self
            .client()
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| {
                docker_err(
                    FailureReason::ContainerWait,
                    "cannot inspect the task container",
                    e,
                )
            })?;
        if inspect.state.and_then(|s| s.oom_killed).unwrap_or(false) {
            return Err(BackendError::new(
                FailureReason::ContainerOom,
                format!("the task ran out of memory and was killed (exit code {code})"),
            ));
        }
        Ok(ExitStatus::Code(i32::try_from(code).unwrap_or(-1)))
    }

    async fn kill(&self, signal: &str) {
        let Some(id) = self.container.as_deref() else {
            return;
        };
        if let Err(e) = self
            .client()
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
        {
            // 409: not running any more, which is what we want.
            tracing::debug!(task_id = %self.task_id, execution_id = %self.execution_id, signal, error = %e, "kill did not apply");
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    async fn terminate(&self, grace: Duration) -> Result<ExitStatus, BackendError> {
        self.kill("SIGTERM").await;
        match tokio::time::timeout(grace, self.wait_container()).await {
            Ok(r) => r,
            Err(_) => {
                tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, ?grace, "task ignored SIGTERM; sending SIGKILL");
                self.kill("SIGKILL").await;
                self.wait_container().await
            }
        }
    }

    /// The last lines of the container's output.
    async fn tail_output(&self) -> String {
        let Some(id) = self.container.as_deref() else {
            return String::new();
        };
        let mut stream = self.client().logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: SETUP_OUTPUT_LINES.to_owned(),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        text
    }

    /// Watches the setup phase: Ok once the script `exec`ed the agent.
    async fn watch_setup(&mut self, stop: &CancellationToken) -> Result<(), BackendError> {
        let ok = self.ctl().join("setup-ok");
        let failed = self.ctl().join("setup-failed");
        let mut exited = Box::pin(self.wait_container());
        loop {
            if ok.exists() {
                return Ok(());
            }
            tokio::select! {
                status = &mut exited => {
                    if ok.exists() {
                        // The agent already ran to its end; wait() reports it.
                        drop(exited);
                        self.early_exit = Some(status?);
                        return Ok(());
                    }
                    drop(exited);
                    let which = std::fs::read_to_string(&failed).unwrap_or_default();
                    let output = self.tail_output().await;
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    let command = which
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<usize>().ok())
                        .and_then(|n| self.spec.as_ref()?.assignment.environment.as_ref()?.setup_commands.get(n - 1).cloned());
                    let what = match command {
                        Some(c) => format!("the setup command `{c}` failed"),
                        None => "the setup phase failed".to_owned(),
                    };
                    return Err(BackendError::new(
                        FailureReason::SetupCommand,
                        format!("{what} ({status}); output:\n{}", output.trim_end()),
                    ));
                }
                _ = stop.cancelled() => {
                    drop(exited);
                    let _ = self.terminate(self.config().kill_grace).await;
                    return Err(BackendError::cancelled());
                }
                _ = tokio::time::sleep(SETUP_POLL) => {}
            }
        }
    }
}

#[async_trait]
impl Execution for DockerExecution {
    async fn prepare(&mut self, stop: &CancellationToken) -> Result<(), BackendError> {
        let spec = self.spec()?.clone();
        let image = Self::image(&spec, self.config());
        self.ensure_image(&image, stop).await?;
        self.create_dirs()?;
        if let Some(NetworkPolicy::Allowlist { hosts }) = spec
            .assignment
            .environment
            .as_ref()
            .map(|e| &e.network_policy)
        {
            let cfg = self.config();
            let labels = HashMap::from([
                (LABEL_MANAGED.to_owned(), "true".to_owned()),
                (LABEL_WORKER.to_owned(), cfg.worker_id.clone()),
                (LABEL_RUN.to_owned(), spec.task_id.clone()),
                (LABEL_EXECUTION.to_owned(), spec.execution_id.clone()),
            ]);
            let egress = super::egress::Egress::start(
                self.client(),
                format!("{}-egress", self.name),
                labels,
                super::egress::EgressRequest {
                    worker_id: &cfg.worker_id,
                    task_id: &spec.task_id,
                    execution_id: &spec.execution_id,
                    hosts,
                    extra_hosts: &cfg.extra_hosts,
                    server_url: &cfg.egress_server_url,
                    host_firewall: cfg.egress_host_firewall,
                },
            )
            .await?;
            self.egress = Some(egress);
        }
        let environment = spec.assignment.environment.clone().unwrap_or_default();
        if !environment.repos.is_empty() {
            let env = super::task_env(&spec, &self.config().env);
            repos::clone_all(&self.workspace(), &environment.repos, &env, stop, &spec).await?;
        }
        if stop.is_cancelled() {
            return Err(BackendError::cancelled());
        }
        let with_setup = !environment.setup_commands.is_empty();
        if with_setup {
            self.write_setup_script(&environment.setup_commands)?;
        }
        let body = self.container_body(&spec, image.clone(), with_setup);
        let created = self
            .client()
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(self.name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| {
                docker_err(
                    FailureReason::ContainerCreate,
                    format!("cannot create a container from {image}"),
                    e,
                )
            })?;
        tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, container = %created.id, image = %image, "container created");
        self.container = Some(created.id);
        if with_setup {
            self.start_container().await?;
            self.watch_setup(stop).await?;
        }
        if stop.is_cancelled() {
            return Err(BackendError::cancelled());
        }
        Ok(())
    }

    async fn launch(&mut self) -> Result<(), BackendError> {
        if !self.started {
            self.start_container().await?;
        }
        tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, container = %self.name, "agent started");
        Ok(())
    }

    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        if let Some(status) = self.early_exit {
            return Ok(status);
        }
        if !self.started {
            return Err(BackendError::new(
                FailureReason::ContainerStart,
                "the task container was never started",
            ));
        }
        self.wait_container().await
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        if self.container.is_none() || !self.started {
            return Err(BackendError::cancelled());
        }
        self.terminate(grace).await
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        let mut result = Ok(());
        if let Some(id) = self.container.clone() {
            if self.config().cleanup {
                let removed = tokio::time::timeout(
                    CLEANUP_TIMEOUT,
                    self.client().remove_container(
                        &id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            ..Default::default()
                        }),
                    ),
                )
                .await;
                match removed {
                    Ok(Ok(())) => {}
                    Ok(Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    })) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(task_id = %self.task_id, execution_id = %self.execution_id, error = %e, "cannot remove the task container");
                        result = Err(docker_err(
                            FailureReason::Cleanup,
                            "cannot remove the task container",
                            e,
                        ));
                    }
                    Err(_) => {
                        result = Err(BackendError::new(
                            FailureReason::Cleanup,
                            "removing the task container timed out",
                        ));
                    }
                }
            } else {
                self.kill("SIGKILL").await;
                tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, container = %id, "cleanup disabled; container kept");
            }
        }
        // The log stream ends with the container; do not wait for a kept one.
        let drained = tokio::time::timeout(Duration::from_secs(2), async {
            while self.readers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.readers.abort_all();
        }
        if let Some(mut egress) = self.egress.take() {
            egress.stop(self.client()).await;
        } else if self.spec.is_none() && self.config().cleanup {
            // Recovered after a crash: the egress of an allowlist run (if any)
            // died with the old worker; remove its rules and network.
            super::egress::remove_leftover(
                self.client(),
                &self.config().worker_id,
                &self.execution_id,
                &format!("{}-egress", self.name),
            )
            .await;
        }
        if self.created_dir
            && self.config().cleanup
            && let Err(e) = tokio::fs::remove_dir_all(&self.dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(task_id = %self.task_id, execution_id = %self.execution_id, dir = %self.dir.display(), error = %e, "cannot remove workspace");
            if result.is_ok() {
                result = Err(BackendError::with_source(
                    FailureReason::Cleanup,
                    format!("cannot remove workspace: {e}"),
                    e,
                ));
            }
        }
        result
    }
}

/// `repo[:tag]` → (repo, tag); digests and registry ports are kept in `repo`.
fn split_image(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_owned(), String::new());
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), "latest".to_owned()),
    }
}

/// Credentials for the image's registry from `$DOCKER_CONFIG/config.json`
/// (or `~/.docker/config.json`) `auths` entries. Credential helpers are not
/// consulted (documented gap).
fn registry_credentials(repo: &str) -> Option<bollard::auth::DockerCredentials> {
    let first = repo.split('/').next().unwrap_or_default();
    let registry = if repo.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        first.to_owned()
    } else {
        "https://index.docker.io/v1/".to_owned()
    };
    let path = std::env::var("DOCKER_CONFIG")
        .map(PathBuf::from)
        .ok()
        .or_else(|| dirs::home_dir().map(|h| h.join(".docker")))?
        .join("config.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = json.get("auths")?.as_object()?;
    let entry = auths.get(&registry).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| {
                k.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .starts_with(&registry)
            })
            .map(|(_, v)| v)
    })?;
    let auth = entry.get("auth")?.as_str()?.to_owned();
    Some(bollard::auth::DockerCredentials {
        auth: Some(auth),
        serveraddress: Some(registry),
        ..Default::default()
    })
}

/// Single-quotes `s` for `/bin/sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Labels of a container, for tests and tools.
pub fn labels_for(worker_id: &str, task_id: &str, execution_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_WORKER.to_owned(), worker_id.to_owned()),
        (LABEL_RUN.to_owned(), task_id.to_owned()),
        (LABEL_EXECUTION.to_owned(), execution_id.to_owned()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split() {
        assert_eq!(
            split_image("ubuntu:24.04"),
            ("ubuntu".into(), "24.04".into())
        );
        assert_eq!(split_image("ubuntu"), ("ubuntu".into(), "latest".into()));
        assert_eq!(
            split_image("reg:5000/team/img"),
            ("reg:5000/team/img".into(), "latest".into())
        );
        assert_eq!(
            split_image("reg:5000/team/img:v1"),
            ("reg:5000/team/img".into(), "v1".into())
        );
    }

    #[test]
    fn names_and_quotes() {
        assert_eq!(
            container_name("my worker/1", "e-1"),
            "hangar-my-worker-1-e-1"
        );
        assert_eq!(shell_quote("echo 'hi'"), "'echo '\\''hi'\\'''");
    }
}
