//! The command backend: each task is handed to the operator's own
//! dispatcher (a batch system, an internal scheduler, `ssh`, `docker run` on
//! another host), which starts `hangar agent run` there.
//!
//! ```text
//! launch ─► dispatch_command (JSON payload on stdin; prints an external id)
//! wait   ─► every status_interval: the run's state through the server (the
//!           agent reports its outcome on its own session), and
//!           status_command (exit 0 running, 1 ended) when configured
//! cancel ─► cancel_command (HANGAR_EXTERNAL_ID)
//! ```
//!
//! Unlike the Oz worker, the dispatched task keeps its slot and its lease
//! while it runs: the worker renews the lease as long as the task is alive,
//! reports the execution's end itself (so a task that dies without a word
//! still ends its run), and records each dispatched execution on disk so a
//! restarted worker picks it up again ([`Backend::recover`]). The payload
//! carries the run-scoped token and the task's secrets, marked as such; the
//! commands' own environment has neither, nor the worker's API key.

mod payload;
mod state;

pub use payload::{DispatchPayload, PAYLOAD_VERSION};

use super::factory::{self, BackendFactory};
use super::{Backend, BackendError, Execution, ExitStatus, Recovered, TaskSpec};
use crate::config::{BackendKind, WorkerConfig};
use crate::worker::WorkerError;
use hangar_protocol::RunState;
use hangar_protocol::redact::Redactor;
use hangar_protocol::worker::FailureReason;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command as Process;

/// How many status checks in a row may report the task ended before its
/// agent's outcome reached the server, before the worker ends the run.
const ENDED_CHECKS: u32 = 3;
/// Most output of a failed command kept in a failure message.
const MAX_OUTPUT: usize = 2048;

/// Everything the command backend needs.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// This worker's id (in the payload).
    pub worker_id: String,
    /// The server URL the remote agent reports to.
    pub server_url: String,
    /// Starts a task.
    pub dispatch_command: String,
    /// Stops a task.
    pub cancel_command: Option<String>,
    /// Whether a task still runs.
    pub status_command: Option<String>,
    /// Longest any of the commands may take.
    pub dispatch_timeout: Duration,
    /// Interval between checks of a dispatched task.
    pub status_interval: Duration,
    /// Where dispatched executions are recorded.
    pub state_dir: PathBuf,
    /// The commands' environment (backend.command.environment and `-e`).
    pub env: Vec<(String, String)>,
    /// `--idle-on-complete`, passed on to the agent.
    pub idle_on_complete: Option<String>,
}

impl BackendFactory for CommandConfig {
    const KIND: BackendKind = BackendKind::Command;
    type Backend = Command;

    fn from_worker(config: &WorkerConfig) -> Result<Self, WorkerError> {
        Self::resolve(config).map_err(factory::backend_error::<Self>)
    }

    fn build(self) -> Result<Command, BackendError> {
        Command::new(self)
    }
}

impl CommandConfig {
    /// The command backend's part of a worker config.
    fn resolve(config: &crate::WorkerConfig) -> Result<Self, BackendError> {
        let c = &config.command;
        let state_dir = match &c.state_dir {
            Some(d) => d.clone(),
            None => dirs::data_dir()
                .map(|d| d.join("hangar").join("command-executions"))
                .ok_or_else(|| {
                    BackendError::new(
                        FailureReason::WorkspaceSetup,
                        "no data directory ($XDG_DATA_HOME and $HOME are unset); set \
                         backend.command.state_dir or --workspace-root",
                    )
                })?,
        };
        Ok(CommandConfig {
            worker_id: config.worker_id.to_string(),
            server_url: config.server_url.clone(),
            dispatch_command: c.dispatch_command.clone().unwrap_or_default(),
            cancel_command: c.cancel_command.clone(),
            status_command: c.status_command.clone(),
            dispatch_timeout: c.dispatch_timeout,
            status_interval: c.status_interval,
            state_dir,
            env: config.env.clone(),
            idle_on_complete: config.idle_on_complete.clone(),
        })
    }
}

