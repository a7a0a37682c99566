//! The session hub: agents stream their events here
//! (`GET /api/v1/agent/runs/{id}/session?execution_id=…`, run token), the
//! server commits each event once per `(run, execution, seq)` and acks it, and
//! control messages (`cancel`, `followup`) go back down the same socket.

use crate::AppState;
use crate::auth::{Principal, authenticate};
use crate::error::ApiError;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hangar_protocol::session::{Ack, AgentToServer, EventBody, ServerToAgent, SessionEvent};
use hangar_protocol::worker::FailureReason;
use hangar_protocol::{Envelope, ExecutionId, RunId};
use hangar_store::{FollowupRecord, Outcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Control frames queued to one agent.
const SESSION_OUTBOX: usize = 256;
/// Largest frame accepted from an agent.
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// An agent socket's read buffer (zeroed when it opens; tungstenite's
/// default is 128 KiB): events are mostly small, a larger one grows it.
const READ_BUFFER_BYTES: usize = 16 * 1024;

struct Attached {
    conn_id: u64,
    execution_id: ExecutionId,
    tx: mpsc::Sender<ServerToAgent>,
    /// Fired when the execution ends: the connection closes at once.
    closed: tokio_util::sync::CancellationToken,
}

/// Events kept per run for viewers that fall behind; a slower viewer is told
/// it lagged and reconnects with `Last-Event-ID`.
pub const VIEWER_BUFFER: usize = 1024;

/// A committed event as live viewers receive it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    /// Execution that produced it.
    pub execution_id: ExecutionId,
    /// The event.
    pub event: SessionEvent,
}

/// Live agent connections and viewers by run.
#[derive(Default)]
pub struct SessionHub {
    agents: Mutex<HashMap<RunId, Attached>>,
    viewers: Mutex<HashMap<RunId, tokio::sync::broadcast::Sender<LiveEvent>>>,
    next_conn: std::sync::atomic::AtomicU64,
}

impl SessionHub {
    /// A new hub.
    pub fn new() -> Arc<Self> {
        Arc::new(SessionHub::default())
    }

    fn agents(&self) -> MutexGuard<'_, HashMap<RunId, Attached>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the run's agent to stop, if it is connected.
    pub fn cancel(&self, run: &RunId) {
        if let Some(a) = self.agents().get(run) {
            let _ = a.tx.try_send(ServerToAgent::Cancel);
        }
    }

    /// Subscribes to the events committed for a run from now on.
    pub fn subscribe(&self, run: &RunId) -> tokio::sync::broadcast::Receiver<LiveEvent> {
        let mut viewers = self.viewers.lock().unwrap_or_else(|p| p.into_inner());
        viewers
            .entry(run.clone())
            .or_insert_with(|| tokio::sync::broadcast::channel(VIEWER_BUFFER).0)
            .subscribe()
    }

    /// Fans a committed event out to the run's viewers.
    fn publish(&self, run: &RunId, event: LiveEvent) {
        let mut viewers = self.viewers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = viewers.get(run) {
            if tx.receiver_count() == 0 {
                viewers.remove(run);
            } else {
                let _ = tx.send(event);
            }
        }
    }

    /// Sends stored follow-ups to the agent of execution `exec` of `run`, if
    /// it is connected here (the agent acknowledges each, and ignores one it
    /// already has).
    fn send_followups(&self, run: &RunId, exec: &ExecutionId, followups: Vec<FollowupRecord>) {
        let agents = self.agents();
        let Some(agent) = agents.get(run).filter(|a| &a.execution_id == exec) else {
            return;
        };
        for f in followups {
            let frame = ServerToAgent::Followup(hangar_protocol::session::Followup {
                message: f.message,
                from: f.sender,
                id: Some(f.id),
            });
            if agent.tx.try_send(frame).is_err() {
                // Still pending in the store: resent when the agent reconnects.
                tracing::warn!(run_id = %run, followup_id = f.id, "agent outbox full; follow-up deferred");
                return;
            }
        }
    }

    /// Runs whose agents are connected to this replica.
    pub fn connected_runs(&self) -> Vec<RunId> {
        self.agents().keys().cloned().collect()
    }

    /// Execution `exec` of `run` ended (or was superseded): closes its
    /// agent's session socket, if it is connected here. Its run token is
    /// refused from then on, so it cannot reconnect.
    pub fn close(&self, run: &RunId, exec: &ExecutionId) {
        let mut agents = self.agents();
        if agents.get(run).is_some_and(|a| &a.execution_id == exec)
            && let Some(agent) = agents.remove(run)
        {
            agent.closed.cancel();
        }
    }

