//! What a worker reports about its tasks (claimed, rejected, started,
//! completed, failed), decoded and applied through the store, fenced by
//! execution; a report that does not decode still ends its task.

use crate::AppState;
use crate::dispatch::{Reported, WorkerKey};
use hangar_protocol::worker::{
    FailureReason, TaskCompleted, TaskFailed, TaskStarted, WorkerToServer,
};
use hangar_protocol::{Envelope, RunState, Timestamp};
use hangar_store::{ExecutionEnd, Outcome, StoreResult, Transition};

/// What one worker connection has done, for reports that name no execution
/// (the stock oz-agent-worker never sends `execution_id`).
pub(super) struct ConnView {
    /// When the connection opened (ms).
    opened_at: i64,
    /// The latest executions this connection claimed (or refused) without
    /// naming them, at most [`ANSWERED_KEPT`].
    answered: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// Claims remembered per connection: far above any worker's concurrency.
const ANSWERED_KEPT: usize = 512;

/// What a frame is, for [`ConnView::resolve`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `task_claimed` / `task_rejected`: the answer to the current assignment.
    Assignment,
    /// Anything later: `task_started`, `task_completed`, `task_failed`.
    Report,
}

impl ConnView {
    pub(super) fn opened_now() -> ConnView {
        ConnView {
            opened_at: Timestamp::now().unix_millis(),
            answered: Default::default(),
        }
    }

    /// The execution a frame of this connection is about. With an
    /// `execution_id` that is the one named. Without one, a report applies
    /// to the run's current execution only when this connection claimed it,
    /// or when it was assigned before this connection opened (a reconnect
    /// within the lease): a report queued for an older execution never ends
    /// a newer one (issue 17, item 5).
    async fn resolve(
        &self,
        app: &AppState,
        key: &WorkerKey,
        task_id: &str,
        execution_id: Option<&str>,
        answer: Answer,
    ) -> StoreResult<Option<Reported>> {
        let named = execution_id.is_some_and(|e| !e.is_empty());
        let Some(exec) = app
            .dispatcher
            .resolve_execution(key, task_id, execution_id)
            .await?
        else {
            return Ok(None);
        };
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        if named {
            return Ok(Some(exec));
        }
        if answer == Answer::Assignment {
            if answered.len() == ANSWERED_KEPT {
                answered.pop_front();
            }
            answered.push_back(exec.id.0.clone());
            return Ok(Some(exec));
        }
        let before_this_connection = exec.created_at.is_some_and(|c| c < self.opened_at);
        if answered.iter().any(|e| e == exec.id.as_str()) || before_this_connection {
            return Ok(Some(exec));
        }
        tracing::info!(
            worker_id = %key.1,
            run_id = %exec.run_id,
            execution_id = %exec.id,
            "a report without execution_id for an execution this connection has not claimed is \
             taken for a late report of an older one and ignored"
        );
        Ok(None)
    }
}

/// Lifecycle event recorded when a worker runs an execution without its
/// backend's sandbox.
pub(crate) const SANDBOX_NONE_EVENT: &str = "sandbox_none";

/// One text frame from a worker, decoded.
#[derive(Debug)]
pub(super) enum Frame {
    /// A message this version knows.
    Message(WorkerToServer),
    /// A known message type whose payload does not decode, naming a task:
    /// never dropped silently (see [`unreadable`]).
    Unreadable(UnreadableReport),
    /// An unknown type, or a frame naming no task: logged and ignored.
    Ignored,
}

/// A known message about a task that could not be decoded.
#[derive(Debug)]
pub(super) struct UnreadableReport {
    /// Message type.
    kind: String,
    /// The task it names.
    task_id: String,
    /// The execution it names, if any.
    execution_id: Option<String>,
    /// Why it did not decode.
    error: String,
}

pub(super) fn decode(text: &str) -> Frame {
    let envelope = match Envelope::parse(text) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring undecodable worker frame");
            return Frame::Ignored;
        }
    };
    // Read before decoding consumes the frame: a report that does not decode
    // must still reach its task.
    let field = |name: &str| {
        envelope
            .data
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (kind, task_id, execution_id) = (
        envelope.kind.clone(),
        field("task_id"),
        field("execution_id"),
    );
    match WorkerToServer::from_envelope(envelope) {
        Ok(Some(msg)) => Frame::Message(msg),
        Ok(None) => {
            tracing::debug!(frame = %text.chars().take(200).collect::<String>(), "ignoring unknown worker message type");
            Frame::Ignored
        }
        Err(e) => match task_id {
            Some(task_id) => Frame::Unreadable(UnreadableReport {
                kind,
                task_id,
                execution_id,
                error: e.to_string(),
            }),
            None => {
                tracing::warn!(error = %e, kind, "ignoring undecodable worker frame that names no task");
                Frame::Ignored
            }
        },
    }
}

