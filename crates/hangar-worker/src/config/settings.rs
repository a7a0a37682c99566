//! Each backend's settings in a [`WorkerConfig`](super::WorkerConfig)(super::WorkerConfig), as
//! resolved from flags and the config file; each backend's `XConfig` reads
//! its own (`backends::factory`).

use clap::ValueEnum;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Direct-backend settings of a [`WorkerConfig`](super::WorkerConfig).
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

/// Kubernetes-backend settings of a [`WorkerConfig`](super::WorkerConfig) (`backend.kubernetes`,
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

/// Command-backend settings of a [`WorkerConfig`](super::WorkerConfig) (`backend.command`).
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
    /// Where dispatched executions are recorded (see [`FileCommand`](super::FileCommand)).
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

/// Docker-backend settings of a [`WorkerConfig`](super::WorkerConfig). `None` fields take the
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
