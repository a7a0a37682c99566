//! A fake model server that speaks the real OpenAI chat-completions and
//! Anthropic Messages wire formats (SSE streaming and plain JSON), answers
//! from a script of [`Turn`]s, records every request, and checks that every
//! tool call the conversation contains has its result.
//!
//! ```no_run
//! # async fn demo() {
//! use hangar_testkit::fake_llm::{FakeLlm, Turn};
//! use serde_json::json;
//!
//! let llm = FakeLlm::start(vec![
//!     Turn::tool_call("shell", json!({"command": "ls"})),
//!     Turn::text("Done."),
//! ])
//! .await;
//! // OpenAI clients: `{base_url}/chat/completions`.
//! let _openai = llm.base_url();
//! // Anthropic clients: `{anthropic_base_url}/v1/messages`.
//! let _anthropic = llm.anthropic_base_url();
//! // … run the code under test …
//! assert!(llm.violations().is_empty());
//! assert_eq!(llm.remaining(), 0);
//! # }
//! ```

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

mod anthropic;
mod openai;

use anthropic::anthropic_messages;
use openai::openai_chat;

/// The model id listed by `GET /v1/models`. Responses echo the model the
/// request named; this is only the listing.
pub const FAKE_MODEL: &str = "fake-model";

/// How long a [`Turn::CutStream`] answer waits after its partial frames
/// before dropping the connection.
const CUT_PAUSE: Duration = Duration::from_millis(50);

/// One tool call the fake model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeToolCall {
    /// Call id; empty means "assign `call_N`" (numbered per server, from 1,
    /// in the order calls are answered).
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments, sent JSON-encoded (OpenAI) or as `input` (Anthropic).
    pub arguments: Value,
}

impl FakeToolCall {
    /// A call with an automatic id.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        FakeToolCall {
            id: String::new(),
            name: name.into(),
            arguments,
        }
    }

    /// A call with the given id.
    pub fn with_id(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        FakeToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }
}

/// What the fake model answers to one request.
#[derive(Debug, Clone)]
pub enum Turn {
    /// An assistant text answer (`finish_reason: stop` / `end_turn`).
    Text(String),
    /// One or more (parallel) tool calls (`tool_calls` / `tool_use`).
    ToolCalls(Vec<FakeToolCall>),
    /// Reasoning, text and tool calls in one answer; the finish reason is
    /// `tool_calls` when there are calls, else `stop`.
    Message {
        /// Text (may be empty).
        text: String,
        /// Reasoning: OpenAI `reasoning_content`, Anthropic `thinking`.
        reasoning: Option<String>,
        /// Tool calls.
        tool_calls: Vec<FakeToolCall>,
    },
    /// An HTTP error with this status and raw body, and a `Retry-After`
    /// header (seconds) when set.
    Error {
        /// HTTP status.
        status: u16,
        /// Raw response body (sent as JSON when it parses as JSON).
        body: String,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
    /// Start a streamed answer, send part of it, then drop the connection.
    CutStream,
    /// Start a streamed answer, send part of it (like [`Turn::CutStream`]),
    /// then send nothing for this long before dropping the connection: a
    /// slow model, for tests of clients that hang up mid-stream.
    Stall(Duration),
    /// Wait, then answer with the inner turn (for cancellation tests).
    Delay(Duration, Box<Turn>),
    /// Answer with the inner turn as one JSON document even when the request
    /// asked for a stream, like servers that ignore `stream`.
    NonStreaming(Box<Turn>),
}

impl Turn {
    /// A text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Turn::Text(text.into())
    }

