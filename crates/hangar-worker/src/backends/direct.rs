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
pub(crate) mod sandbox;
mod state;

use super::{Backend, BackendError, Execution, ExitStatus, TaskSpec, is_safe_segment, repos};
use crate::config::{SandboxKind, SandboxMount};
use async_trait::async_trait;
use containment::{Containment, Limits, Scope};
use hangar_protocol::worker::FailureReason;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use sandbox::{Network, Sandbox};
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Longest agent output line logged; the rest of a longer line is dropped.
const MAX_LOG_LINE: usize = 16 * 1024;
/// Limit for the teardown command.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long output readers may take to drain after the process group is gone.
const READER_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
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

/// The direct backend.
#[derive(Debug, Clone)]
pub struct Direct {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: DirectConfig,
    /// `HOME`, `TMPDIR`, `PATH` of the worker, captured once.
    host_env: Vec<(String, String)>,
    /// How this host contains task processes.
    containment: Containment,
    /// The sandbox; `None` with `sandbox: none`.
    sandbox: Option<Sandbox>,
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
        Ok(Box::new(DirectExecution {
            shared: self.shared.clone(),
            network,
            record_id: spec.execution_id.clone(),
            spec,
            private_dir,
            cwd,
            created: false,
            reused: false,
            scope: None,
            agent: None,
            readers: JoinSet::new(),
        }))
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

/// A process group; dropping it SIGKILLs whatever is left in it, so even an
/// aborted task leaves nothing running.
#[derive(Debug)]
struct ProcessGroup {
    /// The spawned process's own group (bubblewrap's, when sandboxed).
    pgid: Pid,
    /// The sandbox's session group: its init and every task process.
    sandbox: Option<Pid>,
    armed: bool,
    /// The execution's containment: its cgroup is killed with the group.
    scope: Option<Scope>,
}

impl ProcessGroup {
    /// Sends `sig` to every process of the group (of a sandbox: to the task
    /// processes; its init ignores polite signals, bubblewrap outside gets
    /// only SIGKILL); false when none is left.
    fn signal(&self, sig: Signal) -> bool {
        let Some(sandbox) = self.sandbox else {
            return Self::signal_group(self.pgid, sig);
        };
        let inside = Self::signal_group(sandbox, sig);
        if sig == Signal::SIGKILL {
            return Self::signal_group(self.pgid, sig) || inside;
        }
        inside
    }

    fn signal_group(pgid: Pid, sig: Signal) -> bool {
        match killpg(pgid, sig) {
            Ok(()) => true,
            Err(Errno::ESRCH) => false,
            Err(e) => {
                tracing::warn!(pgid = pgid.as_raw(), signal = %sig, error = %e, "cannot signal process group");
                false
            }
        }
    }

    /// SIGKILLs stragglers (the group, and the execution's cgroup: nothing
    /// else of the execution runs while no leader does) and stops guarding.
    fn kill_and_disarm(&mut self) {
        if self.signal(Signal::SIGKILL) {
            tracing::debug!(
                pgid = self.pgid.as_raw(),
                "killed processes left in the task's group"
            );
        }
        if let Some(scope) = &self.scope {
            scope.kill();
        }
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
            if let Some(scope) = &self.scope {
                scope.kill();
            }
        }
    }
}

/// A spawned child leading its own process group.
struct Spawned {
    child: Child,
    group: ProcessGroup,
    /// The sandbox's network listeners, as long as the process lives.
    _listeners: Option<sandbox::Listeners>,
}

impl Spawned {
    /// SIGTERM to the group, SIGKILL after `grace`; returns how the leader ended.
    async fn terminate(&mut self, grace: Duration) -> std::io::Result<std::process::ExitStatus> {
        self.group.signal(Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_elapsed) => {
                tracing::info!(
                    pgid = self.group.pgid.as_raw(),
                    ?grace,
                    "process group ignored SIGTERM; sending SIGKILL"
                );
                self.group.signal(Signal::SIGKILL);
                self.child.wait().await
            }
        };
        self.group.kill_and_disarm();
        status
    }
}

/// Labels attached to captured output.
#[derive(Debug, Clone)]
struct LogCtx {
    task_id: String,
    execution_id: String,
    source: &'static str,
}

