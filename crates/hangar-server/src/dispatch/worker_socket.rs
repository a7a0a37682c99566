//! The worker WebSocket: `GET /api/v1/selfhosted/worker/ws?worker_id=<ID>`.
//!
//! One task per connection reads frames and applies them through the store
//! (fenced by execution), and writes the queued frames and pings. It keeps
//! no timer: the replica's [`sweep`] asks each connection for its ping every
//! heartbeat and disconnects a worker that sent nothing for `read_timeout`.
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

mod admission;
mod liveness;
mod reports;

pub use admission::close_revoked;
pub use liveness::{Liveness, probe_wait, sweep, sweep_interval};
pub(crate) use reports::SANDBOX_NONE_EVENT;

use admission::admit;
use reports::{ConnView, Frame, decode, handle};

use crate::AppState;
use crate::auth::{WorkerCredential, authenticate_worker};
use crate::dispatch::{Registration, WORKER_OUTBOX};
use crate::error::{ApiError, ApiResult};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hangar_protocol::worker::{ServerToWorker, WorkerHello, WorkerToServer};
use hangar_protocol::{Timestamp, WorkerId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest frame accepted from a worker.
const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// A connection's read buffer, filled (zeroed) when it is created: the
/// worker protocol's frames are a few hundred bytes, and tungstenite's
/// default (128 KiB) was most of an idle connection's memory. A larger
/// frame grows the buffer as it arrives. Writes are not buffered past the
/// frame being sent (`write_buffer_size(0)`): every send flushes anyway.
pub(crate) const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How long a closing connection gets to send its close frame.
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

/// Query of the worker socket. Other parameters are ignored: workers of
/// other versions may send more.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkerSocketParams {
    /// The worker id
    #[param(value_type = String, required = true)]
    pub worker_id: Option<String>,
}

/// Upgrades an authenticated worker connection.
#[utoipa::path(get, path = "/selfhosted/worker/ws", tag = "hangar", params(WorkerSocketParams), responses((status = 101, description = "WebSocket: the worker protocol (PROTOCOL.md section 2)"), crate::error::ProblemResponses))]
pub async fn worker_socket(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<WorkerSocketParams>, axum::extract::rejection::QueryRejection>,
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
    let worker_id = query.worker_id.unwrap_or_default();
    if let Err(e) = validate_worker_id(&worker_id) {
        return e.into_response();
    }
    let worker_id = WorkerId::from(worker_id);
    if worker_id.as_str().starts_with(RESERVED_WORKER_PREFIX) {
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
                tracing::warn!(error = %e, worker_id = worker_id.as_str(), "could not record the worker token's use");
            }
        }
        WorkerCredential::TeamKey { key_id, .. } => {
            tracing::debug!(
                worker_id = worker_id.as_str(),
                key_id,
                "worker connecting with a team API key"
            );
        }
    }
    ws.max_message_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection(app, credential, worker_id, socket))
}

