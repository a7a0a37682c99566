//! The worker WebSocket: `GET /api/v1/selfhosted/worker/ws?worker_id=<ID>`.
//!
//! One task reads frames and applies them through the store (fenced by
//! execution); a writer task owned by the connection sends queued frames and
//! pings. A worker that sends nothing for `read_timeout` is disconnected.

use crate::AppState;
use crate::auth::{Principal, authenticate};
use crate::dispatch::{Registration, WORKER_OUTBOX, WorkerKey};
use crate::error::{ApiError, ApiResult};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hangar_protocol::worker::{FailureReason, ServerToWorker, WorkerHello, WorkerToServer};
use hangar_protocol::{Envelope, RunState, Timestamp};
use hangar_store::{ExecutionEnd, Outcome, StoreResult, Transition};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest frame accepted from a worker.
const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// How long a closing connection's writer gets to send its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for the optional `worker_hello` before registering without it.
const HELLO_WAIT: Duration = Duration::from_secs(2);

/// Validates a worker id: what `--host` must match exactly.
pub fn validate_worker_id(id: &str) -> ApiResult<()> {
    if id.is_empty() {
        return Err(ApiError::BadRequest(
            "the `worker_id` query parameter is required".into(),
        ));
    }
    if id.len() > 128
        || id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(ApiError::BadRequest(format!(
            "worker id `{id}` is invalid: use at most 128 characters without spaces or `/`"
        )));
    }
    Ok(())
}

/// Worker ids the server keeps for itself (`local:unmanaged` holds unmanaged runs).
pub const RESERVED_WORKER_PREFIX: &str = "local:";

/// Who may connect as a worker: an API key (never a dashboard cookie or a run
/// token) of a team admin, or a team key that belongs to no user (the one
/// `hangar up` gives its local worker). A worker receives other users' tasks
/// with their secrets and run tokens, so a member's key must not (scenario S8).
async fn may_connect_as_worker(app: &AppState, who: &Principal) -> ApiResult<i64> {
    let Principal::ApiKey { team_id, .. } = who else {
        return Err(ApiError::Forbidden(
            "only an API key can connect as a worker (not a dashboard session or a run token); \
             pass an admin's key (or a team key) with `HANGAR_API_KEY`"
                .into(),
        ));
    };
    crate::roles::require_admin(app, who, "connect workers").await?;
    Ok(*team_id)
}

/// Lifecycle event recorded when a worker runs an execution without its
/// backend's sandbox.
pub(crate) const SANDBOX_NONE_EVENT: &str = "sandbox_none";

/// Upgrades an authenticated worker connection.
#[utoipa::path(get, path = "/selfhosted/worker/ws", tag = "hangar", params(("worker_id" = String, Query, description = "The worker id")), responses((status = 101, description = "WebSocket: the worker protocol (PROTOCOL.md section 2)"), (status = "4XX", description = "Problem (RFC 7807)", body = hangar_protocol::Problem, content_type = "application/problem+json")))]
pub async fn worker_socket(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = crate::web_auth::check_websocket_origin(&headers, &app.public_url) {
        return e.into_response();
    }
    let principal = match authenticate(app.store.as_ref(), &headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let team_id = match may_connect_as_worker(&app, &principal).await {
        Ok(team) => team,
        Err(e) => return e.into_response(),
    };
    let worker_id = query.get("worker_id").cloned().unwrap_or_default();
    if let Err(e) = validate_worker_id(&worker_id) {
        return e.into_response();
    }
    if worker_id.starts_with(RESERVED_WORKER_PREFIX) {
        return ApiError::Forbidden(format!(
            "worker id `{worker_id}` is reserved: ids starting with `{RESERVED_WORKER_PREFIX}` \
             belong to the server (unmanaged runs); pick another `--worker-id`"
        ))
        .into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return ApiError::BadRequest(
                "this endpoint speaks WebSocket: connect with an Upgrade: websocket request".into(),
            )
            .into_response();
        }
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| connection(app, team_id, worker_id, socket))
}

fn decode(text: &str) -> Option<WorkerToServer> {
    match Envelope::parse(text).and_then(WorkerToServer::from_envelope) {
        Ok(Some(msg)) => Some(msg),
        Ok(None) => {
            tracing::debug!(frame = %text.chars().take(200).collect::<String>(), "ignoring unknown worker message type");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring undecodable worker frame");
            None
        }
    }
}

