//! `GET /api/v1/agent/runs/{id}/events`: a run's session, live, for viewers.
//!
//! Owns the viewer side of the session hub: Server-Sent Events (and the same
//! frames over a WebSocket for editors, who may also steer through it). The
//! contract, which the dashboard and the public links build on:
//!
//! ```text
//! GET /api/v1/agent/runs/{id}/events        (Accept: text/event-stream)
//!   query: follow=true|false (default true), after=<event id>
//!          (same as the Last-Event-ID header; the header wins)
//!   each committed session event:
//!     id: <execution_number>.<seq>   (1-based index of the run's executions
//!                                     that have events; opaque to clients)
//!     event: session
//!     data: {"execution_id", "seq", "at", "kind", …the SessionEvent fields}
//!   a run state change (no id):  event: run_state  data: {"state", "status_message"}
//!   end of stream:               event: end        data: {"state"}   then close
//!   access lost (share revoked): event: revoked    data: {"detail"}  then close
//!   a keep-alive comment every 15 s
//! ```
//!
//! `end` is sent once the run is terminal and every committed event was
//! delivered; with `follow=false` right after the replay (the state may then
//! be non-terminal).
//!
//! Replay then live, with no gap and no duplicate: the stream subscribes to
//! the hub first, then replays the store after the cursor, then forwards live
//! events that continue the sequence. Anything else (a viewer that lagged the
//! hub's buffer, an event of an execution it has not seen yet, an agent
//! connected to another replica) is re-read from the store, so what a live
//! viewer sees is exactly the stored transcript a replay shows.
//!
//! `GET /api/v1/agent/runs/{id}/events/ws` carries the same frames as JSON
//! text (`{"id", "event", "data"}`) and accepts `{"type":"followup","message"}`
//! and `{"type":"cancel"}` from callers with edit access; each is answered
//! with an `accepted` or an `error` frame (`{"status", "detail"}`; a viewer
//! without edit access gets 403). After `end` the socket stays open for
//! input; a follow-up that reopens the ended run streams its new execution
//! on the same socket. `revoked` closes it.

use crate::AppState;
use crate::api::{QueryResult, read_query};
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::sessions::hub::LiveEvent;
use crate::sessions::sharing::{self, Access};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hangar_protocol::session::EventBody;
use hangar_protocol::{ExecutionId, RunState, TranscriptEvent};
use hangar_store::RunRecord;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// Frames buffered between the stream's pump and a slow connection.
const FRAME_BUFFER: usize = 256;
/// How often the run's state is re-read (and, when its agent is connected to
/// another replica, its new events).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Keep-alive comment period.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a terminal run's stream waits for its agent's last events.
const END_GRACE: Duration = Duration::from_secs(3);
/// Largest frame accepted from a WebSocket viewer.
const MAX_WS_INPUT: usize = 512 * 1024;

/// Position in a run's session: the `id` of an SSE `session` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCursor {
    /// 1-based index of the execution among the run's executions with events.
    pub execution: u32,
    /// Sequence number within that execution.
    pub seq: u64,
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.execution, self.seq)
    }
}

