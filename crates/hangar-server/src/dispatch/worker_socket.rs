//! The worker WebSocket: `GET /api/v1/selfhosted/worker/ws?worker_id=<ID>`.
//!
//! One task reads frames and applies them through the store (fenced by
//! execution); a writer task owned by the connection sends queued frames and
//! pings. A worker that sends nothing for `read_timeout` is disconnected.
//!
//! Who may connect (scenario S8): a worker token, as the worker id or under
//! the pool it is bound to, or a team key that belongs to no user (what
//! `oz-agent-worker` and `hangar up`'s local worker use), never a personal
//! key, a dashboard session or a run token ([`authenticate_worker`]).
//!
//! One connection per worker id: a second one is refused with 409 (held on
//! this replica, or on another one per the shared registry), unless it
//! presents the same credential and the old connection is dead. A worker back from a network cut is let in promptly:
//! its old connection is probed with a ping ([`Liveness::answers`]) and,
//! when it missed its pong or does not answer within [`probe_wait`], closed.

use crate::AppState;
use crate::auth::{WorkerCredential, authenticate_worker};
use crate::dispatch::{Occupant, Registration, WORKER_OUTBOX, WorkerKey};
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
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Largest frame accepted from a worker.
const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// How long a closing connection's writer gets to send its close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for the optional `worker_hello` before registering without it.
const HELLO_WAIT: Duration = Duration::from_secs(2);

pub use hangar_protocol::worker::WORKER_ID_RULE;

/// Validates a worker id: what `--host` must match exactly.
pub fn validate_worker_id(id: &str) -> ApiResult<()> {
    if id.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "the `worker_id` query parameter is required; {WORKER_ID_RULE}"
        )));
    }
    // The query string is decoded leniently: bytes that are not UTF-8 arrive
    // as U+FFFD, which is refused with them.
    if !hangar_protocol::worker::is_valid_worker_id(id) {
        return Err(ApiError::BadRequest(format!(
            "worker id `{}` is invalid; {WORKER_ID_RULE}",
            id.escape_debug()
        )));
    }
    Ok(())
}

/// Worker ids the server keeps for itself (`local:unmanaged` holds unmanaged runs).
pub const RESERVED_WORKER_PREFIX: &str = "local:";

/// How a connection shows it is alive, and how a reconnection of its worker
/// closes it once it is found dead.
#[derive(Debug)]
pub struct Liveness {
    /// When the worker last sent anything (a frame, a ping or a pong).
    heard: watch::Sender<Instant>,
    /// The same, in ms since the epoch, for the shared registry.
    heard_at: AtomicI64,
    /// When the writer last sent a ping.
    pinged: Mutex<Option<Instant>>,
    /// Asks the writer to ping now.
    probe: Notify,
    /// Ends the connection.
    closed: CancellationToken,
}

impl Liveness {
    fn new() -> Arc<Self> {
        Arc::new(Liveness {
            heard: watch::Sender::new(Instant::now()),
            heard_at: AtomicI64::new(Timestamp::now().unix_millis()),
            pinged: Mutex::new(None),
            probe: Notify::new(),
            closed: CancellationToken::new(),
        })
    }

    fn heard_now(&self) {
        self.heard.send_replace(Instant::now());
        self.heard_at
            .store(Timestamp::now().unix_millis(), Ordering::Relaxed);
    }

    /// When the worker was last heard (ms since the epoch).
    pub fn heard_at(&self) -> i64 {
        self.heard_at.load(Ordering::Relaxed)
    }

    fn pinged_now(&self) {
        *self.pinged.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the worker at the other end still answers: it has not missed
    /// a pong for longer than `wait`, and answers a ping sent now within `wait`.
    pub async fn answers(&self, wait: Duration) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        let start = Instant::now();
        let heard = *self.heard.borrow();
        let pinged = *self.pinged.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pinged
            && p > heard
            && start.duration_since(p) > wait
        {
            return false; // its last ping went unanswered
        }
        let mut seen = self.heard.subscribe();
        self.probe.notify_one();
        matches!(
            tokio::time::timeout(wait, seen.wait_for(|t| *t >= start)).await,
            Ok(Ok(_))
        )
    }

