//! Execution backends behind one trait.
//!
//! A [`Backend`] turns an assignment into an [`Execution`], whose lifecycle the
//! worker drives in a fixed order:
//!
//! ```text
//! prepare ─► launch ─► wait ─────────────► cleanup   (always, whatever happened)
//!                        └─► cancel(grace) ─┘         (user cancel or shutdown)
//! ```
//!
//! Describing a task ([`TaskSpec`]) is separate from running it ([`Execution`]).
//! `direct` is in this build; `docker`, `kubernetes` and `command` plug in here
//! with the same shape (`XConfig` + `X`), and [`Backend::reattach`] lets durable
//! backends pick up executions that outlived a worker restart.

pub mod direct;

use async_trait::async_trait;
use hangar_protocol::worker::FailureReason;
use hangar_protocol::worker::{RunningTask, TaskAssignment};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything a backend needs to run one execution.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Run id (`task_id` on the wire).
    pub task_id: String,
    /// Execution id; unique per assignment.
    pub execution_id: String,
    /// The assignment as received.
    pub assignment: TaskAssignment,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Whether the task succeeded.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    /// The code reported on the wire: the exit code, or 128+signal.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Code(c) => *c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(sig)) => ExitStatus::Signal(sig),
            // Neither is only possible for stopped/continued states, which wait() never returns.
            (None, None) => ExitStatus::Code(-1),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s} (exit code {})", 128 + s),
        }
    }
}

/// A backend failure, labelled with the `failure_reason` the server is told.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// Label for `task_failed.failure_reason`.
    pub reason: FailureReason,
    /// User-facing description.
    pub message: String,
    /// Underlying cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    /// An error without an underlying cause.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        BackendError {
            reason,
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`.
    pub fn with_source(
        reason: FailureReason,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BackendError {
            reason,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The stop was requested while preparing (no failure of the backend itself).
    pub fn cancelled() -> Self {
        BackendError::new(
            FailureReason::TaskCancelled,
            "cancelled before the agent started",
        )
    }
}

/// Runs executions. One instance per worker, shared by all tasks.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Name announced in `worker_hello`.
    fn name(&self) -> &'static str;

    /// Validates `spec` and describes its execution; must not start anything.
    fn execution(&self, spec: TaskSpec) -> Result<Box<dyn Execution>, BackendError>;

    /// Finds an execution that survived a worker restart (durable backends).
    /// Host-process backends return `Ok(None)`.
    async fn reattach(
        &self,
        _running: &RunningTask,
    ) -> Result<Option<Box<dyn Execution>>, BackendError> {
        Ok(None)
    }

    /// Called once when the worker stops, after every execution was cleaned up.
    /// Must never touch data of executions it does not own.
    async fn shutdown(&self) {}
}

/// One execution on a backend. The worker calls `prepare`, `launch`, `wait`
/// (or `cancel`), then always `cleanup`, each at most once.
#[async_trait]
pub trait Execution: Send {
    /// Builds the sandbox (workspace, image, setup command). Returns
    /// [`BackendError::cancelled`] promptly once `stop` fires.
    async fn prepare(&mut self, stop: &CancellationToken) -> Result<(), BackendError>;

    /// Starts the agent; when this returns Ok the task is running.
    async fn launch(&mut self) -> Result<(), BackendError>;

    /// Waits for the agent to end. Must be cancel-safe: the worker drops this
    /// future when a stop is requested and calls [`cancel`](Self::cancel).
    async fn wait(&mut self) -> Result<ExitStatus, BackendError>;

    /// Stops the agent: a polite signal, then a forced kill after `grace`.
    /// Returns how it ended.
    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError>;

    /// Removes what the execution left behind (teardown, strays, the sandbox
    /// unless cleanup is off). Called whatever happened before.
    async fn cleanup(&mut self) -> Result<(), BackendError>;
}