pub(super) async fn handle(app: &AppState, key: &WorkerKey, view: &ConnView, frame: Frame) {
    let applied = match frame {
        Frame::Message(msg) => apply(app, key, view, msg).await,
        Frame::Unreadable(report) => unreadable(app, key, view, report).await,
        Frame::Ignored => Ok(()),
    };
    if let Err(e) = applied {
        tracing::error!(error = %e, worker_id = %key.1, "could not apply worker report");
    }
}

/// A report about a task that does not decode: logged with why, and when it
/// was the task's terminal report (`task_completed`, `task_failed`), the
/// task's current execution ends in ERROR saying so, rather than stay
/// claimed with nobody left to end it.
async fn unreadable(
    app: &AppState,
    key: &WorkerKey,
    view: &ConnView,
    report: UnreadableReport,
) -> StoreResult<()> {
    let UnreadableReport {
        kind,
        task_id,
        execution_id,
        error,
    } = report;
    tracing::warn!(
        worker_id = %key.1,
        task_id,
        execution_id,
        kind,
        error,
        "a worker's report about a task could not be read"
    );
    if kind != "task_completed" && kind != "task_failed" {
        return Ok(());
    }
    let Some(exec) = view
        .resolve(app, key, &task_id, execution_id.as_deref(), Answer::Report)
        .await?
    else {
        return Ok(());
    };
    let end = ExecutionEnd {
        outcome: Outcome {
            state: RunState::Error,
            message: format!("the worker's report could not be read: {error}"),
            error_code: Some("internal_error".to_owned()),
        },
        exit_code: None,
        failure_reason: None,
        at: Timestamp::now().unix_millis(),
    };
    let t = store_finish(app, key, &exec, &end).await?;
    tracing::info!(run_id = %exec.run_id, execution_id = %exec.id, transition = ?t, kind, "ended the task on an unreadable report");
    Ok(())
}

/// Ends an execution as its worker reported, and frees what it held.
async fn store_finish(
    app: &AppState,
    key: &WorkerKey,
    exec: &Reported,
    end: &ExecutionEnd,
) -> StoreResult<Transition> {
    let t = app
        .store
        .finish_execution(&exec.run_id, &exec.id, end)
        .await?;
    app.dispatcher.release(key, &exec.id);
    app.sessions.hub.close(&exec.run_id, &exec.id);
    if t == Transition::Applied {
        crate::metrics::run_ended(app.store.as_ref(), &exec.run_id).await;
    }
    Ok(t)
}

fn outcome_for_failure(
    reason: Option<&FailureReason>,
    message: &str,
    exit_code: Option<i32>,
) -> Outcome {
    let message = if message.is_empty() {
        match exit_code {
            Some(c) => format!("the agent exited with status {c}"),
            None => "the task failed".to_owned(),
        }
    } else {
        message.to_owned()
    };
    // A label this version does not know counts as `unknown`.
    let reason = reason.map(FailureReason::known);
    let (state, code) = match reason {
        Some(FailureReason::TaskCancelled) => (RunState::Cancelled, None),
        Some(
            FailureReason::AgentInvocation
            | FailureReason::SetupCommand
            | FailureReason::TaskTimeout
            | FailureReason::ContainerExit
            | FailureReason::ContainerOom
            | FailureReason::JobFailed
            | FailureReason::ActiveDeadline
            | FailureReason::InvalidImage,
        ) => (RunState::Failed, Some("environment_setup_failed")),
        _ => (RunState::Error, Some("resource_unavailable")),
    };
    let code = if reason == Some(&FailureReason::AgentInvocation) {
        None
    } else {
        code
    };
    Outcome {
        state,
        message,
        error_code: code.map(str::to_owned),
    }
}

/// Applies one report of a worker through the store, fenced by execution:
/// a report of a stale execution changes nothing.
async fn apply(
    app: &AppState,
    key: &WorkerKey,
    view: &ConnView,
    msg: WorkerToServer,
) -> StoreResult<()> {
    let now = Timestamp::now().unix_millis();
    match msg {
        WorkerToServer::WorkerHello(_) => {
            tracing::debug!(worker_id = %key.1, "late worker_hello ignored");
        }
        WorkerToServer::WorkerDraining => {
            tracing::info!(worker_id = %key.1, "worker draining");
            app.dispatcher.set_draining(key);
        }
        WorkerToServer::TaskClaimed(m) => {
            let Some(exec) = view
                .resolve(
                    app,
                    key,
                    &m.task_id,
                    m.execution_id.as_deref(),
                    Answer::Assignment,
                )
                .await?
            else {
                tracing::debug!(task_id = %m.task_id, "claim for an unknown execution ignored");
                return Ok(());
            };
            let t = app.store.claim(&exec.run_id, &exec.id, now).await?;
            if t == Transition::AlreadyTerminal {
                // Cancelled between assignment and claim.
                app.dispatcher.cancel_on(key, &exec.run_id);
            }
        }
        WorkerToServer::TaskRejected(m) => {
            let Some(exec) = view
                .resolve(
                    app,
                    key,
                    &m.task_id,
                    m.execution_id.as_deref(),
                    Answer::Assignment,
                )
                .await?
            else {
                return Ok(());
            };
            app.store
                .reject(&exec.run_id, &exec.id, &m.reason, now)
                .await?;
            app.dispatcher.refused(key, &exec.id);
        }
        WorkerToServer::TaskStarted(m) => started(app, key, view, m, now).await?,
        WorkerToServer::TaskCompleted(m) => completed(app, key, view, m, now).await?,
        WorkerToServer::TaskFailed(m) => failed(app, key, view, m, now).await?,
    }
    Ok(())
}