struct DirectExecution {
    shared: Arc<Shared>,
    /// The network the sandbox gives every process of this execution.
    network: Network,
    spec: TaskSpec,
    /// `<workspace_root>/<execution_id>`: the workspace, or (with a target dir)
    /// the execution's private state such as its git config.
    private_dir: PathBuf,
    /// Where the agent runs.
    cwd: PathBuf,
    created: bool,
    /// Adopted a parked sandbox: `prepare` skips clone and setup.
    reused: bool,
    /// Containment of every process this execution starts; made in `prepare`.
    scope: Option<Scope>,
    /// Name of the execution's record (the first execution's id when a kept
    /// workspace was adopted).
    record_id: String,
    agent: Option<Spawned>,
    /// Output pumps of every process this execution started.
    readers: JoinSet<()>,
}

impl DirectExecution {
    fn config(&self) -> &DirectConfig {
        &self.shared.config
    }

    /// Kills what is left of the agent's process group and drains its output.
    async fn stop_processes(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            // Normally already done by wait/cancel; covers an abandoned wait.
            if agent.group.armed {
                let _ = agent.terminate(Duration::ZERO).await;
            }
        }
        self.drain_readers().await;
    }

    /// Output pumps end once every writer of the pipes is dead; a process that
    /// escaped the group (setsid) could hold them open, so bound the wait.
    async fn drain_readers(&mut self) {
        let drained = tokio::time::timeout(READER_DRAIN_TIMEOUT, async {
            while self.readers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, "task output still open after its process group was killed (a process left the group?)");
            self.readers.abort_all();
        }
    }

    /// The task's complete environment.
    fn env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self.shared.host_env.iter().cloned().collect();
        if self.shared.sandbox.is_some() {
            // The host's home and temporary directory are not in the sandbox.
            env.insert(
                "HOME".to_owned(),
                self.private_dir.to_string_lossy().into_owned(),
            );
            env.insert("TMPDIR".to_owned(), "/tmp".to_owned());
        }
        if let Network::Isolated(net) = &self.network {
            env.extend(net.env.iter().cloned());
        }
        env.extend(super::prepared_task_env(&self.spec, &self.config().env));
        env.insert(
            "GIT_CONFIG_GLOBAL".to_owned(),
            self.private_dir
                .join(".gitconfig")
                .to_string_lossy()
                .into_owned(),
        );
        env
    }

    /// The execution's resource limits: the run's instance shape, else the
    /// configured ones.
    fn limits(&self) -> Limits {
        let shape = self
            .spec
            .assignment
            .instance_shape
            .as_ref()
            .and_then(|s| s.memory_gb)
            .filter(|gb| *gb > 0.0)
            .map(|gb| (gb * 1024.0 * 1024.0 * 1024.0) as u64);
        Limits {
            pids: Some(self.config().pids_limit).filter(|n| *n > 0),
            memory: shape.or(self.config().memory_mb.map(|mb| mb * 1024 * 1024)),
        }
    }

    /// Makes the execution's containment scope and records the execution,
    /// so a worker that dies before cleaning it up is reaped by the next one.
    fn contain(&mut self) -> Result<(), BackendError> {
        let scope = self
            .shared
            .containment
            .scope(&self.spec.execution_id, self.limits())
            .map_err(|e| {
                BackendError::with_source(
                    FailureReason::WorkspaceSetup,
                    format!("cannot create the execution's cgroup: {e}"),
                    e,
                )
            })?;
        let record = state::Record {
            task_id: self.spec.task_id.clone(),
            execution_id: self.spec.execution_id.clone(),
            private_dir: self.private_dir.clone(),
            cwd: self.cwd.clone(),
            cgroup: scope.cgroup().map(Path::to_path_buf),
        };
        self.scope = Some(scope);
        state::save(&self.config().workspace_root, &record).map_err(|e| {
            BackendError::with_source(
                FailureReason::WorkspaceSetup,
                format!(
                    "cannot record the execution under {}: {e}",
                    self.config().workspace_root.display()
                ),
                e,
            )
        })
    }

    fn agent_args(&self) -> Vec<String> {
        let server_url = match &self.network {
            Network::Isolated(net) => net.agent_server_url.as_str(),
            Network::Host => self.config().server_url.as_str(),
        };
        super::agent_args(
            &self.spec,
            server_url,
            self.config().idle_on_complete.as_deref(),
        )
    }

    /// Spawns `program args` in the workspace, in a new process group (in
    /// the sandbox, when there is one), with `env` and captured output.
    async fn spawn(
        &mut self,
        program: &Path,
        args: &[String],
        env: BTreeMap<String, String>,
        source: &'static str,
    ) -> std::io::Result<Spawned> {
        let scope = self
            .scope
            .clone()
            .ok_or_else(|| std::io::Error::other("the execution's containment was not prepared"))?;
        let prepared = match &self.shared.sandbox {
            Some(sandbox) => {
                let mut writable = vec![self.private_dir.as_path()];
                if self.cwd != self.private_dir {
                    writable.push(self.cwd.as_path());
                }
                Some(sandbox.prepare(&sandbox::Launch {
                    program,
                    args,
                    env: &env,
                    cwd: &self.cwd,
                    writable,
                    readable: vec![self.config().agent_path.as_path()],
                    network: &self.network,
                })?)
            }
            None => None,
        };
        let mut cmd = match &prepared {
            Some(p) => Command::new(&p.program),
            None => Command::new(program),
        };
        scope.apply(&mut cmd);
        match &prepared {
            Some(p) => p.apply(&mut cmd),
            None => {
                cmd.args(args).env_clear().envs(env);
            }
        }
        cmd.current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // Backstop if the future is dropped; the group guard kills the rest.
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
        let mut group = ProcessGroup {
            pgid: Pid::from_raw(pid as i32),
            sandbox: None,
            armed: true,
            scope: Some(scope),
        };
        let ctx = LogCtx {
            task_id: self.spec.task_id.clone(),
            execution_id: self.spec.execution_id.clone(),
            source,
        };
        if let Some(out) = child.stdout.take() {
            self.readers.spawn(pump_lines(out, ctx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            self.readers.spawn(pump_lines(
                err,
                LogCtx {
                    source: stderr_label(source),
                    ..ctx
                },
            ));
        }
        let listeners = match prepared {
            Some(p) => {
                // On error the group guard kills bubblewrap and its sandbox.
                let started = p.started().await?;
                group.sandbox = Some(Pid::from_raw(started.group));
                started.listeners
            }
            None => None,
        };
        Ok(Spawned {
            child,
            group,
            _listeners: listeners,
        })
    }

    /// Runs a `/bin/sh -c` hook; `None` when `stop` fired or `limit` passed first.
    async fn run_hook(
        &mut self,
        command: &str,
        source: &'static str,
        stop: Option<&CancellationToken>,
        limit: Option<Duration>,
    ) -> std::io::Result<Option<ExitStatus>> {
        let args = vec!["-c".to_owned(), command.to_owned()];
        // Hooks are the environment's commands, not the agent: no run token.
        let mut env = self.env();
        env.remove(hangar_protocol::ENV_RUN_TOKEN);
        let mut hook = self.spawn(Path::new("/bin/sh"), &args, env, source).await?;
        let never = CancellationToken::new();
        let stop = stop.unwrap_or(&never);
        let grace = self.config().kill_grace;
        tokio::select! {
            status = hook.child.wait() => {
                hook.group.kill_and_disarm();
                Ok(Some(status?.into()))
            }
            _ = stop.cancelled() => {
                hook.terminate(grace).await?;
                Ok(None)
            }
            _ = sleep_or_forever(limit) => {
                tracing::warn!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, hook = source, ?limit, "hook timed out; stopping it");
                hook.terminate(grace).await?;
                Ok(None)
            }
        }
    }
}