    fn attach(
        &self,
        run: &RunId,
        execution_id: ExecutionId,
        tx: mpsc::Sender<ServerToAgent>,
    ) -> (u64, tokio_util::sync::CancellationToken) {
        let conn_id = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let closed = tokio_util::sync::CancellationToken::new();
        let replaced = self.agents().insert(
            run.clone(),
            Attached {
                conn_id,
                execution_id,
                tx,
                closed: closed.clone(),
            },
        );
        // An older connection of the run (a reconnect, or a superseded
        // execution) is closed.
        if let Some(old) = replaced {
            old.closed.cancel();
        }
        (conn_id, closed)
    }

    fn detach(&self, run: &RunId, conn_id: u64) {
        let mut agents = self.agents();
        if agents.get(run).is_some_and(|a| a.conn_id == conn_id) {
            agents.remove(run);
        }
    }

    /// The execution whose agent is connected for a run.
    pub fn connected_execution(&self, run: &RunId) -> Option<ExecutionId> {
        self.agents().get(run).map(|a| a.execution_id.clone())
    }
}

/// Sends the stored follow-ups the agent of `run` has not acknowledged, if
/// that agent is connected to this replica. Called when a follow-up is
/// stored here, when another replica signals one, and when an agent connects.
pub async fn deliver_followups(app: &AppState, run: &RunId) {
    let Some(exec) = app.sessions.hub.connected_execution(run) else {
        return;
    };
    match app.store.pending_followups(&exec).await {
        Ok(pending) if !pending.is_empty() => app.sessions.hub.send_followups(run, &exec, pending),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, run_id = %run, "cannot read pending follow-ups; they are sent when the agent reconnects");
        }
    }
}

/// Query of the agent's session socket. Other parameters are ignored.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SessionSocketParams {
    /// The execution the agent streams (must be its run token's).
    pub execution_id: Option<String>,
}

/// Upgrades an agent's session stream.
#[utoipa::path(get, path = "/agent/runs/{runId}/session", tag = "hangar", params(("runId" = String, Path, description = "The run")), responses((status = 101, description = "WebSocket: the agent session stream (run token only)"), crate::error::ProblemResponses))]
pub async fn session_socket(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<SessionSocketParams>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = crate::web::auth::check_websocket_origin(&headers, &app.public_url) {
        return e.into_response();
    }
    let principal = match authenticate(app.store.as_ref(), &headers).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Principal::RunToken {
        run_id: token_run,
        execution_id,
        ..
    } = principal
    else {
        return ApiError::Forbidden(
            "the session stream is written by the run's agent with its run token".into(),
        )
        .into_response();
    };
    if token_run.0 != run_id {
        return ApiError::run_not_found(&run_id).into_response();
    }
    if let Some(asked) = &query.execution_id
        && asked != execution_id.as_str()
    {
        return ApiError::Forbidden(format!(
            "the run token belongs to execution `{execution_id}`, not `{asked}`"
        ))
        .into_response();
    }
    let Ok(ws) = ws else {
        return ApiError::BadRequest("this endpoint speaks WebSocket".into()).into_response();
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| agent_connection(app, token_run, execution_id, socket))
}

async fn agent_connection(app: AppState, run: RunId, exec: ExecutionId, socket: WebSocket) {
    let _open = crate::metrics::get().websocket("agent");
    let (mut sink, mut stream) = socket.split();
    let last = match app.store.last_seq(&run, &exec).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, run_id = %run, "cannot read session position");
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };
    let (tx, rx) = mpsc::channel::<ServerToAgent>(SESSION_OUTBOX);
    if tx.try_send(ServerToAgent::Ack(Ack { seq: last })).is_err() {
        return;
    }
    let (conn_id, closed) = app.sessions.hub.attach(&run, exec.clone(), tx.clone());
    check_in(&app, &run, &exec, &tx).await;
    // Follow-ups stored while it was away (or before it first connected).
    deliver_followups(&app, &run).await;

    let writer = spawn_writer(app.store.clone(), sink, rx, app.config.heartbeat_interval);

    let read_timeout = app.config.read_timeout;
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(read_timeout, stream.next()) => n,
            _ = app.runtime.shutdown.cancelled() => break,
            _ = closed.cancelled() => {
                tracing::info!(run_id = %run, execution_id = %exec, "execution ended; closing its agent's session");
                break;
            }
        };
        let text = match next {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
            Ok(Some(Ok(_))) => continue,
        };
        let event = match Envelope::parse(&text).and_then(AgentToServer::from_envelope) {
            Ok(Some(AgentToServer::Event(e))) => e,
            Ok(Some(AgentToServer::FollowupAck(ack))) => {
                let at = hangar_protocol::Timestamp::now().unix_millis();
                if let Err(e) = app.store.followup_delivered(&exec, ack.id, at).await {
                    // Still pending: resent on reconnect, and the agent acks again.
                    tracing::warn!(error = %e, run_id = %run, followup_id = ack.id, "cannot record a follow-up delivery");
                }
                continue;
            }
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, run_id = %run, "ignoring undecodable session frame");
                continue;
            }
        };
        match commit(&app, &run, &exec, event).await {
            Ok(seq) => {
                if tx.send(ServerToAgent::Ack(Ack { seq })).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                // Not acked: the agent keeps it spooled and resends after reconnecting.
                tracing::error!(error = %e, run_id = %run, "could not store session event");
                break;
            }
        }
    }
    app.sessions.hub.detach(&run, conn_id);
    drop(tx);
    let _ = writer.await;
}