    /// One tool call with an automatic id (`call_N`).
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Turn::ToolCalls(vec![FakeToolCall::new(name, arguments)])
    }

    /// Parallel tool calls with automatic ids.
    pub fn tool_calls<N: Into<String>>(calls: impl IntoIterator<Item = (N, Value)>) -> Self {
        Turn::ToolCalls(
            calls
                .into_iter()
                .map(|(name, arguments)| FakeToolCall::new(name, arguments))
                .collect(),
        )
    }

    /// An error status with a JSON error body carrying `message`.
    pub fn error(status: u16, message: &str) -> Self {
        Turn::Error {
            status,
            body: json!({"error": {"message": message, "type": "fake_error"}}).to_string(),
            retry_after: None,
        }
    }

    /// A 429 with `Retry-After: seconds`.
    pub fn rate_limited(retry_after: u64) -> Self {
        Turn::Error {
            status: 429,
            body: json!({"error": {"message": "rate limited", "type": "rate_limit_error"}})
                .to_string(),
            retry_after: Some(retry_after),
        }
    }

    /// `turn` after `delay`.
    pub fn delayed(delay: Duration, turn: Turn) -> Self {
        Turn::Delay(delay, Box::new(turn))
    }

    /// `turn` as a plain JSON answer whatever the request asked.
    pub fn non_streaming(turn: Turn) -> Self {
        Turn::NonStreaming(Box::new(turn))
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct FakeRequest {
    /// Request path (`/v1/chat/completions`, `/v1/messages`).
    pub path: String,
    /// Headers, lower-case names (last value wins).
    pub headers: BTreeMap<String, String>,
    /// The JSON body (`null` if it was not JSON).
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Turn>,
    received: Vec<FakeRequest>,
    violations: Vec<String>,
    /// How many of `violations` the test has read ([`FakeLlm::violations`]).
    checked: usize,
    next_call: u64,
    next_response: u64,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> MutexGuard<'_, Shared> {
    // A test that panicked while holding the lock must not hide its own
    // failure behind poison errors in every later assertion.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake model server on `127.0.0.1`. Stops when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: SharedState,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm").field("addr", &self.addr).finish()
    }
}

impl Drop for FakeLlm {
    /// Stops the server, and fails the test if the agent broke the tool-call
    /// protocol in a way the test never looked at ([`FakeLlm::violations`]):
    /// every use checks it, not only the ones that remember to.
    fn drop(&mut self) {
        self.server.abort();
        if std::thread::panicking() {
            return;
        }
        let state = lock(&self.shared);
        let unchecked = &state.violations[state.checked.min(state.violations.len())..];
        if !unchecked.is_empty() {
            panic!(
                "fake LLM: the model protocol was broken and the test did not check it: {unchecked:?} \
                 (read FakeLlm::violations() to assert on expected ones)"
            );
        }
    }
}

