//! One execution from claim to terminal report: drives the backend's
//! [`Execution`] and turns its outcome into exactly one `task_completed` or
//! `task_failed`.

use crate::backends::{Backend, BackendError, Execution, ExitStatus, Recovered, TaskSpec};
use crate::connection::Outbox;
use hangar_protocol::WorkerId;
use hangar_protocol::redact::{LogSecrets, Redactor};
use hangar_protocol::worker::FailureReason;
use hangar_protocol::worker::{TaskCompleted, TaskFailed, TaskStarted, WorkerToServer};
use opentelemetry::KeyValue;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `task_state` of a user-cancelled task.
pub const CANCELLED_STATE: &str = "CANCELLED";
/// Message of a user-cancelled task (Oz wording).
pub const CANCELLED_MESSAGE: &str = "Task cancelled by user request.";
/// Message of a successful task.
pub const COMPLETED_MESSAGE: &str = "Task completed successfully.";

/// Why a task is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopCause {
    /// `task_cancellation` from the server.
    User,
    /// The worker is shutting down hard.
    Shutdown,
    /// The worker was cut off from the server for longer than its lease.
    Fenced,
}

/// Stops one execution; the first cause wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskControl {
    token: CancellationToken,
    cause: Arc<OnceLock<StopCause>>,
}

impl TaskControl {
    pub(crate) fn stop(&self, cause: StopCause) {
        let _ = self.cause.set(cause);
        self.token.cancel();
    }

    fn cause(&self) -> Option<StopCause> {
        self.cause.get().copied()
    }
}

/// Everything `drive` needs about one execution.
pub(crate) struct TaskRun {
    pub backend: Arc<dyn Backend>,
    pub spec: TaskSpec,
    pub control: TaskControl,
    pub outbox: Outbox,
    pub kill_grace: Duration,
    /// A kept sandbox of the same run to reuse (`--idle-on-complete`).
    pub reuse: Option<Box<dyn Execution>>,
    /// Where to hand the sandbox when the agent ended by itself, instead of
    /// cleaning it up (`--idle-on-complete`).
    pub park: Option<tokio::sync::mpsc::UnboundedSender<Parked>>,
    /// The worker log's masked values; this task's secrets join them while it runs.
    pub log_secrets: LogSecrets,
    /// `OTEL_*` variables the agent gets to export its spans.
    pub trace_env: Vec<(String, String)>,
    /// This worker (span attributes).
    pub worker_id: WorkerId,
    /// The backend's name (span attributes).
    pub backend_name: &'static str,
}

/// A sandbox kept after its run ended, waiting for a follow-up of that run.
pub(crate) struct Parked {
    /// Run id.
    pub task_id: String,
    /// The execution that last used it.
    pub execution_id: String,
    /// The sandbox.
    pub execution: Box<dyn Execution>,
}

enum Outcome {
    /// The agent ended by itself.
    Exited(ExitStatus),
    /// Stopped on request; the status when the agent had started.
    Stopped(Option<ExitStatus>),
    /// The backend failed.
    Failed(BackendError),
}

/// The execution of `spec`: the kept sandbox of its run when that can be
/// adopted, else a new one (an unusable kept one is cleaned up).
async fn execution_for(
    reuse: Option<Box<dyn Execution>>,
    backend: &dyn Backend,
    spec: TaskSpec,
) -> Result<Box<dyn Execution>, BackendError> {
    let Some(mut kept) = reuse else {
        return backend.execution(spec);
    };
    match kept.adopt(spec.clone()) {
        Ok(()) => Ok(kept),
        Err(e) => {
            tracing::warn!(task_id = %spec.task_id, execution_id = %spec.execution_id, error = %e, "cannot reuse the kept sandbox");
            if let Err(e) = kept.cleanup().await {
                tracing::warn!(task_id = %spec.task_id, reason = ?e.reason, error = %e, "cleanup of the kept sandbox failed");
            }
            backend.execution(spec)
        }
    }
}

