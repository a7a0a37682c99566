//! The direct backend: each execution is a process group on the host, in its
//! own workspace directory, with a minimal environment.
//!
//! Guarantees (ARCHITECTURE.md, security model; TESTING.md S7, D8, D1, P1):
//! - the agent sees only `HOME`, `TMPDIR`, `PATH`, the assignment's
//!   `env_vars`, the configured env and `GIT_CONFIG_GLOBAL` — never the
//!   worker's API key;
//! - every process of an execution runs in a sandbox (`sandbox`: own PID,
//!   mount and, unless the network policy is `full`, network namespaces; only
//!   the workspace writable; never as root), unless the worker is configured
//!   with `sandbox: none`;
//! - every process of an execution is contained (`containment`): the
//!   leader's process group is signalled as a whole (SIGTERM, then SIGKILL
//!   after the grace), and everything it started, daemons included, dies
//!   with it, on cancel, on completion and when the worker dies;
//! - a restarted worker reaps the executions its previous life left
//!   (`state`);
//! - a session spool that may hold unacknowledged events is kept, never
//!   deleted with its workspace;
//! - only the execution's own workspace is ever removed;
//! - with `--idle-on-complete` a finished run's workspace is kept (parked)
//!   and a follow-up of the same run adopts it, skipping clone and setup;
//!   the teardown command runs once, when the kept workspace is cleaned up.

mod containment;
mod execution;
mod process;
pub(crate) mod sandbox;
mod state;

use super::factory::{self, BackendFactory};
use super::{Backend, BackendError, Execution, TaskSpec, is_safe_segment};
use crate::config::{BackendKind, SandboxKind, SandboxMount, WorkerConfig};
use crate::worker::WorkerError;
use async_trait::async_trait;
use containment::Containment;
use execution::DirectExecution;
use hangar_protocol::worker::FailureReason;
use sandbox::{Network, Sandbox};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Limit for the teardown command.
pub(super) const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long output readers may take to drain after the process group is gone.
pub(super) const READER_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Variables taken from the worker's own environment.
const HOST_ENV_ALLOWED: [&str; 3] = ["HOME", "TMPDIR", "PATH"];

/// Settings of the direct backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectConfig {
    /// Parent of the per-execution workspaces (created 0700 if missing).
    pub workspace_root: PathBuf,
    /// Run every agent in this existing directory instead (shared, never removed).
    pub target_dir: Option<PathBuf>,
    /// The binary launched as `<agent_path> agent run …`.
    pub agent_path: PathBuf,
    /// Passed to the agent as `--server-url`.
    pub server_url: String,
    /// `/bin/sh -c` before the agent, in the workspace.
    pub setup_command: Option<String>,
    /// `/bin/sh -c` after the agent, whatever the outcome.
    pub teardown_command: Option<String>,
    /// Extra environment for tasks; wins over the assignment's except for the run identity.
    pub env: Vec<(String, String)>,
    /// Remove the workspace after the task.
    pub cleanup: bool,
    /// Default `--idle-on-complete` for the agent.
    pub idle_on_complete: Option<String>,
    /// SIGTERM → SIGKILL grace for setup and teardown commands.
    pub kill_grace: Duration,
    /// How tasks are isolated from the host.
    pub sandbox: SandboxKind,
    /// Extra host paths shown in the sandbox.
    pub sandbox_mounts: Vec<SandboxMount>,
    /// Internal hosts the egress proxy of allowlist tasks may reach.
    pub egress_allow_internal: Vec<String>,
    /// Most processes of one execution.
    pub pids_limit: u64,
    /// Memory limit of one execution in MiB when the run has no instance
    /// shape; `None` = unlimited.
    pub memory_mb: Option<u64>,
}

/// Default of [`DirectConfig::pids_limit`].
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

impl BackendFactory for DirectConfig {
    const KIND: BackendKind = BackendKind::Direct;
    type Backend = Direct;

    fn from_worker(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let d = &config.direct;
        let workspace_root = match &d.workspace_root {
            Some(root) => root.clone(),
            None => crate::worker::default_workspace_root().ok_or(WorkerError::NoWorkspaceRoot)?,
        };
        Ok(DirectConfig {
            workspace_root,
            target_dir: d.target_dir.clone(),
            agent_path: factory::agent_path(config)?,
            server_url: config.server_url.clone(),
            setup_command: d.setup_command.clone(),
            teardown_command: d.teardown_command.clone(),
            env: config.env.clone(),
            cleanup: config.cleanup,
            idle_on_complete: config.idle_on_complete.clone(),
            kill_grace: config.kill_grace,
            sandbox: d.sandbox,
            sandbox_mounts: d.sandbox_mounts.clone(),
            egress_allow_internal: d.egress_allow_internal.clone(),
            pids_limit: d.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT),
            memory_mb: d.memory_mb,
        })
    }

    fn spool_root(&self) -> Option<PathBuf> {
        Some(self.workspace_root.clone())
    }

    fn build(self) -> Result<Direct, BackendError> {
        Direct::new(self)
    }
}