    /// Ends the connection (its reader stops, then it unregisters).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Whether [`Liveness::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// How long a connection's old one gets to answer a ping before it counts
/// as dead: a heartbeat, within bounds (a worker waits no longer than this
/// to get back in after a network cut).
pub fn probe_wait(heartbeat: Duration) -> Duration {
    heartbeat.clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// Closes this replica's worker connections whose credential was revoked
/// or has expired since they connected (each replica checks its own, as it
/// refreshes the registry): expiring a worker token cuts its worker off
/// within a refresh interval, and it cannot reconnect.
pub async fn close_revoked(app: &AppState) {
    let now = Timestamp::now().unix_millis();
    let mut by_team: HashMap<i64, Vec<(String, String, Arc<Liveness>)>> = HashMap::new();
    for (team, worker_id, credential_id, liveness) in app.dispatcher.connections() {
        if !liveness.is_closed() {
            by_team
                .entry(team)
                .or_default()
                .push((worker_id, credential_id, liveness));
        }
    }
    for (team, connections) in by_team {
        let active = async {
            let mut active: std::collections::HashSet<String> = app
                .store
                .list_worker_tokens(team)
                .await?
                .into_iter()
                .filter(|t| t.is_active(now))
                .map(|t| t.id)
                .collect();
            active.extend(
                app.store
                    .list_api_keys(team)
                    .await?
                    .into_iter()
                    .filter(|k| k.is_active(now))
                    .map(|k| k.id),
            );
            StoreResult::Ok(active)
        };
        let active = match active.await {
            Ok(a) => a,
            Err(e) => {
                // Keep the connections: a store hiccup is no revocation.
                tracing::warn!(error = %e, team_id = team, "cannot check the workers' credentials");
                continue;
            }
        };
        for (worker_id, credential_id, liveness) in connections {
            if !active.contains(&credential_id) {
                tracing::warn!(
                    worker_id,
                    credential_id,
                    "disconnecting a worker: its credential was revoked or has expired"
                );
                liveness.close();
            }
        }
    }
}

/// Refuses (409) a connection for a worker id that is already connected,
/// unless it comes with the same credential and the old connection is dead:
/// then that one is closed to let it in. Never a silent takeover.
async fn admit(app: &AppState, credential: &WorkerCredential, worker_id: &str) -> ApiResult<()> {
    let team_id = credential.team_id();
    let other_credential = || {
        ApiError::Conflict(format!(
            "worker `{worker_id}` is already connected with another credential; a second \
             connection never takes it over: stop the other worker, or pick another `--worker-id`"
        ))
    };
    match app.dispatcher.occupant(team_id, worker_id) {
        Occupant::Free => {}
        Occupant::Connecting => {
            return Err(ApiError::Conflict(format!(
                "worker `{worker_id}` is connecting on another connection right now; retry shortly"
            )));
        }
        Occupant::Connected {
            credential_id,
            liveness,
        } => {
            if credential_id != credential.id() {
                return Err(other_credential());
            }
            if liveness
                .answers(probe_wait(app.config.heartbeat_interval))
                .await
            {
                return Err(ApiError::Conflict(format!(
                    "worker `{worker_id}` is already connected with this credential and its \
                     connection is alive; stop the other worker process with this id, or give \
                     this one another `--worker-id`"
                )));
            }
            tracing::warn!(
                worker_id,
                "the worker's previous connection does not answer pings; closing it for its reconnection"
            );
            liveness.close();
        }
    }
    // Held by another replica: its presence row is fresh while that replica
    // refreshes it. Only the same credential may connect here, and only once
    // the worker has gone silent there: its last-heard time, published with
    // each refresh, is older than a heartbeat, a refresh and a probe (a live
    // worker answers a ping every heartbeat). That replica drops the dead
    // connection itself at its read timeout.
    let now = Timestamp::now().unix_millis();
    let refresh = crate::dispatch::presence::refresh_interval(app.config.worker_lost_timeout);
    let fresh = 2 * refresh + Duration::from_secs(1);
    let silent_after =
        app.config.heartbeat_interval + refresh + probe_wait(app.config.heartbeat_interval);
    let held_elsewhere = app
        .store
        .list_workers(team_id)
        .await?
        .into_iter()
        .find(|w| w.worker_id == worker_id)
        .filter(|w| {
            w.connected
                && w.replica_id != app.replica_id
                && now - w.last_seen <= fresh.as_millis() as i64
        });
    if let Some(row) = held_elsewhere {
        if row.credential_id.as_deref() != Some(credential.id()) {
            return Err(other_credential());
        }
        let heard = row.heard_at.unwrap_or(row.last_seen);
        if now - heard <= silent_after.as_millis() as i64 {
            return Err(ApiError::Conflict(format!(
                "worker `{worker_id}` is connected to another server replica with this \
                 credential and was heard from {}s ago; retry once that connection is found \
                 dead (no answer for {}s)",
                (now - heard).max(0) / 1000,
                silent_after.as_secs()
            )));
        }
        tracing::warn!(
            worker_id,
            replica_id = %row.replica_id,
            "the worker's connection to another replica has gone silent; letting its reconnection in"
        );
    }
    Ok(())
}

/// What one worker connection has done, for reports that name no execution
/// (the stock oz-agent-worker never sends `execution_id`).
struct ConnView {
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
    fn opened_now() -> ConnView {
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
    ) -> StoreResult<Option<hangar_store::ExecutionRecord>> {
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
        if answered.iter().any(|e| e == exec.id.as_str()) || exec.created_at < self.opened_at {
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

/// Upgrades an authenticated worker connection.
#[utoipa::path(get, path = "/selfhosted/worker/ws", tag = "hangar", params(("worker_id" = String, Query, description = "The worker id")), responses((status = 101, description = "WebSocket: the worker protocol (PROTOCOL.md section 2)"), crate::error::ProblemResponses))]
pub async fn worker_socket(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = crate::web::auth::check_websocket_origin(&headers, &app.public_url) {
        return e.into_response();
    }
    let credential = match authenticate_worker(app.store.as_ref(), &headers).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // A query that does not decode (say, a `worker_id` that is not UTF-8)
    // gets a problem saying what an id may be, not axum's plain-text 400.
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return ApiError::BadRequest(format!(
                "the `worker_id` query parameter cannot be read ({}); {WORKER_ID_RULE}",
                e.body_text()
            ))
            .into_response();
        }
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
    if let WorkerCredential::WorkerToken { binding, .. } = &credential
        && !binding.allows(&worker_id)
    {
        return ApiError::Forbidden(format!(
            "this worker token is bound to {binding}, so it cannot connect as worker \
             `{worker_id}`: start the worker with a matching `--worker-id`, or create a token \
             for it with `hangar worker token create --worker-id {worker_id}`"
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
    if let Err(e) = admit(&app, &credential, &worker_id).await {
        return e.into_response();
    }
    match &credential {
        WorkerCredential::WorkerToken { token_id, .. } => {
            let now = Timestamp::now().unix_millis();
            if let Err(e) = app.store.worker_token_used(token_id, now).await {
                tracing::warn!(error = %e, worker_id, "could not record the worker token's use");
            }
        }
        WorkerCredential::TeamKey { key_id, .. } => {
            tracing::debug!(worker_id, key_id, "worker connecting with a team API key");
        }
    }
    ws.max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| connection(app, credential, worker_id, socket))
}

/// One text frame from a worker, decoded.
#[derive(Debug)]
enum Frame {
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
struct UnreadableReport {
    /// Message type.
    kind: String,
    /// The task it names.
    task_id: String,
    /// The execution it names, if any.
    execution_id: Option<String>,
    /// Why it did not decode.
    error: String,
}

fn decode(text: &str) -> Frame {
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

async fn connection(
    app: AppState,
    credential: WorkerCredential,
    worker_id: String,
    socket: WebSocket,
) {
    let _open = crate::metrics::get().websocket("worker");
    let team_id = credential.team_id();
    // Before registration: nothing can be assigned on this connection earlier.
    let view = ConnView::opened_now();
    let (mut sink, mut stream) = socket.split();
    let liveness = Liveness::new();

    // A Hangar worker sends `worker_hello` first; an Oz worker sends nothing until it has news.
    let mut first: Option<Frame> = None;
    let mut hello: Option<WorkerHello> = None;
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(HELLO_WAIT, stream.next()).await
    {
        match decode(&text) {
            Frame::Message(WorkerToServer::WorkerHello(h)) => hello = Some(h),
            other => first = Some(other),
        }
    }

    let (tx, mut rx) = mpsc::channel::<ServerToWorker>(WORKER_OUTBOX);
    let registered = app
        .dispatcher
        .connect(
            team_id,
            &worker_id,
            credential.id(),
            liveness.clone(),
            tx,
            hello,
        )
        .await;
    let registration = match registered {
        Ok(r) => r,
        Err(hangar_store::StoreError::Conflict(why)) => {
            // Another connection registered since this one was admitted.
            tracing::warn!(worker_id, "{why}; closing the second connection");
            let frame = axum::extract::ws::CloseFrame {
                code: axum::extract::ws::close_code::POLICY,
                reason: "worker id already connected".into(),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, worker_id, "could not register worker");
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };

    let heartbeat = app.config.heartbeat_interval;
    let pinger = liveness.clone();
    #[allow(clippy::disallowed_methods)] // the connection's writer, which ends with the connection
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
                    pinger.pinged_now();
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break; }
                }
                _ = pinger.probe.notified() => {
                    pinger.pinged_now();
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break; }
                }
            }
        }
        let _ = sink.close().await;
    });

    crate::dispatch::presence::connected(&app, &registration).await;
    let key = registration.key.clone();
    if let Some(msg) = first {
        handle(&app, &key, &view, msg).await;
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
            _ = liveness.closed.cancelled() => {
                tracing::info!(
                    worker_id,
                    "closing the connection: its worker reconnected, or its credential was revoked"
                );
                break;
            }
        };
        if matches!(next, Ok(Some(Ok(_)))) {
            liveness.heard_now();
        }
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
            Ok(Some(Ok(Message::Text(text)))) => handle(&app, &key, &view, decode(&text)).await,
            Ok(Some(Ok(_))) => {} // ping, pong, binary: liveness only
        }
    }
    // Ended: a reconnection of this worker need not probe it.
    liveness.close();
    finish(&app, &registration, writer).await;
}