impl EventCursor {
    /// Parses `N.M` as sent in `id:`; a bare `N` means "up to execution N's
    /// start". `N` has 1 to 9 digits and `M` 1 to 19, as the document states
    /// (`^[0-9]{1,9}(\.[0-9]{1,19})?$`), so every id of that form parses.
    pub fn parse(raw: &str) -> ApiResult<Self> {
        let bad = || {
            ApiError::BadRequest(format!(
                "event id `{raw}` is not an id this stream sent (`<execution>.<seq>`, e.g. `1.42`); \
                 omit it to replay from the start"
            ))
        };
        let (e, s) = raw.split_once('.').unwrap_or((raw, "0"));
        let digits = |s: &str, max: usize| {
            (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(e, 9) || !digits(s, 19) {
            return Err(bad());
        }
        Ok(EventCursor {
            execution: e.parse().map_err(|_| bad())?,
            seq: s.parse().map_err(|_| bad())?,
        })
    }
}

/// How an open stream re-checks that its viewer may still watch: when the
/// run's grants change, and every [`CREDENTIAL_RECHECK`] (a revoked key, a
/// logged-out or disabled account, a demoted user).
#[derive(Debug, Clone)]
pub enum AccessCheck {
    /// A caller with credentials: they are authenticated again from the
    /// request's credential headers, then need `View`
    /// ([`sharing::require_access`]).
    Caller(CallerCredentials),
    /// A public link: its token must still resolve to the run ([`sharing::public_link`]).
    PublicLink(String),
}

/// The credential headers of the request that opened a stream (the bearer
/// key or the dashboard cookie), kept to authenticate the viewer again.
#[derive(Debug, Clone)]
pub struct CallerCredentials(HeaderMap);

impl CallerCredentials {
    /// Keeps only `Authorization` and `Cookie` of `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut kept = HeaderMap::new();
        for name in [
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ] {
            for value in headers.get_all(&name) {
                kept.append(name.clone(), value.clone());
            }
        }
        CallerCredentials(kept)
    }
}

/// How often an open stream re-validates its viewer's credential even when
/// no grant changed.
pub const CREDENTIAL_RECHECK: Duration = Duration::from_secs(2);

impl AccessCheck {
    async fn still_allowed(&self, state: &AppState, run: &RunRecord) -> ApiResult<()> {
        match self {
            AccessCheck::Caller(credentials) => {
                let principal = authenticate(state.store.as_ref(), &credentials.0).await?;
                sharing::require_access(state, &principal, run, Access::View).await?;
            }
            AccessCheck::PublicLink(token) => {
                let (_, linked) = sharing::public_link(state, token).await?;
                if linked.id != run.id {
                    return Err(ApiError::NotFound("this share link was revoked".into()));
                }
            }
        }
        Ok(())
    }
}

/// One thing sent to a viewer.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A committed session event.
    Session {
        /// Its position.
        id: EventCursor,
        /// `{"execution_id", "seq", "at", "kind", …}`.
        data: serde_json::Value,
    },
    /// The run's state changed.
    RunState {
        /// `{"state", "status_message"}`.
        data: serde_json::Value,
    },
    /// The stream is complete.
    End {
        /// The run's state.
        state: RunState,
    },
    /// The viewer lost access.
    Revoked {
        /// Why.
        detail: String,
    },
}

impl Frame {
    fn name(&self) -> &'static str {
        match self {
            Frame::Session { .. } => "session",
            Frame::RunState { .. } => "run_state",
            Frame::End { .. } => "end",
            Frame::Revoked { .. } => "revoked",
        }
    }

    fn data(&self) -> serde_json::Value {
        match self {
            Frame::Session { data, .. } | Frame::RunState { data } => data.clone(),
            Frame::End { state } => serde_json::json!({ "state": state }),
            Frame::Revoked { detail } => serde_json::json!({ "detail": detail }),
        }
    }

    fn id(&self) -> Option<String> {
        match self {
            Frame::Session { id, .. } => Some(id.to_string()),
            _ => None,
        }
    }

    fn to_sse(&self) -> Event {
        let event = Event::default()
            .event(self.name())
            .data(self.data().to_string());
        match self.id() {
            Some(id) => event.id(id),
            None => event,
        }
    }

    /// The WebSocket form: `{"id", "event", "data"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "id": self.id(), "event": self.name(), "data": self.data() })
    }
}

/// Query of the session stream routes, as sent.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// false: replay and end
    #[param(value_type = Option<bool>)]
    pub follow: Option<String>,
    /// Resume after this event id
    #[param(pattern = r"^[0-9]{1,9}(\.[0-9]{1,19})?$")]
    pub after: Option<String>,
}

/// `follow` and the resume cursor of a stream request (also used by the
/// public-link stream in `api::shares`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamQuery {
    pub(crate) follow: bool,
    pub(crate) after: Option<EventCursor>,
}