/// The command backend.
#[derive(Debug)]
pub struct Command {
    config: Arc<CommandConfig>,
}

impl Command {
    /// A backend over `config`; creates its state directory.
    pub fn new(config: CommandConfig) -> Result<Self, BackendError> {
        state::prepare_dir(&config.state_dir).map_err(|e| {
            BackendError::with_source(
                FailureReason::WorkspaceSetup,
                format!(
                    "cannot create the command backend's state directory {}: {e}",
                    config.state_dir.display()
                ),
                e,
            )
        })?;
        Ok(Command {
            config: Arc::new(config),
        })
    }
}

#[async_trait::async_trait]
impl Backend for Command {
    fn name(&self) -> &'static str {
        "command"
    }

    fn execution(&self, spec: TaskSpec) -> Result<Box<dyn Execution>, BackendError> {
        Ok(Box::new(CommandExecution::new(self.config.clone(), spec)))
    }

    async fn recover(&self) -> Result<Vec<Recovered>, BackendError> {
        let records = state::load_all(&self.config.state_dir);
        let mut recovered = Vec::new();
        for record in records {
            tracing::info!(task_id = %record.task_id, execution_id = %record.execution_id, external_id = %record.external_id, "picking up a dispatched task after a restart");
            recovered.push(Recovered {
                task_id: record.task_id.clone(),
                execution_id: record.execution_id.clone(),
                execution: Box::new(CommandExecution::recovered(self.config.clone(), record)),
            });
        }
        Ok(recovered)
    }
}

/// One dispatched task.
struct CommandExecution {
    config: Arc<CommandConfig>,
    record: state::Record,
    /// The payload, until dispatched.
    payload: Option<DispatchPayload>,
    redactor: Redactor,
    /// Reads the run with its token (made once, reused by every check).
    client: Option<hangar_client::Client>,
}

impl CommandExecution {
    fn new(config: Arc<CommandConfig>, spec: TaskSpec) -> Self {
        let env = super::task_env(&spec, &[]);
        let redactor = super::repos::task_redactor(&spec, &env);
        let args = super::agent_args(
            &spec,
            &config.server_url,
            config.idle_on_complete.as_deref(),
        );
        let payload = DispatchPayload::new(&config, &spec, args, env, redactor.values());
        let record = state::Record {
            task_id: spec.task_id.clone(),
            execution_id: spec.execution_id.clone(),
            external_id: String::new(),
            run_token: payload.run_token().to_owned(),
            server_url: config.server_url.clone(),
        };
        CommandExecution {
            client: run_client(&record),
            record,
            config,
            payload: Some(payload),
            redactor,
        }
    }

    fn recovered(config: Arc<CommandConfig>, record: state::Record) -> Self {
        let redactor = Redactor::new([record.run_token.clone()]);
        CommandExecution {
            client: run_client(&record),
            config,
            record,
            payload: None,
            redactor,
        }
    }

    /// The commands' environment: `PATH` and `HOME` of the worker, the
    /// configured variables, then the task's identity (which they cannot
    /// override); never the worker's key nor the task's secrets.
    fn command_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = ["PATH", "HOME", "LANG", "TMPDIR"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
            .collect();
        env.extend(self.config.env.iter().cloned());
        let r = &self.record;
        for (names, value) in [
            (["HANGAR_RUN_ID", "OZ_RUN_ID"], r.task_id.as_str()),
            (
                ["HANGAR_EXECUTION_ID", "OZ_EXECUTION_ID"],
                r.execution_id.as_str(),
            ),
            (["HANGAR_WORKER_BACKEND", "OZ_WORKER_BACKEND"], "command"),
            (
                ["HANGAR_SERVER_URL", "OZ_SERVER_ROOT_URL"],
                r.server_url.as_str(),
            ),
            (
                ["HANGAR_WORKER_ID", "HANGAR_WORKER_ID"],
                &self.config.worker_id,
            ),
            (
                ["HANGAR_EXTERNAL_ID", "HANGAR_EXTERNAL_ID"],
                r.external_id.as_str(),
            ),
        ] {
            for name in names {
                env.retain(|(k, _)| k != name);
                env.push((name.to_owned(), value.to_owned()));
            }
        }
        env
    }