/// The direct backend.
#[derive(Debug, Clone)]
pub struct Direct {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: DirectConfig,
    /// `HOME`, `TMPDIR`, `PATH` of the worker, captured once.
    pub(super) host_env: Vec<(String, String)>,
    /// How this host contains task processes.
    pub(super) containment: Containment,
    /// The sandbox; `None` with `sandbox: none`.
    pub(super) sandbox: Option<Sandbox>,
}

impl Direct {
    /// Checks the configuration and creates the workspace root (mode 0700).
    pub fn new(config: DirectConfig) -> Result<Self, BackendError> {
        let setup = |msg: String| BackendError::new(FailureReason::WorkspaceSetup, msg);
        if let Some(dir) = &config.target_dir
            && !dir.is_dir()
        {
            return Err(setup(format!(
                "target dir {} does not exist or is not a directory",
                dir.display()
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.workspace_root)
            .map_err(|e| {
                BackendError::with_source(
                    FailureReason::WorkspaceSetup,
                    format!(
                        "cannot create workspace root {}: {e}; set --workspace-root to a writable directory",
                        config.workspace_root.display()
                    ),
                    e,
                )
            })?;
        if !config.agent_path.is_file() {
            return Err(BackendError::new(
                FailureReason::AgentInvocation,
                format!(
                    "agent binary {} does not exist; set --agent-path",
                    config.agent_path.display()
                ),
            ));
        }
        let host_env = HOST_ENV_ALLOWED
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
            .collect();
        let sandbox = match config.sandbox {
            SandboxKind::Bwrap => Some(
                Sandbox::detect(config.sandbox_mounts.clone())
                    .map_err(|msg| BackendError::new(FailureReason::WorkspaceSetup, msg))?,
            ),
            SandboxKind::None => None,
        };
        // With the sandbox the bubblewrap namespace replaces the backend's own.
        let containment = if sandbox.is_some() {
            Containment::detect_without_pid_namespace()
        } else {
            Containment::detect()
        };
        Ok(Direct {
            shared: Arc::new(Shared {
                config,
                host_env,
                containment,
                sandbox,
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &DirectConfig {
        &self.shared.config
    }
}

#[async_trait]
impl Backend for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }

    async fn start(&self) -> Result<(), BackendError> {
        let containment = &self.shared.containment;
        tracing::info!(
            containment = %containment.describe(),
            limits = %containment.describe_limits(),
            "direct backend: process containment"
        );
        match &self.shared.sandbox {
            Some(sandbox) => {
                tracing::info!(sandbox = %sandbox.describe(), "direct backend: task sandbox");
            }
            None => {
                tracing::warn!(
                    "direct backend: sandbox: none — tasks run as this worker's user and see \
                     everything it can (its files, its processes, the network); every run's \
                     details say so"
                );
                if let Some(weakness) = containment.weaknesses() {
                    tracing::warn!("direct backend: {weakness}");
                }
            }
        }
        let root = self.shared.config.workspace_root.clone();
        let cleanup = self.shared.config.cleanup;
        let reaped = tokio::task::spawn_blocking(move || state::reap(&root, cleanup))
            .await
            .unwrap_or_default();
        if !reaped.is_empty() {
            tracing::info!(
                executions = reaped.len(),
                "reaped the executions a previous worker left on this workspace root"
            );
        }
        Ok(())
    }

    fn execution(&self, spec: TaskSpec) -> Result<Box<dyn Execution>, BackendError> {
        if !is_safe_segment(&spec.execution_id) || spec.execution_id.starts_with('.') {
            return Err(BackendError::new(
                FailureReason::WorkspaceSetup,
                format!(
                    "execution id {:?} cannot be used as a directory name (allowed: A-Z a-z 0-9 . _ -)",
                    spec.execution_id
                ),
            ));
        }
        let private_dir = self.shared.config.workspace_root.join(&spec.execution_id);
        let cwd = self
            .shared
            .config
            .target_dir
            .clone()
            .unwrap_or_else(|| private_dir.clone());
        let network = self.network(&spec)?;
        Ok(Box::new(DirectExecution::new(
            self.shared.clone(),
            network,
            spec,
            private_dir,
            cwd,
        )))
    }
}

impl Direct {
    /// The network of `spec`'s execution: its environment's policy, enforced
    /// by the sandbox. Without the sandbox only `full` can be honoured, so
    /// anything else fails the run rather than run unenforced.
    fn network(&self, spec: &TaskSpec) -> Result<Network, BackendError> {
        let policy = spec
            .assignment
            .environment
            .as_ref()
            .map(|e| e.network_policy.clone())
            .unwrap_or_default();
        let fail = |msg: String| BackendError::new(FailureReason::WorkspaceSetup, msg);
        if self.shared.sandbox.is_none() {
            return match policy {
                hangar_protocol::worker::NetworkPolicy::Full => Ok(Network::Host),
                _ => Err(fail(
                    "this environment restricts the network, which the direct backend enforces \
                     only in its sandbox, and this worker runs with `sandbox: none`; run it with \
                     the sandbox (drop --no-sandbox) or use the docker backend"
                        .to_owned(),
                )),
            };
        }
        let network = Network::for_policy(
            &policy,
            &self.shared.config.server_url,
            &self.shared.config.egress_allow_internal,
        )
        .map_err(fail)?;
        Ok(network)
    }
}
