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
//! Replay then live, with no gap and no duplicate: the stream joins its
//! run's [`feed`](crate::sessions::feed) first (one per run on this replica,
//! shared by all its viewers, which follows the hub and the run's state),
//! then replays the store after the cursor, then forwards the feed's items
//! that continue the sequence. Anything else (a viewer that lagged the feed,
//! joined while it started, an event of an execution it has not seen yet)
//! is re-read from the store, so what a live viewer sees is exactly the
//! stored transcript a replay shows.
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
use crate::sessions::sharing::{self, Access};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hangar_protocol::RunState;
use hangar_store::RunRecord;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

mod stream;

pub use stream::ViewerStream;

/// Frames buffered between a WebSocket viewer's pump and its socket.
const FRAME_BUFFER: usize = 256;
/// Keep-alive comment period.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
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
    /// What identifies the credential: viewers with equal keys are checked once.
    pub(crate) fn key(&self) -> String {
        match self {
            AccessCheck::Caller(CallerCredentials(headers)) => {
                let mut key = String::from("caller");
                for (name, value) in headers {
                    key.push('\n');
                    key.push_str(name.as_str());
                    key.push(':');
                    key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
                key
            }
            AccessCheck::PublicLink(token) => format!("link\n{token}"),
        }
    }

    pub(crate) async fn still_allowed(&self, state: &AppState, run: &RunRecord) -> ApiResult<()> {
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

/// One thing sent to a viewer. Session and state frames carry their JSON
/// `data` rendered once, shared by every viewer of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A committed session event.
    Session {
        /// Its position.
        id: EventCursor,
        /// `{"execution_id", "seq", "at", "kind", …}` as JSON text.
        data: Arc<str>,
    },
    /// The run's state changed.
    RunState {
        /// `{"state", "status_message"}` as JSON text.
        data: Arc<str>,
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

    /// The `data` as JSON text.
    fn data(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Frame::Session { data, .. } | Frame::RunState { data } => (&**data).into(),
            Frame::End { state } => serde_json::json!({ "state": state }).to_string().into(),
            Frame::Revoked { detail } => serde_json::json!({ "detail": detail }).to_string().into(),
        }
    }

    fn id(&self) -> Option<String> {
        match self {
            Frame::Session { id, .. } => Some(id.to_string()),
            _ => None,
        }
    }

    fn to_sse(&self) -> Event {
        let event = Event::default().event(self.name()).data(self.data());
        match self.id() {
            Some(id) => event.id(id),
            None => event,
        }
    }

    /// The WebSocket form: `{"id", "event", "data"}` as JSON text.
    pub fn to_text(&self) -> String {
        let id = match self.id() {
            Some(id) => format!("\"{id}\""),
            None => "null".to_owned(),
        };
        format!(
            r#"{{"id":{id},"event":"{}","data":{}}}"#,
            self.name(),
            self.data()
        )
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
    // Polled by the connection itself: no task between the feed and the socket.
    let frames = ViewerStream::new(state, run, who, after, follow);
    let viewer = crate::metrics::get().viewer();
    let stream = futures::stream::unfold(
        (frames, slot, viewer),
        |(mut frames, slot, viewer)| async move {
            let frame = frames.next().await?;
            Some((
                Ok::<Event, Infallible>(frame.to_sse()),
                (frames, slot, viewer),
            ))
        },
    );
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

/// Starts the pump of one viewer in a task of its own; frames arrive on the
/// returned channel, which closes after `end` or `revoked` (the WebSocket
/// route, whose socket also carries input). The SSE route polls a
/// [`ViewerStream`] directly, with no task in between.
pub fn spawn_pump(
    state: AppState,
    run: RunRecord,
    who: AccessCheck,
    after: Option<EventCursor>,
    follow: bool,
) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    let tasks = state.runtime.tasks.clone();
    let mut viewer = ViewerStream::new(state, run, who, after, follow);
    tasks.spawn(async move {
        loop {
            let frame = tokio::select! {
                () = tx.closed() => return,
                frame = viewer.next() => frame,
            };
            let Some(frame) = frame else { return };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    rx
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
    Ok(ws
        .max_message_size(MAX_WS_INPUT)
        .read_buffer_size(crate::dispatch::worker_socket::READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
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
                let text = frame.to_text();
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