    /// Runs `command` with `stdin`, within the dispatch timeout.
    async fn run(
        &self,
        which: &str,
        command: &str,
        stdin: Option<Vec<u8>>,
    ) -> Result<CommandOutput, CommandError> {
        let mut child = Process::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env_clear()
            .envs(self.command_env())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CommandError::Spawn(format!("cannot run the {which}: {e}")))?;
        let pgid = child.id();
        if let (Some(bytes), Some(mut input)) = (stdin, child.stdin.take()) {
            // A command that does not read its input is not an error.
            let _ = input.write_all(&bytes).await;
        }
        match tokio::time::timeout(self.config.dispatch_timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(CommandOutput {
                status: out.status.into(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: self.tail(&out.stderr),
            }),
            Ok(Err(e)) => Err(CommandError::Spawn(format!("the {which} failed: {e}"))),
            Err(_) => {
                if let Some(pid) = pgid {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(CommandError::Timeout)
            }
        }
    }

    /// The end of `bytes`, masked.
    fn tail(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        let mut start = text.len().saturating_sub(MAX_OUTPUT);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let mut out = text[start..].to_owned();
        self.redactor.redact_in_place(&mut out);
        out
    }

    /// Whether the run reached a terminal state, through the server.
    async fn run_state(&self) -> Option<RunState> {
        match self
            .client
            .as_ref()?
            .get_json::<hangar_protocol::RunItem>(&format!(
                "api/v1/agent/runs/{}",
                self.record.task_id
            ))
            .await
        {
            Ok(run) => Some(run.state),
            // The token dies with the execution: the server ended it.
            Err(e) if matches!(e.status(), Some(401 | 403 | 404)) => Some(RunState::Error),
            Err(e) => {
                tracing::debug!(task_id = %self.record.task_id, error = %e, "cannot read the run's state; retrying");
                None
            }
        }
    }

    /// `Some(true)` while `status_command` says the task runs, `Some(false)`
    /// once it says it ended; `None` without one or when it cannot tell.
    async fn alive(&self) -> Option<bool> {
        let command = self.config.status_command.as_deref()?;
        match self.run("status_command", command, None).await {
            Ok(out) if out.status == ExitStatus::Code(0) => Some(true),
            Ok(out) if out.status == ExitStatus::Code(1) => Some(false),
            Ok(out) => {
                tracing::warn!(task_id = %self.record.task_id, external_id = %self.record.external_id, status = %out.status, stderr = %out.stderr, "status_command answered neither 0 (running) nor 1 (ended)");
                None
            }
            Err(e) => {
                tracing::warn!(task_id = %self.record.task_id, external_id = %self.record.external_id, error = %e, "status_command failed");
                None
            }
        }
    }
}

/// A client of the server with the execution's run token.
fn run_client(record: &state::Record) -> Option<hangar_client::Client> {
    hangar_client::Client::new(&record.server_url, record.run_token.clone()).ok()
}

struct CommandOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("{0}")]
    Spawn(String),
    #[error("timed out")]
    Timeout,
}

/// The exit status a run's final state stands for.
fn status_of(state: RunState) -> ExitStatus {
    match state {
        RunState::Succeeded => ExitStatus::Code(0),
        RunState::Cancelled => ExitStatus::Signal(15),
        _ => ExitStatus::Code(1),
    }
}

#[async_trait::async_trait]
impl Execution for CommandExecution {
    async fn prepare(
        &mut self,
        _stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), BackendError> {
        // The remote side prepares the sandbox (the agent's --environment).
        Ok(())
    }