/// Runs the execution to the end and queues its terminal report.
pub(crate) async fn drive(mut run: TaskRun) {
    let task_id = run.spec.task_id.clone();
    let execution_id = run.spec.execution_id.clone();
    let started = std::time::Instant::now();
    // The task's span, under the run's trace; the backends' steps and the
    // agent (TRACEPARENT in its environment) nest under it.
    let mut span = hangar_telemetry::trace::start(
        "worker.task",
        &crate::metrics::task_parent(&run.spec),
        vec![
            KeyValue::new("hangar.run.id", task_id.clone()),
            KeyValue::new("hangar.execution.id", execution_id.clone()),
            KeyValue::new("hangar.worker.id", run.worker_id.to_string()),
            KeyValue::new("hangar.worker.backend", run.backend_name),
        ],
    );
    let env = &mut run.spec.assignment.env_vars;
    env.insert(
        hangar_telemetry::trace::ENV.to_owned(),
        span.context().header(),
    );
    for (k, v) in &run.trace_env {
        env.entry(k.clone()).or_insert_with(|| v.clone());
    }
    // S10: the task's secrets and run token are masked in its failure
    // message and, while it runs, in everything the worker logs.
    let redactor = crate::backends::repos::task_redactor(&run.spec, &run.spec.assignment.env_vars);
    if redactor.too_short() > 0 {
        tracing::warn!(task_id = %task_id, execution_id = %execution_id, count = redactor.too_short(), "secret values shorter than {} bytes cannot be masked; they may appear in messages and logs", hangar_protocol::redact::MIN_SECRET_LEN);
    }
    let _masked = run.log_secrets.register(redactor.values().to_vec());
    // S9: nothing the assignment names reaches a host command unchecked.
    if let Err(e) = crate::backends::inputs::check_assignment(&run.spec) {
        tracing::warn!(task_id = %task_id, execution_id = %execution_id, reason = ?e.reason, error = %e, "refusing the assignment");
        if let Some(mut kept) = run.reuse
            && let Err(e) = kept.cleanup().await
        {
            tracing::warn!(task_id = %task_id, reason = ?e.reason, error = %e, "cleanup of the kept sandbox failed");
        }
        crate::metrics::get().task_failed("assignment", &e.reason);
        let report = report(Outcome::Failed(e), None, &task_id, &execution_id, &redactor);
        record_end(&report, started, &mut span, true);
        run.outbox.send(report).await;
        return;
    }
    let execution = execution_for(run.reuse, run.backend.as_ref(), run.spec).await;
    let outcome = match execution {
        Ok(mut exec) => {
            let outcome = lifecycle(
                span.context(),
                exec.as_mut(),
                &run.control,
                &run.outbox,
                &task_id,
                &execution_id,
                run.kill_grace,
            )
            .await;
            let parked = match (&run.park, &outcome) {
                (Some(tx), Outcome::Exited(_)) if exec.park().await => {
                    let parked = Parked {
                        task_id: task_id.clone(),
                        execution_id: execution_id.clone(),
                        execution: exec,
                    };
                    match tx.send(parked) {
                        Ok(()) => None,
                        Err(back) => Some(back.0.execution),
                    }
                }
                _ => Some(exec),
            };
            if let Some(mut exec) = parked
                && let Err(e) = exec.cleanup().await
            {
                crate::metrics::get().task_failed("cleanup", &e.reason);
                tracing::warn!(task_id = %task_id, execution_id = %execution_id, reason = ?e.reason, error = %e, "cleanup failed");
            }
            outcome
        }
        Err(e) => Outcome::Failed(e),
    };
    let report = report(
        outcome,
        run.control.cause(),
        &task_id,
        &execution_id,
        &redactor,
    );
    record_end(&report, started, &mut span, false);
    run.outbox.send(report).await;
}

/// Counts a task's end by result (and its failure reason) and closes its span.
fn record_end(
    report: &WorkerToServer,
    started: std::time::Instant,
    span: &mut hangar_telemetry::trace::Span,
    counted_failure: bool,
) {
    let metrics = crate::metrics::get();
    let result = match report {
        WorkerToServer::TaskCompleted(c) if c.task_state.as_deref() == Some(CANCELLED_STATE) => {
            "cancelled"
        }
        WorkerToServer::TaskCompleted(_) => "succeeded",
        WorkerToServer::TaskFailed(f) => {
            let reason = f.failure_reason.clone().unwrap_or(FailureReason::Unknown);
            if !counted_failure {
                metrics.task_failed("backend", &reason);
            }
            span.fail(reason.as_str().to_owned());
            "failed"
        }
        _ => "failed",
    };
    span.set("hangar.task.result", result);
    metrics.task_ended(result, started.elapsed());
}