impl FakeLlm {
    /// Starts a server on a random port answering with `script`, one turn per
    /// chat request. Panics if no local port can be bound (test support).
    pub async fn start(script: Vec<Turn>) -> FakeLlm {
        let shared: SharedState = Arc::new(Mutex::new(Shared {
            script: script.into(),
            ..Shared::default()
        }));
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => panic!("fake LLM: cannot bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("fake LLM: no local address: {e}"),
        };
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake LLM server stopped");
            }
        });
        FakeLlm {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT/v1`, for OpenAI clients (which append
    /// `/chat/completions`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`, for Anthropic clients (which append
    /// `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Appends turns to the script.
    pub fn push(&self, turns: impl IntoIterator<Item = Turn>) {
        lock(&self.shared).script.extend(turns);
    }

    /// Every chat request body received, in order (rejected ones included).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared)
            .received
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// Every chat request received, with path and headers.
    pub fn received(&self) -> Vec<FakeRequest> {
        lock(&self.shared).received.clone()
    }

    /// Turns not yet used.
    pub fn remaining(&self) -> usize {
        lock(&self.shared).script.len()
    }

    /// Protocol violations seen (unanswered tool calls, orphan results).
    /// Those read here count as checked; any other fails the test when the
    /// server is dropped.
    pub fn violations(&self) -> Vec<String> {
        let mut state = lock(&self.shared);
        state.checked = state.violations.len();
        state.violations.clone()
    }
}

/// What a request gets after the checks: the turn, or a ready response.
enum Next {
    Answer { turn: Turn, response_id: u64 },
    Reject(Response),
}

/// Records the request, checks its tool calls, and pops the next turn.
fn next_turn(
    shared: &SharedState,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    check: fn(&Value) -> Vec<String>,
    error: fn(StatusCode, &str) -> Response,
) -> (Value, Next) {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let value = parsed.as_ref().cloned().unwrap_or(Value::Null);
    let mut state = lock(shared);
    state.received.push(FakeRequest {
        path: path.to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: value.clone(),
    });
    let number = state.received.len();
    if let Err(e) = parsed {
        return (
            value,
            Next::Reject(error(
                StatusCode::BAD_REQUEST,
                &format!("body is not JSON: {e}"),
            )),
        );
    }
    let problems = check(&value);
    if let Some(first) = problems.first().cloned() {
        state.violations.extend(problems);
        return (value, Next::Reject(error(StatusCode::BAD_REQUEST, &first)));
    }
    let Some(mut turn) = state.script.pop_front() else {
        let message = format!("fake LLM script exhausted: no turn left for request #{number}");
        return (
            value,
            Next::Reject(error(StatusCode::INTERNAL_SERVER_ERROR, &message)),
        );
    };
    assign_ids(&mut turn, &mut state.next_call);
    state.next_response += 1;
    let response_id = state.next_response;
    (value, Next::Answer { turn, response_id })
}

fn assign_ids(turn: &mut Turn, next: &mut u64) {
    match turn {
        Turn::ToolCalls(calls)
        | Turn::Message {
            tool_calls: calls, ..
        } => {
            for call in calls.iter_mut().filter(|c| c.id.is_empty()) {
                *next += 1;
                call.id = format!("call_{next}");
            }
        }
        Turn::Delay(_, inner) | Turn::NonStreaming(inner) => assign_ids(inner, next),
        Turn::Text(_) | Turn::Error { .. } | Turn::CutStream | Turn::Stall(_) => {}
    }
}

/// A turn with its wrappers applied.
enum Resolved {
    Reply(Reply),
    Error {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Partial frames, then a pause this long, then a dropped connection.
    Cut(Duration),
}

struct Reply {
    text: String,
    reasoning: Option<String>,
    calls: Vec<FakeToolCall>,
}

/// Waits out delays; returns the turn and whether to stream.
async fn resolve(mut turn: Turn, mut stream: bool) -> (Resolved, bool) {
    loop {
        turn = match turn {
            Turn::Delay(delay, inner) => {
                tokio::time::sleep(delay).await;
                *inner
            }
            Turn::NonStreaming(inner) => {
                stream = false;
                *inner
            }
            Turn::Text(text) => {
                let reply = Reply {
                    text,
                    reasoning: None,
                    calls: Vec::new(),
                };
                return (Resolved::Reply(reply), stream);
            }
            Turn::ToolCalls(calls) => {
                let reply = Reply {
                    text: String::new(),
                    reasoning: None,
                    calls,
                };
                return (Resolved::Reply(reply), stream);
            }
            Turn::Message {
                text,
                reasoning,
                tool_calls,
            } => {
                let reply = Reply {
                    text,
                    reasoning,
                    calls: tool_calls,
                };
                return (Resolved::Reply(reply), stream);
            }
            Turn::Error {
                status,
                body,
                retry_after,
            } => {
                return (
                    Resolved::Error {
                        status,
                        body,
                        retry_after,
                    },
                    stream,
                );
            }
            Turn::CutStream => return (Resolved::Cut(CUT_PAUSE), stream),
            Turn::Stall(pause) => return (Resolved::Cut(pause), stream),
        }
    }
}

/// Splits `text` into up to `parts` pieces on char boundaries, so clients
/// must reassemble fragments.
fn split(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let size = chars.len().div_ceil(parts.max(1));
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn token_estimate(bytes: usize) -> u64 {
    u64::try_from(bytes / 4).unwrap_or(u64::MAX).max(1)
}

fn error_response(status: u16, body: String, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = if serde_json::from_str::<Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// An SSE response from pre-rendered frames; `cut` ends the body with an
/// error so the connection drops without a clean end.
fn sse_response(frames: Vec<String>, cut: Option<Duration>) -> Response {
    use futures::StreamExt;
    let items: Vec<Result<Bytes, std::io::Error>> =
        frames.into_iter().map(|f| Ok(Bytes::from(f))).collect();
    let frames = futures::stream::iter(items);
    let body = if let Some(pause) = cut {
        // Pause before failing so the frames are flushed to the client
        // first: an error right away would drop them with the connection.
        let failure = futures::stream::once(async move {
            tokio::time::sleep(pause).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fake LLM cut the stream",
            ))
        });
        Body::from_stream(frames.chain(failure))
    } else {
        Body::from_stream(frames)
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------- OpenAI

async fn models() -> Response {
    axum::Json(json!({"object": "list", "data": [
        {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "hangar-testkit"}
    ]}))
    .into_response()
}

#[cfg(test)]
mod tests;