/// `task_started`: the execution runs; a run without its sandbox is
/// recorded for good (the run's details show `sandbox: none`).
async fn started(
    app: &AppState,
    key: &WorkerKey,
    view: &ConnView,
    m: TaskStarted,
    now: i64,
) -> StoreResult<()> {
    let Some(exec) = view
        .resolve(app, key, &m.task_id, Some(&m.execution_id), Answer::Report)
        .await?
    else {
        return Ok(());
    };
    let store = app.store.as_ref();
    store.start(&exec.run_id, &exec.id, now).await?;
    if m.sandbox.as_deref() == Some("none") {
        store
            .record_lifecycle_event(
                key.0,
                &hangar_store::NewLifecycleEvent {
                    run_id: exec.run_id.0.clone(),
                    event_type: SANDBOX_NONE_EVENT.to_owned(),
                    execution_id: Some(exec.id.0.clone()),
                    ref_id: Some("none".to_owned()),
                    occurred_at: now,
                },
            )
            .await?;
    }
    Ok(())
}

/// `task_completed`: the execution ends `SUCCEEDED` (or `CANCELLED`).
async fn completed(
    app: &AppState,
    key: &WorkerKey,
    view: &ConnView,
    m: TaskCompleted,
    now: i64,
) -> StoreResult<()> {
    let Some(exec) = view
        .resolve(
            app,
            key,
            &m.task_id,
            m.execution_id.as_deref(),
            Answer::Report,
        )
        .await?
    else {
        tracing::debug!(task_id = %m.task_id, "completion for an unknown or stale execution ignored");
        return Ok(());
    };
    let cancelled = m.task_state.as_deref() == Some("CANCELLED");
    let outcome = Outcome {
        state: if cancelled {
            RunState::Cancelled
        } else {
            RunState::Succeeded
        },
        message: if m.message.is_empty() {
            "Task completed".to_owned()
        } else {
            m.message
        },
        error_code: None,
    };
    let end = ExecutionEnd {
        outcome,
        exit_code: None,
        failure_reason: None,
        at: now,
    };
    let t = store_finish(app, key, &exec, &end).await?;
    tracing::info!(run_id = %exec.run_id, execution_id = %exec.id, transition = ?t, "task completed");
    Ok(())
}

/// `task_failed`: the execution ends as its failure reason says
/// ([`outcome_for_failure`]).
async fn failed(
    app: &AppState,
    key: &WorkerKey,
    view: &ConnView,
    m: TaskFailed,
    now: i64,
) -> StoreResult<()> {
    let Some(exec) = view
        .resolve(
            app,
            key,
            &m.task_id,
            m.execution_id.as_deref(),
            Answer::Report,
        )
        .await?
    else {
        return Ok(());
    };
    let outcome = outcome_for_failure(m.failure_reason.as_ref(), &m.message, m.exit_code);
    let end = ExecutionEnd {
        outcome,
        exit_code: m.exit_code,
        // Kept as sent, even a label this version does not know.
        failure_reason: m.failure_reason.as_ref().map(|r| r.as_str().to_owned()),
        at: now,
    };
    let t = store_finish(app, key, &exec, &end).await?;
    tracing::info!(run_id = %exec.run_id, execution_id = %exec.id, transition = ?t, "task failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of failure reasons says what [`outcome_for_failure`] does.
    #[test]
    fn the_readme_failure_table_matches_the_outcome_mapping() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
        let rows: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("| `") && !l.starts_with("| `failure_reason`"))
            .collect();
        for reason in FailureReason::KNOWN {
            let label = format!("`{}`", reason.as_str());
            let row = rows
                .iter()
                .find(|r| r.split('|').nth(1).is_some_and(|c| c.contains(&label)))
                .unwrap_or_else(|| panic!("the README's failure table lacks {label}"));
            let outcome = outcome_for_failure(Some(reason), "m", None);
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            assert_eq!(cells[2], outcome.state.as_str(), "{label}: {row}");
            let code = outcome.error_code.map(|c| format!("`{c}`"));
            assert_eq!(
                cells[3].split(' ').next(),
                Some(code.as_deref().unwrap_or("—")),
                "{label}: {row}"
            );
        }
        // Unknown labels and none end like `unknown`.
        let unknown = outcome_for_failure(Some(&FailureReason::Unknown), "m", None);
        for other in [
            outcome_for_failure(None, "m", None),
            outcome_for_failure(Some(&FailureReason::Other("later".into())), "m", None),
        ] {
            assert_eq!(other, unknown);
        }
    }
}
