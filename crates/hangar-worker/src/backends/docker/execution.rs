//! One execution's lifecycle: directories, container start, output pump,
//! wait, signals, the setup phase, and cleanup.

use super::client::docker_err;
use super::{
    CLEANUP_TIMEOUT, DockerConfig, LABEL_EXECUTION, LABEL_MANAGED, LABEL_RUN, LABEL_WORKER,
    SETUP_OUTPUT_LINES, SETUP_POLL, Shared,
};
use crate::backends::ctl_dir::CtlDir;
use crate::backends::output::{LineLog, OutputLabels, stderr_label};
use crate::backends::{BackendError, Execution, ExitStatus, TaskSpec, repos};
use async_trait::async_trait;
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, LogsOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use futures::StreamExt;
use hangar_protocol::worker::{FailureReason, NetworkPolicy};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub(super) struct DockerExecution {
    pub(super) shared: Arc<Shared>,
    pub(super) task_id: String,
    pub(super) execution_id: String,
    /// `None` for a recovered execution (only wait/cancel/cleanup follow).
    pub(super) spec: Option<TaskSpec>,
    /// `<workspace_root>/<execution>`: `workspace/` and `ctl/` live here.
    pub(super) dir: PathBuf,
    /// Container name.
    pub(super) name: String,
    pub(super) created_dir: bool,
    /// Container id once created.
    pub(super) container: Option<String>,
    /// The container was started (by `prepare` when there are setup commands).
    pub(super) started: bool,
    /// The agent ended while `prepare` watched the setup phase.
    pub(super) early_exit: Option<ExitStatus>,
    /// Output pump of the container.
    pub(super) readers: JoinSet<()>,
    /// Egress proxy and task network of an allowlist run.
    pub(super) egress: Option<super::egress::Egress>,
    /// Adopted a parked container: `prepare` only rewrites the start files.
    pub(super) reused: bool,
}

/// File in the control directory naming the execution the container serves
/// now (a reused container keeps the labels of its first execution).
pub(super) const EXECUTION_FILE: &str = "execution";