/// What the agent's arrival means for its run: a run cancelled before it
/// connected is told at once; a run its worker never reported started (the
/// stock oz-agent-worker sends no `task_started`) starts now, as in Oz,
/// fenced like `task_started` to the run's current execution.
async fn check_in(
    app: &AppState,
    run: &RunId,
    exec: &ExecutionId,
    tx: &mpsc::Sender<ServerToAgent>,
) {
    if let Ok(r) = app.store.run_any_team(run).await {
        use hangar_protocol::RunState;
        match r.state {
            // Cancelled before the agent connected: tell it at once.
            RunState::Cancelled => {
                let _ = tx.try_send(ServerToAgent::Cancel);
            }
            // The agent's check-in starts the run when its worker sent no
            // `task_started` (the stock oz-agent-worker never does), as in Oz.
            // Fenced like `task_started`: only the run's current execution.
            RunState::Pending | RunState::Claimed
                if r.current_execution_id.as_ref() == Some(exec) =>
            {
                let now = hangar_protocol::Timestamp::now().unix_millis();
                if let Err(e) = app.store.start(run, exec, now).await {
                    tracing::warn!(error = %e, run_id = %run, "cannot start the run at the agent's check-in");
                }
            }
            _ => {}
        }
    }
}

/// The session's writer: acks and control messages, and a ping every
/// heartbeat; it ends with the outbox or when the socket fails. Nothing
/// read from `store` leaves before it is durable.
fn spawn_writer(
    store: std::sync::Arc<dyn hangar_store::Store>,
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<ServerToAgent>,
    heartbeat: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    #[allow(clippy::disallowed_methods)] // the connection's writer, which ends with the connection
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    store.settled().await;
                    if sink.send(Message::Text(msg.to_envelope().to_text().into())).await.is_err() { break; }
                }
                _ = ticker.tick() => {
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break; }
                }
            }
        }
        let _ = sink.close().await;
    })
}

async fn commit(
    app: &AppState,
    run: &RunId,
    exec: &ExecutionId,
    event: SessionEvent,
) -> hangar_store::StoreResult<u64> {
    let (outcome, failure_reason) = match &event.body {
        EventBody::Status {
            state: Some(state),
            message,
            failure_reason,
        } if state.is_terminal() => (
            Some(Outcome {
                state: *state,
                message: message.clone(),
                error_code: None,
            }),
            // Only the reasons of a preparation the agent does itself.
            failure_reason
                .as_deref()
                .map(FailureReason::from_wire)
                .filter(|r| {
                    matches!(
                        r,
                        FailureReason::WorkspaceSetup | FailureReason::SetupCommand
                    )
                }),
        ),
        _ => (None, None),
    };
    let started = std::time::Instant::now();
    let seq = app
        .store
        .append_events(run, exec, std::slice::from_ref(&event))
        .await?;
    crate::metrics::get().events_committed(1, started.elapsed());
    app.sessions.hub.publish(
        run,
        LiveEvent {
            execution_id: exec.clone(),
            event: event.clone(),
        },
    );
    if let Some(reason) = &failure_reason {
        // The agent failed preparing the environment itself (a stock
        // worker's `--environment`): its reason outlives the worker's
        // generic `agent_invocation`.
        app.store.note_failure_reason(exec, reason.as_str()).await?;
    }
    if let Some(outcome) = outcome {
        let t = app.store.report_outcome(run, exec, &outcome).await?;
        tracing::info!(run_id = %run, state = %outcome.state, transition = ?t, "agent reported outcome");
        if t == hangar_store::Transition::Applied {
            crate::metrics::run_ended(app.store.as_ref(), run).await;
        }
        // An unmanaged run has no worker to end its execution: the outcome does.
        let record = app.store.execution(exec).await?;
        if record.worker_id.as_str() == hangar_store::LOCAL_WORKER_ID {
            let end = hangar_store::ExecutionEnd {
                outcome,
                exit_code: None,
                failure_reason: failure_reason.map(|r| r.as_str().to_owned()),
                at: hangar_protocol::Timestamp::now().unix_millis(),
            };
            app.store.finish_execution(run, exec, &end).await?;
        }
    }
    Ok(seq)
}