async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

fn stderr_label(source: &'static str) -> &'static str {
    match source {
        "agent" => "agent-stderr",
        "setup" => "setup-stderr",
        "teardown" => "teardown-stderr",
        _ => "stderr",
    }
}

#[async_trait]
impl Execution for DirectExecution {
    fn sandbox_relaxation(&self) -> Option<&'static str> {
        self.shared
            .sandbox
            .is_none()
            .then_some(SandboxKind::None.as_str())
    }

    async fn prepare(&mut self, stop: &CancellationToken) -> Result<(), BackendError> {
        if self.reused {
            tracing::info!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, workspace = %self.cwd.display(), "reusing the kept workspace of this run");
            return if stop.is_cancelled() {
                Err(BackendError::cancelled())
            } else {
                Ok(())
            };
        }
        let setup_err = |msg: String, e: std::io::Error| {
            BackendError::with_source(FailureReason::WorkspaceSetup, msg, e)
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.private_dir)
            .map_err(|e| {
                setup_err(
                    format!(
                        "cannot create workspace {}: {e}",
                        self.private_dir.display()
                    ),
                    e,
                )
            })?;
        self.created = true;
        self.contain()?;
        // The umask cannot widen 0700, but be explicit about it.
        std::fs::set_permissions(&self.private_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| {
                setup_err(
                    format!(
                        "cannot restrict workspace {}: {e}",
                        self.private_dir.display()
                    ),
                    e,
                )
            })?;
        tracing::debug!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, workspace = %self.cwd.display(), "workspace ready");

        if let Some(environment) = self.spec.assignment.environment.clone() {
            let env = self.env();
            repos::clone_all(&self.cwd, &environment.repos, &env, stop, &self.spec).await?;
        }
        if let Some((uid, gid)) = self.shared.sandbox.as_ref().and_then(Sandbox::task_user) {
            // The task user owns its workspace (and what the worker cloned into it).
            let dir = self.private_dir.clone();
            tokio::task::spawn_blocking(move || sandbox::chown_tree(&dir, uid, gid))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| {
                    setup_err(
                        format!(
                            "cannot give workspace {} to the task user {uid}:{gid}: {e}",
                            self.private_dir.display()
                        ),
                        e,
                    )
                })?;
        }
        let mut setup_commands: Vec<String> = self.config().setup_command.iter().cloned().collect();
        if let Some(environment) = &self.spec.assignment.environment {
            setup_commands.extend(environment.setup_commands.iter().cloned());
        }
        let spec = self.spec.clone();
        let timed = !setup_commands.is_empty();
        let setup = async {
            for setup in setup_commands {
                let status = self
                    .run_hook(&setup, "setup", Some(stop), None)
                    .await
                    .map_err(|e| {
                        BackendError::with_source(
                            FailureReason::SetupCommand,
                            format!("cannot run the setup command: {e}"),
                            e,
                        )
                    })?;
                match status {
                    None => return Err(BackendError::cancelled()),
                    Some(s) if !s.success() => {
                        return Err(BackendError::new(
                            FailureReason::SetupCommand,
                            format!("the setup command `{setup}` failed with {s}"),
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ok::<(), BackendError>(())
        };
        if timed {
            crate::metrics::step("setup", &spec, setup).await?;
        } else {
            setup.await?;
        }
        if stop.is_cancelled() {
            return Err(BackendError::cancelled());
        }
        Ok(())
    }

    async fn launch(&mut self) -> Result<(), BackendError> {
        let program = self.config().agent_path.clone();
        let args = self.agent_args();
        let env = self.env();
        let spawned = self
            .spawn(&program, &args, env, "agent")
            .await
            .map_err(|e| {
                BackendError::with_source(
                    FailureReason::AgentInvocation,
                    format!("cannot start the agent {}: {e}", program.display()),
                    e,
                )
            })?;
        tracing::info!(
            task_id = %self.spec.task_id,
            execution_id = %self.spec.execution_id,
            pid = spawned.group.pgid.as_raw(),
            workspace = %self.cwd.display(),
            "agent started"
        );
        self.agent = Some(spawned);
        Ok(())
    }

    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        let Some(agent) = self.agent.as_mut() else {
            return Err(BackendError::new(
                FailureReason::AgentInvocation,
                "the agent was never started",
            ));
        };
        let status = agent.child.wait().await.map_err(|e| {
            BackendError::with_source(
                FailureReason::AgentInvocation,
                format!("cannot wait for the agent: {e}"),
                e,
            )
        })?;
        // The agent is gone; whatever it left in its group goes with it.
        agent.group.kill_and_disarm();
        if let Some(scope) = &self.scope
            && scope.oom_killed()
        {
            return Err(BackendError::new(
                FailureReason::ContainerOom,
                format!(
                    "the task ran out of memory (limit {} MiB) and the kernel killed it; \
                     give the run a larger instance shape or raise the worker's memory_mb",
                    self.limits().memory.unwrap_or(0) / (1024 * 1024)
                ),
            ));
        }
        Ok(status.into())
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        let Some(agent) = self.agent.as_mut() else {
            return Err(BackendError::cancelled());
        };
        let status = agent.terminate(grace).await.map_err(|e| {
            BackendError::with_source(
                FailureReason::AgentInvocation,
                format!("cannot stop the agent: {e}"),
                e,
            )
        })?;
        Ok(status.into())
    }

    async fn park(&mut self) -> bool {
        if !self.created {
            return false;
        }
        self.stop_processes().await;
        tracing::info!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, workspace = %self.cwd.display(), "keeping the workspace idle for a follow-up");
        true
    }

    fn adopt(&mut self, spec: TaskSpec) -> Result<(), BackendError> {
        if spec.task_id != self.spec.task_id {
            return Err(BackendError::new(
                FailureReason::WorkspaceSetup,
                format!(
                    "a kept workspace of run {} cannot serve run {}",
                    self.spec.task_id, spec.task_id
                ),
            ));
        }
        self.spec = spec;
        self.reused = true;
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        self.stop_processes().await;
        let mut result = Ok(());
        if self.created
            && let Some(teardown) = self.config().teardown_command.clone()
        {
            match self
                .run_hook(&teardown, "teardown", None, Some(TEARDOWN_TIMEOUT))
                .await
            {
                Ok(Some(s)) if s.success() => {}
                Ok(Some(s)) => {
                    tracing::warn!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, status = %s, "teardown command failed");
                    result = Err(BackendError::new(
                        FailureReason::TeardownCommand,
                        format!("the teardown command failed with {s}"),
                    ));
                }
                Ok(None) => {
                    result = Err(BackendError::new(
                        FailureReason::TeardownCommand,
                        "the teardown command timed out",
                    ));
                }
                Err(e) => {
                    tracing::warn!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, error = %e, "cannot run the teardown command");
                    result = Err(BackendError::with_source(
                        FailureReason::TeardownCommand,
                        format!("cannot run the teardown command: {e}"),
                        e,
                    ));
                }
            }
        }
        self.drain_readers().await;

        // The last handle of the scope: its cgroup is killed and removed.
        self.scope = None;
        if self.created {
            if self.config().cleanup {
                super::spools::keep_and_log(
                    &self.config().workspace_root,
                    &self.cwd,
                    &self.spec.task_id,
                    &self.spec.execution_id,
                );
                if let Err(e) = tokio::fs::remove_dir_all(&self.private_dir).await {
                    tracing::warn!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, workspace = %self.private_dir.display(), error = %e, "cannot remove workspace");
                    if result.is_ok() {
                        result = Err(BackendError::with_source(
                            FailureReason::Cleanup,
                            format!("cannot remove workspace: {e}"),
                            e,
                        ));
                    }
                }
            } else {
                tracing::info!(task_id = %self.spec.task_id, execution_id = %self.spec.execution_id, workspace = %self.private_dir.display(), "cleanup disabled; workspace kept");
            }
            state::forget(&self.config().workspace_root, &self.record_id);
        }
        result
    }
}

