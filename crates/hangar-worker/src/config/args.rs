//! The flags of `hangar worker` and how flags, the config file and the
//! defaults resolve into a [`WorkerConfig`] (flags > file > defaults).

use super::file::{FileBackend, FileCommand, FileConfig, FileDirect, FileDocker, FileKubernetes};
use super::*;
use std::path::PathBuf;
use std::time::Duration;

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
            worker_id: worker_id.into(),
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
        self.resolve_general(&mut cfg, &file)?;

        let backend = file.backend.clone().unwrap_or_default();
        cfg.kubernetes = self.kubernetes_settings(cfg.backend, backend.kubernetes.clone())?;
        cfg.env = self.resolve_env(&cfg, &backend, &file_path, &host_env)?;
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
        self.resolve_timings(&mut cfg);
        cfg.direct = self.direct_settings(backend.direct.unwrap_or_default())?;
        cfg.docker = self.docker_settings(backend.docker.unwrap_or_default());
        cfg.command = self.command_settings(backend.command.unwrap_or_default())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Settings of every backend: logging, cleanup, concurrency, idle time.
    fn resolve_general(
        &self,
        cfg: &mut WorkerConfig,
        file: &FileConfig,
    ) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Connection and stop timings, and the agent binary (flags only).
    fn resolve_timings(&self, cfg: &mut WorkerConfig) {
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
    }

    /// The tasks' environment: the chosen backend's `environment` in the
    /// file, then `-e` flags; later entries win.
    fn resolve_env(
        &self,
        cfg: &WorkerConfig,
        backend: &FileBackend,
        file_path: &std::path::Path,
        host_env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let file_env = match cfg.backend {
            BackendKind::Docker => backend.docker.as_ref().map(|d| d.environment.clone()),
            BackendKind::Direct => backend.direct.as_ref().map(|d| d.environment.clone()),
            BackendKind::Command => backend.command.as_ref().map(|d| d.environment.clone()),
            BackendKind::Kubernetes => None,
        }
        .unwrap_or_default();
        let mut env: Vec<(String, String)> = Vec::new();
        for var in &file_env {
            let spec = match &var.value {
                Some(v) => format!("{}={v}", var.name),
                None => var.name.clone(),
            };
            let entry = parse_env_spec(&spec, host_env).map_err(|e| {
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
                parse_env_spec(spec, host_env).map_err(|e| invalid(format!("-e/--env: {e}")))?;
            set_env(&mut env, entry);
        }
        Ok(env)
    }

    /// `backend.kubernetes`, with `--default-image`.
    fn kubernetes_settings(
        &self,
        kind: BackendKind,
        file: Option<FileKubernetes>,
    ) -> Result<KubernetesSettings, ConfigError> {
        let json = |key: &str,
                    v: Option<serde_norway::Value>|
         -> Result<Option<serde_json::Value>, ConfigError> {
            v.map(|v| {
                serde_json::to_value(v)
                    .map_err(|e| invalid(format!("backend.kubernetes.{key}: {e}")))
            })
            .transpose()
        };
        let defaults = KubernetesSettings::default();
        let Some(k) = file else {
            return Ok(KubernetesSettings {
                default_image: if kind == BackendKind::Kubernetes {
                    self.default_image.clone()
                } else {
                    None
                },
                ..defaults
            });
        };
        Ok(KubernetesSettings {
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
        })
    }

    /// `backend.direct`, with the direct flags.
    fn direct_settings(&self, direct: FileDirect) -> Result<DirectSettings, ConfigError> {
        Ok(DirectSettings {
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
        })
    }

    /// `backend.docker`, with the docker flags.
    fn docker_settings(&self, docker: FileDocker) -> DockerSettings {
        DockerSettings {
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
        }
    }

    /// `backend.command`; its state directory defaults to `--workspace-root`.
    fn command_settings(&self, command: FileCommand) -> Result<CommandSettings, ConfigError> {
        let duration = |key: &str, text: &Option<String>, default: Duration| match text {
            Some(t) => {
                parse_duration(t).map_err(|e| invalid(format!("backend.command.{key}: {e}")))
            }
            None => Ok(default),
        };
        let defaults = CommandSettings::default();
        Ok(CommandSettings {
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
        })
    }
}