async fn connection(
    app: AppState,
    credential: WorkerCredential,
    worker_id: WorkerId,
    mut socket: WebSocket,
) {
    let _open = crate::metrics::get().websocket("worker");
    // Before registration: nothing can be assigned on this connection earlier.
    let view = ConnView::opened_now();
    let liveness = Liveness::new();

    // A Hangar worker sends `worker_hello` first; an Oz worker sends nothing until it has news.
    let mut first: Option<Frame> = None;
    let mut hello: Option<WorkerHello> = None;
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(HELLO_WAIT, socket.next()).await
    {
        match decode(&text) {
            Frame::Message(WorkerToServer::WorkerHello(h)) => hello = Some(h),
            other => first = Some(other),
        }
    }

    let (tx, mut rx) = mpsc::channel::<ServerToWorker>(WORKER_OUTBOX);
    let registration = match register(&app, &credential, &worker_id, &liveness, tx, hello).await {
        Ok(r) => r,
        Err(close) => {
            let _ = socket.send(Message::Close(close)).await;
            return;
        }
    };

    crate::dispatch::presence::connected(&app, &registration).await;
    let key = registration.key.clone();
    if let Some(msg) = first {
        handle(&app, &key, &view, msg).await;
    }
    // Every frame from the worker (its pings and pongs included) proves it is
    // alive; at most once per half heartbeat that renews its leases.
    let renew_every = app.config.heartbeat_interval / 2;
    let mut renewed = tokio::time::Instant::now();
    // One task reads and writes: it has no timer of its own (the replica's
    // `sweep` asks for pings and closes a silent worker through `liveness`).
    loop {
        tokio::select! {
            () = app.runtime.shutdown.cancelled() => break,
            () = liveness.closed.cancelled() => {
                if liveness.went_silent() {
                    tracing::warn!(
                        worker_id = worker_id.as_str(),
                        "worker silent past the read timeout; disconnecting"
                    );
                } else {
                    tracing::info!(
                        worker_id = worker_id.as_str(),
                        "closing the connection: its worker reconnected, or its credential was revoked"
                    );
                }
                break;
            }
            msg = rx.recv() => {
                // None: unregistered (a newer connection of the worker took its place).
                let Some(msg) = msg else { break };
                // Assignments and cancellations follow the write that made
                // them, answered once durable: no `Store::settled` here (it
                // would hold them for other writers' syncs).
                let text = msg.to_envelope().to_text();
                if send(&mut socket, &liveness, Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            () = liveness.probe.notified() => {
                liveness.pinged_now();
                if send(&mut socket, &liveness, Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            next = socket.next() => {
                let Some(Ok(message)) = next else { break };
                liveness.heard_now();
                if renewed.elapsed() >= renew_every && app.dispatcher.holds_work(&registration) {
                    renewed = tokio::time::Instant::now();
                    if let Err(e) = app.dispatcher.renew(&registration).await {
                        tracing::warn!(error = %e, worker_id = worker_id.as_str(), "could not renew the worker's leases");
                    }
                }
                match message {
                    Message::Close(_) => break,
                    // Boxed: the idle connection's future stays small (a
                    // report's store calls live on the heap only while applied).
                    Message::Text(text) => Box::pin(handle(&app, &key, &view, decode(&text))).await,
                    _ => {} // ping, pong, binary: liveness only
                }
            }
        }
    }
    // Ended: a reconnection of this worker need not probe it.
    liveness.close();
    finish(&app, &registration, socket).await;
}

/// Sends one frame, unless the connection is closed meanwhile (a worker
/// that stopped reading must not keep its connection open past its close).
async fn send(socket: &mut WebSocket, liveness: &Liveness, message: Message) -> Result<(), ()> {
    tokio::select! {
        sent = socket.send(message) => sent.map_err(|_| ()),
        () = liveness.closed.cancelled() => Err(()),
    }
}

/// Registers the connection with the dispatcher. When it is refused
/// (another connection registered since this one was admitted) or fails,
/// answers the close frame to send.
async fn register(
    app: &AppState,
    credential: &WorkerCredential,
    worker_id: &WorkerId,
    liveness: &Arc<Liveness>,
    tx: mpsc::Sender<ServerToWorker>,
    hello: Option<WorkerHello>,
) -> Result<Registration, Option<CloseFrame>> {
    let registered = app
        .dispatcher
        .connect(
            credential.team_id(),
            worker_id,
            credential.id(),
            liveness.clone(),
            tx,
            hello,
        )
        .await;
    match registered {
        Ok(r) => Ok(r),
        Err(hangar_store::StoreError::Conflict(why)) => {
            // Another connection registered since this one was admitted.
            tracing::warn!(
                worker_id = worker_id.as_str(),
                "{why}; closing the second connection"
            );
            Err(Some(CloseFrame {
                code: axum::extract::ws::close_code::POLICY,
                reason: "worker id already connected".into(),
            }))
        }
        Err(e) => {
            tracing::error!(error = %e, worker_id = worker_id.as_str(), "could not register worker");
            Err(None)
        }
    }
}

async fn finish(app: &AppState, registration: &Registration, mut socket: WebSocket) {
    app.dispatcher.disconnect(registration);
    crate::dispatch::presence::disconnected(app, registration).await;
    // A peer that does not read gets no longer than CLOSE_WAIT for its close frame.
    let _ = tokio::time::timeout(CLOSE_WAIT, socket.close()).await;
}
