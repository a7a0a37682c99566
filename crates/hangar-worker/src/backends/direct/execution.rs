//! One execution of the direct backend: its workspace, environment,
//! containment scope and processes (agent and hooks), and its cleanup.

use super::containment::{Limits, Scope};
use super::process::{ProcessGroup, Spawned};
use super::sandbox::{self, Network, Sandbox};
use super::{DirectConfig, READER_DRAIN_TIMEOUT, Shared, TEARDOWN_TIMEOUT, state};
use crate::backends::output::{OutputLabels, pump_lines, stderr_label};
use crate::backends::{BackendError, Execution, ExitStatus, TaskSpec, repos};
use crate::config::SandboxKind;
use async_trait::async_trait;
use hangar_protocol::worker::FailureReason;
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(super) struct DirectExecution {
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
    /// An execution of `spec` not prepared yet.
    pub(super) fn new(
        shared: Arc<Shared>,
        network: Network,
        spec: TaskSpec,
        private_dir: PathBuf,
        cwd: PathBuf,
    ) -> Self {
        DirectExecution {
            shared,
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
        }
    }

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
        env.extend(crate::backends::prepared_task_env(
            &self.spec,
            &self.config().env,
        ));
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
        crate::backends::agent_args(
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
        let labels = OutputLabels {
            task_id: self.spec.task_id.clone(),
            execution_id: self.spec.execution_id.clone(),
            source,
        };
        if let Some(out) = child.stdout.take() {
            self.readers.spawn(pump_lines(out, labels.clone()));
        }
        if let Some(err) = child.stderr.take() {
            self.readers
                .spawn(pump_lines(err, labels.with_source(stderr_label(source))));
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

    /// Runs the configured setup command, then the environment's, in order;
    /// the first that fails fails the task as `setup_command`.
    async fn run_setup(&mut self, stop: &CancellationToken) -> Result<(), BackendError> {
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
            crate::metrics::step("setup", &spec, setup).await
        } else {
            setup.await
        }
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
        self.run_setup(stop).await?;
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
                crate::backends::spools::keep_and_log(
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
