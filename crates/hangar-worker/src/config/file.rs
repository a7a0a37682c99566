//! The YAML config file (PROTOCOL.md §3): typed, strict (`deny_unknown_fields`).

use super::{BackendKind, ConfigError, invalid};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config file (PROTOCOL.md §3). Unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Worker id.
    pub worker_id: Option<String>,
    /// Remove sandboxes after tasks (default true).
    pub cleanup: Option<bool>,
    /// Concurrency; 0 = unlimited.
    pub max_concurrent_tasks: Option<u32>,
    /// Passed to the agent.
    pub idle_on_complete: Option<String>,
    /// Accept `file://` URLs and local paths as repositories (tests only).
    pub allow_local_repositories: Option<bool>,
    /// Exactly one backend section.
    pub backend: Option<FileBackend>,
}

/// `backend:` of the config file: exactly one section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    /// Docker settings.
    pub docker: Option<FileDocker>,
    /// Direct settings.
    pub direct: Option<FileDirect>,
    /// Kubernetes settings.
    pub kubernetes: Option<FileKubernetes>,
    /// Command settings.
    pub command: Option<FileCommand>,
}

/// An environment entry; no `value` inherits the host's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEnvVar {
    /// Variable name.
    pub name: String,
    /// Value; absent = inherit from the worker's environment.
    pub value: Option<String>,
}

/// `backend.docker`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDocker {
    /// `HOST:CTR[:ro|rw]` volumes.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Task environment.
    #[serde(default)]
    pub environment: Vec<FileEnvVar>,
    /// Image when the environment names none.
    pub default_image: Option<String>,
    /// Docker network for task containers.
    pub network: Option<String>,
    /// `always`, `if_not_present` (default) or `never`.
    pub image_pull_policy: Option<super::PullPolicy>,
    /// Parent of per-task workspaces.
    pub workspace_root: Option<PathBuf>,
    /// CPU limit without an instance shape.
    pub cpus: Option<f64>,
    /// Memory limit (MiB) without an instance shape.
    pub memory_mb: Option<u64>,
    /// Process limit per task.
    pub pids_limit: Option<i64>,
    /// Capabilities granted after dropping ALL (explicit relaxation).
    pub cap_add: Option<Vec<String>>,
    /// Server URL as seen from inside task containers.
    pub agent_server_url: Option<String>,
    /// `NAME:IP` entries for task containers' `/etc/hosts` (and the egress proxy).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// Allowlist tasks: install host firewall rules (default true; false is a relaxation).
    pub egress_host_firewall: Option<bool>,
    /// Internal hosts (names or IPs) the egress proxy may reach when an allowlist names them.
    #[serde(default)]
    pub egress_allow_internal: Vec<String>,
    /// `full` policy: block the cloud metadata addresses (default true).
    pub block_metadata_address: Option<bool>,
}

/// `backend.direct`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDirect {
    /// Parent of per-task workspaces.
    pub workspace_root: Option<PathBuf>,
    /// Shared directory for every task.
    pub target_dir: Option<PathBuf>,
    /// Run before the agent.
    pub setup_command: Option<String>,
    /// Run after the agent.
    pub teardown_command: Option<String>,
    /// `bwrap` (default) or `none`.
    pub sandbox: Option<crate::config::SandboxKind>,
    /// Extra host paths shown in the sandbox, `PATH[:ro|rw]`.
    #[serde(default)]
    pub sandbox_mounts: Vec<String>,
    /// Internal hosts the egress proxy may reach when an allowlist names them.
    #[serde(default)]
    pub egress_allow_internal: Vec<String>,
    /// Most processes of one execution (0 = unlimited).
    pub pids_limit: Option<u64>,
    /// Memory limit of one execution in MiB.
    pub memory_mb: Option<u64>,
    /// Task environment.
    #[serde(default)]
    pub environment: Vec<FileEnvVar>,
}

/// `backend.kubernetes` (parsed and validated; the backend comes in a later build).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileKubernetes {
    pub namespace: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub default_image: Option<String>,
    pub image_pull_policy: Option<String>,
    pub preflight_image: Option<String>,
    pub setup_command: Option<String>,
    pub teardown_command: Option<String>,
    #[serde(default)]
    pub extra_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub extra_annotations: BTreeMap<String, String>,
    pub active_deadline_seconds: Option<u64>,
    pub ttl_seconds_after_finished: Option<u64>,
    pub workspace_size_limit: Option<String>,
    pub unschedulable_timeout: Option<String>,
    pub pod_template: Option<serde_norway::Value>,
    /// Resources of the preflight Job's container (a ResourceRequirements).
    pub preflight_resources: Option<serde_norway::Value>,
    /// Image the task pods copy `/agent` from (default: env
    /// `HANGAR_AGENT_IMAGE`, which the Helm chart sets to the worker's own).
    pub agent_image: Option<String>,
    /// Server URL as task pods reach it (default: `--server-url`).
    pub agent_server_url: Option<String>,
}

/// `backend.command`: each task handed to an operator's own dispatcher.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCommand {
    /// Shell command that starts a task; gets the JSON payload on stdin and
    /// prints the task's external id.
    pub dispatch_command: Option<String>,
    /// Shell command that stops a task (`HANGAR_EXTERNAL_ID`).
    pub cancel_command: Option<String>,
    /// Shell command that tells whether a task still runs: exit 0 running,
    /// exit 1 ended.
    pub status_command: Option<String>,
    /// Longest a dispatch may take (default 60s).
    pub dispatch_timeout: Option<String>,
    /// Interval between status checks (default 10s).
    pub status_interval: Option<String>,
    /// Where the worker records dispatched executions, to pick them up
    /// again after a restart (default: `--workspace-root`, else
    /// `$XDG_DATA_HOME/hangar/command-executions`).
    pub state_dir: Option<PathBuf>,
    /// Environment of the commands (not of the task).
    #[serde(default)]
    pub environment: Vec<FileEnvVar>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // An empty file is a valid "no settings" file.
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_norway::from_str(text).map_err(|source| ConfigError::ParseFile {
            path: path.to_owned(),
            location: source.location().map(|l| (l.line(), l.column())),
            source,
        })
    }

    /// The backend section named in the file, if any.
    pub(crate) fn backend_kind(&self, path: &Path) -> Result<Option<BackendKind>, ConfigError> {
        let Some(b) = &self.backend else {
            return Ok(None);
        };
        let mut present = Vec::new();
        if b.docker.is_some() {
            present.push(BackendKind::Docker);
        }
        if b.direct.is_some() {
            present.push(BackendKind::Direct);
        }
        if b.kubernetes.is_some() {
            present.push(BackendKind::Kubernetes);
        }
        if b.command.is_some() {
            present.push(BackendKind::Command);
        }
        match present.as_slice() {
            [one] => Ok(Some(*one)),
            [] => Err(invalid(format!(
                "invalid config file {}: `backend` must contain exactly one of docker, direct, kubernetes, command; it has none",
                path.display()
            ))),
            many => Err(invalid(format!(
                "invalid config file {}: `backend` must contain exactly one of docker, direct, kubernetes, command; it has {}",
                path.display(),
                many.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}