/// Reads a stream request's query; the `Last-Event-ID` header wins over `after`.
pub(crate) fn parse_query(
    query: QueryResult<StreamParams>,
    headers: &HeaderMap,
) -> ApiResult<StreamQuery> {
    let params = read_query(query, "this route takes `follow` and `after`")?;
    let follow = match params.follow.as_deref() {
        None | Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`follow` must be `true` or `false`, got `{other}`"
            )));
        }
    };
    let mut q = StreamQuery {
        follow,
        after: params
            .after
            .as_deref()
            .map(EventCursor::parse)
            .transpose()?,
    };
    if let Some(h) = headers.get("last-event-id") {
        let v = h.to_str().map_err(|_| {
            ApiError::BadRequest("the Last-Event-ID header is not valid text".into())
        })?;
        if !v.trim().is_empty() {
            q.after = Some(EventCursor::parse(v)?);
        }
    }
    Ok(q)
}

/// `GET /agent/runs/{id}/events`.
#[utoipa::path(get, path = "/agent/runs/{runId}/events", tag = "hangar", params(("runId" = String, Path, description = "The run"), StreamParams), responses((status = 200, description = "Server-Sent Events: the live session", content_type = "text/event-stream"), crate::error::ProblemResponses))]
pub async fn sse(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    query: QueryResult<StreamParams>,
) -> ApiResult<Response> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let query = parse_query(query, &headers)?;
    let run = app.runs().visible(&principal, &run_id).await?;
    sharing::require_access(&app, &principal, &run, Access::View).await?;
    Ok(event_stream(
        app,
        run,
        AccessCheck::Caller(CallerCredentials::from_headers(&headers)),
        query.after,
        query.follow,
    ))
}

/// Serves a run's session as Server-Sent Events (the contract in the module
/// doc): replays what was committed after `after` (everything when `None`),
/// then, with `follow`, streams live until the run ends or `who` loses access.
/// The caller has already checked that `who` may view `run`; public-link
/// routes pass [`AccessCheck::PublicLink`].
pub fn event_stream(
    state: AppState,
    run: RunRecord,
    who: AccessCheck,
    after: Option<EventCursor>,
    follow: bool,
) -> Response {
    event_stream_holding(state, run, who, after, follow, None)
}