async fn connection(app: AppState, team_id: i64, worker_id: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();

    // A Hangar worker sends `worker_hello` first; an Oz worker sends nothing until it has news.
    let mut first: Option<WorkerToServer> = None;
    let mut hello: Option<WorkerHello> = None;
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(HELLO_WAIT, stream.next()).await
    {
        match decode(&text) {
            Some(WorkerToServer::WorkerHello(h)) => hello = Some(h),
            other => first = other,
        }
    }

    let (tx, mut rx) = mpsc::channel::<ServerToWorker>(WORKER_OUTBOX);
    let registration = match app.dispatcher.connect(team_id, &worker_id, tx, hello).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, worker_id, "could not register worker");
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };

    let heartbeat = app.config.heartbeat_interval;
    let writer = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let text = msg.to_envelope().to_text();
                    if sink.send(Message::Text(text.into())).await.is_err() { break; }
                }
                _ = ticker.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break; }
                }
            }
        }
        let _ = sink.close().await;
    });

    crate::presence::connected(&app, &registration).await;
    let key = registration.key.clone();
    if let Some(msg) = first {
        handle(&app, &key, msg).await;
    }
    let read_timeout = app.config.read_timeout;
    // Every frame from the worker (its pings and pongs included) proves it is
    // alive; at most once per half heartbeat that renews its leases.
    let renew_every = heartbeat / 2;
    let mut renewed = tokio::time::Instant::now();
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(read_timeout, stream.next()) => n,
            _ = app.shutdown.cancelled() => break,
        };
        if matches!(next, Ok(Some(Ok(_))))
            && renewed.elapsed() >= renew_every
            && app.dispatcher.holds_work(&registration)
        {
            renewed = tokio::time::Instant::now();
            if let Err(e) = app.dispatcher.renew(&registration).await {
                tracing::warn!(error = %e, worker_id, "could not renew the worker's leases");
            }
        }
        match next {
            Err(_) => {
                tracing::warn!(
                    worker_id,
                    "worker silent past the read timeout; disconnecting"
                );
                break;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Some(msg) = decode(&text) {
                    handle(&app, &key, msg).await;
                }
            }
            Ok(Some(Ok(_))) => {} // ping, pong, binary: liveness only
        }
    }
    finish(&app, &registration, writer).await;
}

async fn finish(
    app: &AppState,
    registration: &Registration,
    mut writer: tokio::task::JoinHandle<()>,
) {
    app.dispatcher.disconnect(registration);
    crate::presence::disconnected(app, registration).await;
    // Disconnecting drops the outbox sender, so the writer sends a close frame
    // and ends; a peer that does not read gets no longer than CLOSE_WAIT.
    if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
        writer.abort();
        let _ = writer.await;
    }
}

async fn handle(app: &AppState, key: &WorkerKey, msg: WorkerToServer) {
    if let Err(e) = apply(app, key, msg).await {
        tracing::error!(error = %e, worker_id = %key.1, "could not apply worker report");
    }
}

fn outcome_for_failure(
    reason: Option<FailureReason>,
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
    let code = if reason == Some(FailureReason::AgentInvocation) {
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

async fn apply(app: &AppState, key: &WorkerKey, msg: WorkerToServer) -> StoreResult<()> {
    let store = app.store.as_ref();
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
            let Some(exec) = app
                .dispatcher
                .resolve_execution(key, &m.task_id, m.execution_id.as_deref())
                .await?
            else {
                tracing::debug!(task_id = %m.task_id, "claim for an unknown execution ignored");
                return Ok(());
            };
            let t = store.claim(&exec.run_id, &exec.id, now).await?;
            if t == Transition::AlreadyTerminal {
                // Cancelled between assignment and claim.
                app.dispatcher.send_cancellation(key.0, &exec);
            }
        }
        WorkerToServer::TaskRejected(m) => {
            let Some(exec) = app
                .dispatcher
                .resolve_execution(key, &m.task_id, m.execution_id.as_deref())
                .await?
            else {
                return Ok(());
            };
            store.reject(&exec.run_id, &exec.id, &m.reason, now).await?;
            app.dispatcher.refused(key, &exec.id);
        }
        WorkerToServer::TaskStarted(m) => {
            let Some(exec) = app
                .dispatcher
                .resolve_execution(key, &m.task_id, Some(&m.execution_id))
                .await?
            else {
                return Ok(());
            };
            store.start(&exec.run_id, &exec.id, now).await?;
            if m.sandbox.as_deref() == Some("none") {
                // Recorded for good: the run's details show it (`sandbox: none`).
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
        }
        WorkerToServer::TaskCompleted(m) => {
            let Some(exec) = app
                .dispatcher
                .resolve_execution(key, &m.task_id, m.execution_id.as_deref())
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
            let t = store.finish_execution(&exec.run_id, &exec.id, &end).await?;
            tracing::info!(run_id = %exec.run_id, execution_id = %exec.id, transition = ?t, "task completed");
            app.dispatcher.release(key, &exec.id);
            app.sessions.close(&exec.run_id, &exec.id);
        }
        WorkerToServer::TaskFailed(m) => {
            let Some(exec) = app
                .dispatcher
                .resolve_execution(key, &m.task_id, m.execution_id.as_deref())
                .await?
            else {
                return Ok(());
            };
            let outcome = outcome_for_failure(m.failure_reason, &m.message, m.exit_code);
            let end = ExecutionEnd {
                outcome,
                exit_code: m.exit_code,
                failure_reason: m.failure_reason.map(|r| {
                    serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                }),
                at: now,
            };
            let t = store.finish_execution(&exec.run_id, &exec.id, &end).await?;
            tracing::info!(run_id = %exec.run_id, execution_id = %exec.id, transition = ?t, "task failed");
            app.dispatcher.release(key, &exec.id);
            app.sessions.close(&exec.run_id, &exec.id);
        }
    }
    Ok(())
}