impl DockerExecution {
    /// The log stream ends with the container; do not wait for a kept one.
    async fn drain_readers(&mut self) {
        let drained = tokio::time::timeout(Duration::from_secs(2), async {
            while self.readers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.readers.abort_all();
        }
    }

    /// Records which execution the container serves (read by reconcile).
    /// Through the directory's descriptor: the container can replace the
    /// file with a symlink while it is parked.
    fn write_execution_file(&self) -> Result<(), BackendError> {
        let ctl = self.open_ctl()?;
        ctl.replace(EXECUTION_FILE, self.execution_id.as_bytes(), 0o644)
            .map_err(|e| {
                BackendError::with_source(
                    FailureReason::WorkspaceSetup,
                    format!(
                        "cannot write {}: {e}",
                        ctl.path().join(EXECUTION_FILE).display()
                    ),
                    e,
                )
            })
    }

    /// The control directory, opened without following symlinks.
    pub(super) fn open_ctl(&self) -> Result<CtlDir, BackendError> {
        let path = self.ctl();
        CtlDir::open(&path).map_err(|e| {
            BackendError::with_source(
                FailureReason::WorkspaceSetup,
                format!(
                    "cannot open the control directory {} (it must be a directory, not a symlink): {e}",
                    path.display()
                ),
                e,
            )
        })
    }

    pub(super) fn config(&self) -> &DockerConfig {
        &self.shared.config
    }

    pub(super) fn client(&self) -> &bollard::Docker {
        self.shared.client()
    }

    pub(super) fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    pub(super) fn ctl(&self) -> PathBuf {
        self.dir.join("ctl")
    }

    pub(super) fn spec(&self) -> Result<&TaskSpec, BackendError> {
        self.spec.as_ref().ok_or_else(|| {
            BackendError::new(
                FailureReason::Unknown,
                "a recovered execution cannot be prepared again",
            )
        })
    }

    pub(super) fn create_dirs(&mut self) -> Result<(), BackendError> {
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

    pub(super) fn container_id(&self) -> Result<&str, BackendError> {
        self.container.as_deref().ok_or_else(|| {
            BackendError::new(
                FailureReason::ContainerStart,
                "the container was never created",
            )
        })
    }

    pub(super) async fn start_container(&mut self) -> Result<(), BackendError> {
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
    pub(super) fn pump_logs(&mut self, id: &str) {
        // A reused container's earlier output was logged by its earlier execution.
        let since = if self.reused {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i32::try_from(d.as_secs()).unwrap_or(0))
                .unwrap_or(0)
        } else {
            0
        };
        let mut stream = self.client().logs(
            id,
            Some(LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                tail: "all".to_owned(),
                since,
                ..Default::default()
            }),
        );
        let labels = OutputLabels {
            task_id: self.task_id.clone(),
            execution_id: self.execution_id.clone(),
            source: "agent",
        };
        self.readers.spawn(async move {
            let mut stdout = LineLog::new(labels.clone());
            let mut stderr = LineLog::new(labels.with_source(stderr_label(labels.source)));
            while let Some(Ok(chunk)) = stream.next().await {
                match chunk {
                    bollard::container::LogOutput::StdErr { message } => stderr.feed(&message),
                    other => stdout.feed(&other.into_bytes()),
                }
            }
            stdout.finish();
            stderr.finish();
        });
    }

    /// Waits for the container to stop; maps OOM kills to `container_oom`.
    pub(super) async fn wait_container(&self) -> Result<ExitStatus, BackendError> {
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

    pub(super) async fn kill(&self, signal: &str) {
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
    pub(super) async fn terminate(&self, grace: Duration) -> Result<ExitStatus, BackendError> {
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
    pub(super) async fn tail_output(&self) -> String {
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
    pub(super) async fn watch_setup(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<(), BackendError> {
        let ctl = self.open_ctl()?;
        let mut exited = Box::pin(self.wait_container());
        loop {
            if ctl.has_file("setup-ok") {
                return Ok(());
            }
            tokio::select! {
                status = &mut exited => {
                    if ctl.has_file("setup-ok") {
                        // The agent already ran to its end; wait() reports it.
                        drop(exited);
                        self.early_exit = Some(status?);
                        return Ok(());
                    }
                    drop(exited);
                    let which = ctl.read("setup-failed", 64).unwrap_or_default();
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
        if self.reused {
            tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, container = %self.name, "reusing the kept container of this run");
            self.write_start_files(&spec, &[])?;
            self.write_execution_file()?;
            return if stop.is_cancelled() {
                Err(BackendError::cancelled())
            } else {
                Ok(())
            };
        }
        let image = Self::image(&spec, self.config());
        crate::metrics::step("image", &spec, self.ensure_image(&image, stop)).await?;
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
                    allow_internal: &cfg.egress_allow_internal,
                    server_url: &cfg.egress_server_url,
                    host_firewall: cfg.egress_host_firewall,
                },
            )
            .await?;
            self.egress = Some(egress);
        }
        let environment = spec.assignment.environment.clone().unwrap_or_default();
        if !environment.repos.is_empty() {
            let env = crate::backends::task_env(&spec, &self.config().env);
            repos::clone_all(&self.workspace(), &environment.repos, &env, stop, &spec).await?;
        }
        if stop.is_cancelled() {
            return Err(BackendError::cancelled());
        }
        let with_setup = !environment.setup_commands.is_empty();
        self.write_start_files(&spec, &environment.setup_commands)?;
        self.write_execution_file()?;
        let body = self.container_body(&spec, image.clone());
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
            let spec = self.spec()?.clone();
            crate::metrics::step("setup", &spec, self.watch_setup(stop)).await?;
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

    async fn park(&mut self) -> bool {
        // Allowlist runs own an egress proxy and network; they are not kept.
        if self.container.is_none() || self.spec.is_none() || self.egress.is_some() {
            return false;
        }
        // The container stopped with its agent; its filesystem stays.
        self.drain_readers().await;
        tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, container = %self.name, "keeping the container idle for a follow-up");
        true
    }

    fn adopt(&mut self, spec: TaskSpec) -> Result<(), BackendError> {
        if spec.task_id != self.task_id {
            return Err(BackendError::new(
                FailureReason::ContainerCreate,
                format!(
                    "a kept container of run {} cannot serve run {}",
                    self.task_id, spec.task_id
                ),
            ));
        }
        self.execution_id = spec.execution_id.clone();
        self.spec = Some(spec);
        self.started = false;
        self.early_exit = None;
        self.reused = true;
        Ok(())
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
        self.drain_readers().await;
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
        if self.created_dir && self.config().cleanup {
            crate::backends::spools::keep_and_log(
                &self.config().workspace_root,
                &self.workspace(),
                &self.task_id,
                &self.execution_id,
            );
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