/// [`event_stream`], keeping `slot` (a concurrency slot) until it ends.
pub fn event_stream_holding(
    state: AppState,
    run: RunRecord,
    who: AccessCheck,
    after: Option<EventCursor>,
    follow: bool,
    slot: Option<crate::rate_limit::StreamSlot>,
) -> Response {
    let rx = spawn_pump(state, run, who, after, follow);
    let viewer = crate::metrics::get().viewer();
    let stream = futures::stream::unfold((rx, slot, viewer), |(mut rx, slot, viewer)| async move {
        let frame = rx.recv().await?;
        Some((Ok::<Event, Infallible>(frame.to_sse()), (rx, slot, viewer)))
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies (nginx) must not buffer the stream.
    resp.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    resp
}

/// Starts the pump of one viewer; frames arrive on the returned channel,
/// which closes after `end` or `revoked`.
pub fn spawn_pump(
    state: AppState,
    run: RunRecord,
    who: AccessCheck,
    after: Option<EventCursor>,
    follow: bool,
) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    // Subscribe before anything is read from the store: nothing committed
    // from here on can be missed.
    let live = state.sessions.hub.subscribe(&run.id);
    let shares = state.sessions.shares.subscribe();
    let pump = Pump {
        state,
        run,
        who,
        cursor: after,
        numbers: HashMap::new(),
        tx,
        last_terminal_status: false,
        terminal_since: None,
    };
    let tasks = pump.state.runtime.tasks.clone();
    tasks.spawn(pump.run(live, shares, follow));
    rx
}

/// Why the pump stopped early.
struct Gone;

struct Pump {
    state: AppState,
    run: RunRecord,
    who: AccessCheck,
    /// Last event delivered (or the client's resume point).
    cursor: Option<EventCursor>,
    /// Execution numbers, from the store's order.
    numbers: HashMap<ExecutionId, u32>,
    tx: mpsc::Sender<Frame>,
    /// The last delivered event is the agent's terminal `status`.
    last_terminal_status: bool,
    /// When the run was first seen terminal.
    terminal_since: Option<Instant>,
}

impl Pump {
    async fn run(
        mut self,
        mut live: broadcast::Receiver<LiveEvent>,
        mut shares: broadcast::Receiver<hangar_protocol::RunId>,
        follow: bool,
    ) {
        if self.catch_up().await.is_err() {
            return;
        }
        if !follow {
            let state = self.run.state;
            let _ = self.send(Frame::End { state }).await;
            return;
        }
        if self.send(self.run_state_frame()).await.is_err() {
            return;
        }
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recheck = tokio::time::interval(CREDENTIAL_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.reset();
        let shutdown = self.state.runtime.shutdown.clone();
        loop {
            let step = tokio::select! {
                () = self.tx.closed() => return,
                () = shutdown.cancelled() => return,
                change = shares.recv() => match change {
                    Ok(run) if run != self.run.id => Ok(false),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.recheck_access().await,
                    Err(broadcast::error::RecvError::Closed) => Ok(false),
                },
                event = live.recv() => match event {
                    Ok(event) => self.on_live(event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(run_id = %self.run.id, missed, "viewer lagged; re-reading the store");
                        self.catch_up().await.map(|()| false)
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        live = self.state.sessions.hub.subscribe(&self.run.id);
                        self.catch_up().await.map(|()| false)
                    }
                },
                _ = poll.tick() => self.poll().await,
                _ = recheck.tick() => self.recheck_access().await,
            };
            match step {
                Ok(false) => {}
                Ok(true) | Err(Gone) => return,
            }
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), Gone> {
        self.tx.send(frame).await.map_err(|_| Gone)
    }

    fn run_state_frame(&self) -> Frame {
        Frame::RunState {
            data: serde_json::json!({
                "state": self.run.state,
                "status_message": self.run.status_message,
            }),
        }
    }

    /// Delivers every stored event after the cursor.
    async fn catch_up(&mut self) -> Result<(), Gone> {
        let events = match self.state.store.run_events(&self.run.id).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, run_id = %self.run.id, "cannot read the session; retrying at the next poll");
                return Ok(());
            }
        };
        for (exec, event) in events {
            let next = self.numbers.len() as u32 + 1;
            let number = *self.numbers.entry(exec.clone()).or_insert(next);
            let id = EventCursor {
                execution: number,
                seq: event.seq,
            };
            if self.cursor.is_some_and(|c| id <= c) {
                continue;
            }
            self.deliver(id, exec, event).await?;
        }
        Ok(())
    }

    async fn deliver(
        &mut self,
        id: EventCursor,
        exec: ExecutionId,
        event: hangar_protocol::session::SessionEvent,
    ) -> Result<(), Gone> {
        self.last_terminal_status = matches!(
            &event.body,
            EventBody::Status { state: Some(s), .. } if s.is_terminal()
        );
        let data = serde_json::to_value(TranscriptEvent {
            execution_id: exec.0,
            event,
        })
        .unwrap_or_default();
        self.send(Frame::Session { id, data }).await?;
        self.cursor = Some(id);
        Ok(())
    }

    /// A live event: forwarded when it continues the sequence, otherwise the
    /// store is re-read (it holds every event before it is published).
    async fn on_live(&mut self, live: LiveEvent) -> Result<bool, Gone> {
        let terminal = matches!(
            &live.event.body,
            EventBody::Status { state: Some(s), .. } if s.is_terminal()
        );
        let next_in_line = match (self.numbers.get(&live.execution_id), self.cursor) {
            (Some(&n), Some(c)) => {
                let id = EventCursor {
                    execution: n,
                    seq: live.event.seq,
                };
                if id <= c {
                    return Ok(false); // already delivered (a resend)
                }
                (n == c.execution && live.event.seq == c.seq + 1).then_some(id)
            }
            _ => None,
        };
        match next_in_line {
            Some(id) => self.deliver(id, live.execution_id, live.event).await?,
            None => self.catch_up().await?,
        }
        if terminal {
            return self.poll_state().await;
        }
        Ok(false)
    }

    async fn poll(&mut self) -> Result<bool, Gone> {
        if self
            .state
            .sessions
            .hub
            .connected_execution(&self.run.id)
            .is_none()
        {
            // The agent may be connected to another replica.
            self.catch_up().await?;
        }
        self.poll_state().await
    }

    /// Re-reads the run; announces a state change; ends the stream once the
    /// run is terminal and its last events are in.
    async fn poll_state(&mut self) -> Result<bool, Gone> {
        let fresh = match self.state.store.run_any_team(&self.run.id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, run_id = %self.run.id, "cannot re-read the run");
                return Ok(false);
            }
        };
        let changed =
            fresh.state != self.run.state || fresh.status_message != self.run.status_message;
        self.run = fresh;
        if changed {
            self.send(self.run_state_frame()).await?;
        }
        if !self.run.state.is_terminal() {
            self.terminal_since = None;
            return Ok(false);
        }
        let since = *self.terminal_since.get_or_insert_with(Instant::now);
        let agent_here = self.state.sessions.hub.connected_execution(&self.run.id);
        let waiting_for_agent =
            agent_here.is_some() && !self.last_terminal_status && since.elapsed() < END_GRACE;
        if waiting_for_agent {
            return Ok(false);
        }
        self.catch_up().await?;
        self.send(Frame::End {
            state: self.run.state,
        })
        .await?;
        Ok(true)
    }

    async fn recheck_access(&mut self) -> Result<bool, Gone> {
        match self.who.still_allowed(&self.state, &self.run).await {
            Ok(()) => Ok(false),
            Err(
                e @ (ApiError::Forbidden(_) | ApiError::NotFound(_) | ApiError::Unauthenticated(_)),
            ) => {
                tracing::info!(run_id = %self.run.id, "viewer lost access; closing its stream");
                let detail = match e {
                    ApiError::Forbidden(d)
                    | ApiError::NotFound(d)
                    | ApiError::Unauthenticated(d) => d,
                    _ => String::new(),
                };
                self.send(Frame::Revoked {
                    detail: format!("your access to this session was revoked: {detail}"),
                })
                .await?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(error = %e, run_id = %self.run.id, "cannot re-check a viewer's access");
                Ok(false)
            }
        }
    }
}