async fn finish(
    app: &AppState,
    registration: &Registration,
    mut writer: tokio::task::JoinHandle<()>,
) {
    app.dispatcher.disconnect(registration);
    crate::dispatch::presence::disconnected(app, registration).await;
    // Disconnecting drops the outbox sender, so the writer sends a close frame
    // and ends; a peer that does not read gets no longer than CLOSE_WAIT.
    if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
        writer.abort();
        let _ = writer.await;
    }
}

async fn handle(app: &AppState, key: &WorkerKey, view: &ConnView, frame: Frame) {
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
    exec: &hangar_store::ExecutionRecord,
    end: &ExecutionEnd,
) -> StoreResult<Transition> {
    let t = app
        .store
        .finish_execution(&exec.run_id, &exec.id, end)
        .await?;
    app.dispatcher.release(key, &exec.id);
    app.sessions.close(&exec.run_id, &exec.id);
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

async fn apply(
    app: &AppState,
    key: &WorkerKey,
    view: &ConnView,
    msg: WorkerToServer,
) -> StoreResult<()> {
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
            let t = store.claim(&exec.run_id, &exec.id, now).await?;
            if t == Transition::AlreadyTerminal {
                // Cancelled between assignment and claim.
                app.dispatcher.send_cancellation(key.0, &exec);
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
            store.reject(&exec.run_id, &exec.id, &m.reason, now).await?;
            app.dispatcher.refused(key, &exec.id);
        }
        WorkerToServer::TaskStarted(m) => {
            let Some(exec) = view
                .resolve(app, key, &m.task_id, Some(&m.execution_id), Answer::Report)
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
        }
        WorkerToServer::TaskFailed(m) => {
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
        }
    }
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