/// Forwards a stream line by line into the worker's log (debug level; output
/// may contain secrets, so never at info).
async fn pump_lines<R: AsyncRead + Unpin>(reader: R, ctx: LogCtx) {
    let mut reader = BufReader::new(reader);
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    let emit = |line: &mut Vec<u8>, truncated: &mut bool| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        tracing::debug!(
            task_id = %ctx.task_id,
            execution_id = %ctx.execution_id,
            source = ctx.source,
            truncated = *truncated,
            "{text}"
        );
        line.clear();
        *truncated = false;
    };
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            if !line.is_empty() {
                emit(&mut line, &mut truncated);
            }
            break;
        }
        let (chunk, consumed, complete) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(consumed);
        if complete {
            emit(&mut line, &mut truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_segments() {
        assert!(is_safe_segment("0193a7b2-5c1e-7d3e-9f00-123456789abc"));
        assert!(is_safe_segment("exec_1.a"));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a\\b",
            "a b",
            "a\0b",
            &"x".repeat(201),
        ] {
            assert!(!is_safe_segment(bad), "{bad:?}");
        }
    }

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Code(3).code(), 3);
        assert_eq!(ExitStatus::Signal(9).code(), 137);
        assert!(ExitStatus::Code(0).success());
        assert!(!ExitStatus::Signal(15).success());
    }
}