/// `GET /agent/runs/{id}/events/ws`: the same frames over a WebSocket, plus
/// follow-ups and cancel from editors.
#[utoipa::path(get, path = "/agent/runs/{runId}/events/ws", tag = "hangar", params(("runId" = String, Path, description = "The run")), responses((status = 101, description = "WebSocket: the live session"), crate::error::ProblemResponses))]
pub async fn websocket(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    query: QueryResult<StreamParams>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    crate::web::auth::check_websocket_origin(&headers, &app.public_url)?;
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let query = parse_query(query, &headers)?;
    let run = app.runs().visible(&principal, &run_id).await?;
    sharing::require_access(&app, &principal, &run, Access::View).await?;
    let ws = ws.map_err(|_| {
        ApiError::BadRequest(
            "this endpoint speaks WebSocket; for Server-Sent Events use /events".into(),
        )
    })?;
    Ok(ws.max_message_size(MAX_WS_INPUT).on_upgrade(move |socket| {
        viewer_socket(
            app,
            run,
            CallerCredentials::from_headers(&headers),
            query,
            socket,
        )
    }))
}

/// What a WebSocket viewer may send.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ViewerInput {
    Followup { message: String },
    Cancel,
}

async fn viewer_socket(
    app: AppState,
    run: RunRecord,
    credentials: CallerCredentials,
    query: StreamQuery,
    socket: WebSocket,
) {
    let _open = crate::metrics::get().websocket("viewer");
    let _viewer = crate::metrics::get().viewer();
    let (mut sink, mut stream) = socket.split();
    let who = AccessCheck::Caller(credentials.clone());
    let mut last = query.after;
    let mut frames = Some(spawn_pump(
        app.clone(),
        run.clone(),
        who.clone(),
        last,
        query.follow,
    ));
    loop {
        let next_frame = async {
            match frames.as_mut() {
                Some(f) => f.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = next_frame => {
                let Some(frame) = frame else {
                    // The stream ended; the socket stays open for input.
                    frames = None;
                    continue;
                };
                if let Frame::Session { id, .. } = &frame {
                    last = Some(*id);
                }
                let revoked = matches!(frame, Frame::Revoked { .. });
                let text = frame.to_json().to_string();
                if sink.send(Message::Text(text.into())).await.is_err() || revoked {
                    break;
                }
            }
            input = stream.next() => {
                let text = match input {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let reply = match handle_input(&app, &credentials, &run, &text).await {
                    Ok(data) => {
                        if data["reopened"] == true {
                            // A new execution: stream it from where this socket is.
                            frames = Some(spawn_pump(app.clone(), run.clone(), who.clone(), last, true));
                        }
                        serde_json::json!({"id": null, "event": "accepted", "data": data})
                    }
                    Err(e) => {
                        let p = e.problem();
                        serde_json::json!({"id": null, "event": "error", "data": {"status": p.status, "detail": p.detail}})
                    }
                };
                if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = sink.close().await;
}

async fn handle_input(
    app: &AppState,
    credentials: &CallerCredentials,
    run: &RunRecord,
    text: &str,
) -> ApiResult<serde_json::Value> {
    // Authenticated again: the key or account may have been revoked since the
    // socket opened.
    let principal = &authenticate(app.store.as_ref(), &credentials.0).await?;
    let input: ViewerInput = serde_json::from_str(text).map_err(|e| {
        ApiError::BadRequest(format!(
            "send {{\"type\":\"followup\",\"message\":\"…\"}} or {{\"type\":\"cancel\"}}: {e}"
        ))
    })?;
    // Re-read: the run may have ended or been reopened since the socket opened.
    let run = app.store.run_any_team(&run.id).await?;
    match input {
        ViewerInput::Followup { message } => app.runs().followup(principal, &run, &message).await,
        ViewerInput::Cancel => {
            sharing::require_access(app, principal, &run, Access::Edit).await?;
            let id = app.runs().cancel(run.team_id, &run.id).await?;
            Ok(serde_json::json!({ "type": "cancel", "run_id": id }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_and_order() {
        let c = EventCursor::parse("2.15").unwrap();
        assert_eq!(
            c,
            EventCursor {
                execution: 2,
                seq: 15
            }
        );
        assert_eq!(c.to_string(), "2.15");
        assert!(EventCursor::parse("1.99").unwrap() < c);
        assert_eq!(EventCursor::parse("3").unwrap().seq, 0);
        assert!(EventCursor::parse("x.1").is_err());
        assert!(EventCursor::parse("1.-2").is_err());
    }

    #[test]
    fn the_header_wins_over_after() {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", "1.7".parse().unwrap());
        let parse_query = |raw: &str, h: &HeaderMap| {
            let uri: axum::http::Uri = format!("/?{raw}").parse().unwrap();
            super::parse_query(axum::extract::Query::try_from_uri(&uri), h)
        };
        let q = parse_query("after=1.2&follow=false", &h).unwrap();
        assert_eq!(q.after.unwrap().seq, 7);
        assert!(!q.follow);
        assert!(parse_query("follow=maybe", &HeaderMap::new()).is_err());
        assert!(parse_query("bogus=1", &HeaderMap::new()).is_err());
    }
}