/// Drives an execution that survived a worker restart: it is already
/// launched, so only wait (or cancel), cleanup and the report remain.
pub(crate) async fn drive_recovered(
    r: Recovered,
    control: TaskControl,
    outbox: Outbox,
    kill_grace: Duration,
) {
    let Recovered {
        task_id,
        execution_id,
        mut execution,
    } = r;
    let started = std::time::Instant::now();
    let mut span = hangar_telemetry::trace::start(
        "worker.task.recovered",
        &hangar_telemetry::trace::TraceParent::for_run(&task_id),
        vec![KeyValue::new("hangar.execution.id", execution_id.clone())],
    );
    let outcome = wait_or_stop(
        execution.as_mut(),
        &control,
        &task_id,
        &execution_id,
        kill_grace,
    )
    .await;
    if let Err(e) = execution.cleanup().await {
        tracing::warn!(task_id = %task_id, execution_id = %execution_id, reason = ?e.reason, error = %e, "cleanup failed");
    }
    // The assignment (and with it the secrets) did not survive the restart.
    let report = report(
        outcome,
        control.cause(),
        &task_id,
        &execution_id,
        &Redactor::default(),
    );
    record_end(&report, started, &mut span, false);
    outbox.send(report).await;
}

async fn wait_or_stop(
    exec: &mut dyn Execution,
    control: &TaskControl,
    task_id: &str,
    execution_id: &str,
    grace: Duration,
) -> Outcome {
    tokio::select! {
        status = exec.wait() => match status {
            Ok(status) => Outcome::Exited(status),
            Err(e) => Outcome::Failed(e),
        },
        _ = control.token.cancelled() => {
            tracing::info!(task_id = %task_id, execution_id = %execution_id, cause = ?control.cause(), ?grace, "stopping task");
            match exec.cancel(grace).await {
                Ok(status) => Outcome::Stopped(Some(status)),
                Err(e) => {
                    tracing::warn!(task_id = %task_id, execution_id = %execution_id, error = %e, "stopping the task failed");
                    Outcome::Stopped(None)
                }
            }
        }
    }
}

async fn lifecycle(
    trace: hangar_telemetry::trace::TraceParent,
    exec: &mut dyn Execution,
    control: &TaskControl,
    outbox: &Outbox,
    task_id: &str,
    execution_id: &str,
    grace: Duration,
) -> Outcome {
    let span = hangar_telemetry::trace::start("task.prepare", &trace, Vec::new());
    let prepared = exec.prepare(&control.token).await;
    drop(span);
    if let Err(e) = prepared {
        if control.token.is_cancelled() {
            return Outcome::Stopped(None);
        }
        return Outcome::Failed(e);
    }
    if control.token.is_cancelled() {
        return Outcome::Stopped(None);
    }
    let span = hangar_telemetry::trace::start("task.launch", &trace, Vec::new());
    let launched = exec.launch().await;
    drop(span);
    if let Err(e) = launched {
        return Outcome::Failed(e);
    }
    outbox
        .send(WorkerToServer::TaskStarted(TaskStarted {
            task_id: task_id.to_owned(),
            execution_id: execution_id.to_owned(),
            sandbox: exec.sandbox_relaxation().map(str::to_owned),
        }))
        .await;
    wait_or_stop(exec, control, task_id, execution_id, grace).await
}

