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
//! With `--idle-on-complete`, an execution whose agent ended by itself may be
//! parked instead of cleaned up; a follow-up of the same run adopts it and
//! goes through prepare (a light one) ─► launch ─► wait again.
//!
//! Describing a task ([`TaskSpec`]) is separate from running it ([`Execution`]).
//! `direct`, `docker`, `command` and `kubernetes` are in this build, each
//! with the same shape: `backends/<name>.rs` with `XConfig` + `X`, the rest
//! in `backends/<name>/`, and `XConfig` a [`factory::BackendFactory`] (the
//! worker core knows none of a backend's settings). What several share:
//! `output` (task output in the worker's log) and `sandbox` (the egress
//! proxy and server relay). Every backend runs the one conformance suite
//! (`tests/suite/conformance.rs`). [`Backend::start`] checks the backend
//! once before connecting, and [`Backend::recover`] lets durable backends
//! pick up executions that outlived a worker restart (reported in
//! `worker_hello.running`).

pub mod command;
mod ctl_dir;
pub mod direct;
pub mod docker;
pub mod factory;
pub(crate) mod inputs;
pub mod kubernetes;
pub(crate) mod output;
pub(crate) mod repos;
pub(crate) mod sandbox;
pub(crate) mod spools;

use async_trait::async_trait;
use hangar_protocol::worker::FailureReason;
use hangar_protocol::worker::TaskAssignment;
use std::collections::BTreeMap;
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
    /// Whether repositories may be `file://` URLs or local paths on the
    /// worker host (`allow_local_repositories`, for tests).
    pub allow_local_repositories: bool,
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
    /// The task's exit code when it failed by exiting (128+signal).
    pub exit_code: Option<i32>,
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
            exit_code: None,
            source: None,
        }
    }

    /// The same error, with the task's exit code.
    pub fn with_exit_code(mut self, code: Option<i32>) -> Self {
        self.exit_code = code;
        self
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
            exit_code: None,
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

    /// Checks the backend before the worker connects (e.g. pings the Docker
    /// daemon); an error stops the worker with a message for the operator.
    async fn start(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Executions of this worker that survived a restart (durable backends).
    /// Each is driven from `wait` on (it already runs, or already ended and
    /// only its result is reported) and then cleaned up. Host-process
    /// backends return nothing.
    async fn recover(&self) -> Result<Vec<Recovered>, BackendError> {
        Ok(Vec::new())
    }

    /// Called once when the worker stops, after every execution was cleaned up.
    /// Must never touch data of executions it does not own.
    async fn shutdown(&self) {}
}

/// An execution found by [`Backend::recover`].
pub struct Recovered {
    /// Run id.
    pub task_id: String,
    /// Execution id.
    pub execution_id: String,
    /// Already launched: the worker calls `wait` (or `cancel`), then `cleanup`.
    pub execution: Box<dyn Execution>,
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("task_id", &self.task_id)
            .field("execution_id", &self.execution_id)
            .finish_non_exhaustive()
    }
}

/// Variables that identify the run; only the assignment may set them.
pub(crate) const RUN_IDENTITY_ENV: [&str; 3] = [
    hangar_protocol::ENV_RUN_TOKEN,
    hangar_protocol::ENV_RUN_ID,
    hangar_protocol::ENV_EXECUTION_ID,
];

/// The task environment every backend passes: the assignment's `env_vars`,
/// then the worker's configured env (which cannot override the run identity),
/// never the worker's API key.
pub(crate) fn task_env(
    spec: &TaskSpec,
    configured: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = spec.assignment.env_vars.clone();
    for (k, v) in configured {
        if RUN_IDENTITY_ENV.contains(&k.as_str()) && spec.assignment.env_vars.contains_key(k) {
            continue;
        }
        env.insert(k.clone(), v.clone());
    }
    if env.remove(hangar_protocol::ENV_API_KEY).is_some() {
        tracing::warn!(
            task_id = %spec.task_id,
            execution_id = %spec.execution_id,
            "dropped {} from the task environment: tasks never get an API key",
            hangar_protocol::ENV_API_KEY
        );
    }
    env
}

/// [`task_env`] for a backend that prepares the sandbox itself (clones,
/// setup commands) before the agent starts: it tells an agent given
/// `--environment` not to prepare it again. Backends whose agent prepares
/// the environment (kubernetes, command) use [`task_env`].
pub(crate) fn prepared_task_env(
    spec: &TaskSpec,
    configured: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut env = task_env(spec, configured);
    env.insert(
        hangar_protocol::ENV_ENVIRONMENT_PREPARED.to_owned(),
        "1".to_owned(),
    );
    env
}

/// Arguments after the agent binary: `agent run --task-id … --server-url … --sandboxed …`.
pub(crate) fn agent_args(
    spec: &TaskSpec,
    server_url: &str,
    idle_on_complete: Option<&str>,
) -> Vec<String> {
    let a = &spec.assignment;
    let mut args: Vec<String> = vec![
        "agent".into(),
        "run".into(),
        "--task-id".into(),
        spec.task_id.clone(),
        "--server-url".into(),
        server_url.to_owned(),
        "--sandboxed".into(),
    ];
    let snapshot = a.task.agent_config_snapshot.as_ref();
    if let Some(model) = snapshot
        .and_then(|s| s.model_id.as_deref())
        .filter(|m| !m.is_empty())
    {
        args.push("--model".into());
        args.push(model.to_owned());
    }
    let idle = snapshot
        .and_then(|s| s.idle_timeout_minutes)
        .filter(|m| *m > 0)
        .map(|m| format!("{m}m"))
        .or_else(|| idle_on_complete.map(str::to_owned));
    if let Some(idle) = idle {
        args.push("--idle-on-complete".into());
        args.push(idle);
    }
    // As the stock worker does; the agent prepares the environment unless
    // the backend did (`prepared_task_env`).
    if let Some(env) = a.environment.as_ref().filter(|e| !e.id.is_empty()) {
        args.push("--environment".into());
        args.push(env.id.clone());
    }
    args.extend(a.additional_oz_args.iter().cloned());
    args
}

/// Whether `id` is a single, harmless path segment (also a valid container-name part).
pub(crate) fn is_safe_segment(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// One execution on a backend. The worker calls `prepare`, `launch`, `wait`
/// (or `cancel`), then always `cleanup`, each at most once.
#[async_trait]
pub trait Execution: Send {
    /// `Some("none")` when the task runs without the backend's sandbox (an
    /// explicit relaxation the run's details show); `None` otherwise.
    fn sandbox_relaxation(&self) -> Option<&'static str> {
        None
    }

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

    /// `--idle-on-complete`: after the agent ended by itself, keeps the
    /// sandbox (workspace, container) for a follow-up of the same run instead
    /// of cleaning up; stops whatever still runs in it. `false` when this
    /// execution cannot be kept: the worker then calls `cleanup`. A kept
    /// execution ends either with [`adopt`](Self::adopt) or with `cleanup`.
    async fn park(&mut self) -> bool {
        false
    }

    /// Takes a parked sandbox over for a new execution of the same run:
    /// `prepare` then only refreshes what the new execution needs (its
    /// environment and token), without cloning or setup commands again.
    fn adopt(&mut self, spec: TaskSpec) -> Result<(), BackendError> {
        Err(BackendError::new(
            FailureReason::WorkspaceSetup,
            format!(
                "execution {} cannot reuse a kept sandbox on this backend",
                spec.execution_id
            ),
        ))
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