    async fn launch(&mut self) -> Result<(), BackendError> {
        let payload = self.payload.take().ok_or_else(|| {
            BackendError::new(
                FailureReason::DispatchCommand,
                "the task was dispatched already",
            )
        })?;
        let bytes = serde_json::to_vec(&payload).map_err(|e| {
            BackendError::new(FailureReason::DispatchCommand, format!("payload: {e}"))
        })?;
        let command = self.config.dispatch_command.clone();
        let out = match self.run("dispatch_command", &command, Some(bytes)).await {
            Ok(out) => out,
            Err(CommandError::Timeout) => {
                return Err(BackendError::new(
                    FailureReason::DispatchTimeout,
                    format!(
                        "dispatch_command did not finish within {} (backend.command.dispatch_timeout)",
                        humanize(self.config.dispatch_timeout)
                    ),
                ));
            }
            Err(CommandError::Spawn(msg)) => {
                return Err(BackendError::new(FailureReason::DispatchCommand, msg));
            }
        };
        if !out.status.success() {
            return Err(BackendError::new(
                FailureReason::DispatchCommand,
                format!(
                    "dispatch_command failed ({}): {}",
                    out.status,
                    if out.stderr.is_empty() {
                        "no output on stderr"
                    } else {
                        &out.stderr
                    }
                ),
            ));
        }
        let external = out
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or(&self.record.execution_id)
            .to_owned();
        if external.len() > 256 || external.chars().any(char::is_control) {
            return Err(BackendError::new(
                FailureReason::DispatchCommand,
                "dispatch_command printed an unusable external id (over 256 bytes or with \
                 control characters) on its first line",
            ));
        }
        self.record.external_id = external;
        if let Err(e) = state::save(&self.config.state_dir, &self.record) {
            // The task runs; only a restart could not find it again.
            tracing::warn!(task_id = %self.record.task_id, error = %e, "cannot record the dispatched task; a worker restart will not pick it up");
        }
        tracing::info!(task_id = %self.record.task_id, execution_id = %self.record.execution_id, external_id = %self.record.external_id, "task dispatched");
        Ok(())
    }

    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        let mut ended_checks = 0;
        loop {
            if let Some(state) = self.run_state().await
                && state.is_terminal()
            {
                return Ok(status_of(state));
            }
            if self.alive().await == Some(false) {
                ended_checks += 1;
                if ended_checks >= ENDED_CHECKS {
                    tracing::warn!(task_id = %self.record.task_id, external_id = %self.record.external_id, "the dispatched task ended without reporting an outcome");
                    return Ok(ExitStatus::Code(1));
                }
            } else {
                ended_checks = 0;
            }
            tokio::time::sleep(self.config.status_interval).await;
        }
    }

    async fn cancel(&mut self, _grace: Duration) -> Result<ExitStatus, BackendError> {
        let Some(command) = self.config.cancel_command.clone() else {
            tracing::warn!(task_id = %self.record.task_id, external_id = %self.record.external_id, "no cancel_command: the dispatched task is left to end by itself (the server has ended its run)");
            return Ok(ExitStatus::Signal(15));
        };
        let payload = serde_json::json!({
            "version": PAYLOAD_VERSION,
            "run_id": self.record.task_id,
            "execution_id": self.record.execution_id,
            "external_id": self.record.external_id,
        });
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        match self.run("cancel_command", &command, Some(bytes)).await {
            Ok(out) if out.status.success() => Ok(ExitStatus::Signal(15)),
            Ok(out) => Err(BackendError::new(
                FailureReason::CancelCommand,
                format!("cancel_command failed ({}): {}", out.status, out.stderr),
            )),
            Err(e) => Err(BackendError::new(
                FailureReason::CancelCommand,
                format!("cancel_command: {e}"),
            )),
        }
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        state::forget(&self.config.state_dir, &self.record.execution_id).map_err(|e| {
            BackendError::with_source(
                FailureReason::Cleanup,
                format!(
                    "cannot remove the record of {}: {e}",
                    self.record.execution_id
                ),
                e,
            )
        })
    }
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