fn report(
    outcome: Outcome,
    cause: Option<StopCause>,
    task_id: &str,
    execution_id: &str,
    redactor: &Redactor,
) -> WorkerToServer {
    let completed = |message: &str, task_state: Option<&str>| {
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_id: task_id.to_owned(),
            message: message.to_owned(),
            task_state: task_state.map(str::to_owned),
            execution_id: Some(execution_id.to_owned()),
        })
    };
    let failed = |reason: FailureReason, message: String, exit_code: Option<i32>| {
        WorkerToServer::TaskFailed(TaskFailed {
            task_id: task_id.to_owned(),
            message,
            failure_reason: Some(reason),
            exit_code,
            execution_id: Some(execution_id.to_owned()),
        })
    };
    let msg = match (outcome, cause) {
        (Outcome::Exited(status), _) if status.success() => completed(COMPLETED_MESSAGE, None),
        (Outcome::Exited(status), _) => failed(
            FailureReason::AgentInvocation,
            format!("The agent exited with {status}."),
            Some(status.code()),
        ),
        (Outcome::Stopped(_), Some(StopCause::User)) => {
            completed(CANCELLED_MESSAGE, Some(CANCELLED_STATE))
        }
        (Outcome::Stopped(status), Some(StopCause::Shutdown) | None) => failed(
            FailureReason::GracefulShutdown,
            "The worker shut down before the task finished.".to_owned(),
            status.map(|s| s.code()),
        ),
        (Outcome::Stopped(status), Some(StopCause::Fenced)) => failed(
            FailureReason::WorkerLost,
            "The worker lost contact with the control plane for longer than its lease and \
             stopped the task itself."
                .to_owned(),
            status.map(|s| s.code()),
        ),
        // Backend messages quote output (setup commands, git): mask secrets.
        (Outcome::Failed(e), _) => failed(
            e.reason,
            redactor.redact(&e.message).into_owned(),
            e.exit_code,
        ),
    };
    let kind = match &msg {
        WorkerToServer::TaskCompleted(m) => m
            .task_state
            .as_deref()
            .unwrap_or("completed")
            .to_lowercase(),
        WorkerToServer::TaskFailed(m) => format!("failed ({:?})", m.failure_reason),
        _ => String::new(),
    };
    tracing::info!(task_id = %task_id, execution_id = %execution_id, result = %kind, "task finished");
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_map_outcomes() {
        let r = report(
            Outcome::Exited(ExitStatus::Signal(9)),
            None,
            "t",
            "e",
            &Redactor::default(),
        );
        let WorkerToServer::TaskFailed(f) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (f.failure_reason, f.exit_code),
            (Some(FailureReason::AgentInvocation), Some(137))
        );

        let r = report(
            Outcome::Stopped(Some(ExitStatus::Signal(9))),
            Some(StopCause::User),
            "t",
            "e",
            &Redactor::default(),
        );
        let WorkerToServer::TaskCompleted(c) = r else {
            panic!("{r:?}")
        };
        assert_eq!(c.task_state.as_deref(), Some("CANCELLED"));
        assert_eq!(c.message, CANCELLED_MESSAGE);

        let r = report(
            Outcome::Stopped(None),
            Some(StopCause::Shutdown),
            "t",
            "e",
            &Redactor::default(),
        );
        let WorkerToServer::TaskFailed(f) = r else {
            panic!("{r:?}")
        };
        assert_eq!(f.failure_reason, Some(FailureReason::GracefulShutdown));

        // An agent that finished before the cancel landed succeeded.
        let r = report(
            Outcome::Exited(ExitStatus::Code(0)),
            Some(StopCause::User),
            "t",
            "e",
            &Redactor::default(),
        );
        assert!(matches!(
            r,
            WorkerToServer::TaskCompleted(TaskCompleted {
                task_state: None,
                ..
            })
        ));
    }

    #[test]
    fn s10_failure_messages_are_masked() {
        let r = Redactor::new(["s3cr3t-value-1"]);
        let e = BackendError::new(
            FailureReason::SetupCommand,
            "the setup command failed; output:\ns3cr3t-value-1",
        );
        let WorkerToServer::TaskFailed(f) = report(Outcome::Failed(e), None, "t", "e", &r) else {
            panic!()
        };
        assert!(!f.message.contains("s3cr3t-value-1"), "{}", f.message);
        assert!(f.message.contains("[REDACTED]"), "{}", f.message);
    }

    #[test]
    fn first_stop_cause_wins() {
        let c = TaskControl::default();
        c.stop(StopCause::User);
        c.stop(StopCause::Shutdown);
        assert_eq!(c.cause(), Some(StopCause::User));
        assert!(c.token.is_cancelled());
    }
}
