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

async fn openai_chat(
    State(shared): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, next) = next_turn(
        &shared,
        "/v1/chat/completions",
        &headers,
        &body,
        check_openai,
        openai_error,
    );
    let (turn, response_id) = match next {
        Next::Answer { turn, response_id } => (turn, response_id),
        Next::Reject(response) => return response,
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(FAKE_MODEL)
        .to_owned();
    let id = format!("chatcmpl-fake-{response_id}");
    let prompt_tokens = token_estimate(body.len());
    let (resolved, stream) = resolve(turn, stream).await;
    match resolved {
        Resolved::Error {
            status,
            body,
            retry_after,
        } => error_response(status, body, retry_after),
        Resolved::Cut(pause) => {
            let chunk = |delta: Value| {
                sse_data(
                    &json!({"id": id, "object": "chat.completion.chunk", "created": 0,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]}),
                )
            };
            let frames = vec![
                chunk(json!({"role": "assistant", "content": ""})),
                chunk(json!({"content": "Partial ans"})),
            ];
            sse_response(frames, Some(pause))
        }
        Resolved::Reply(reply) => {
            let completion_tokens = token_estimate(
                reply.text.len()
                    + reply
                        .calls
                        .iter()
                        .map(|c| c.arguments.to_string().len())
                        .sum::<usize>(),
            );
            let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens});
            let finish = if reply.calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            if stream {
                sse_response(
                    openai_frames(&id, &model, &reply, finish, include_usage.then_some(usage)),
                    None,
                )
            } else {
                axum::Json(openai_whole(&id, &model, &reply, finish, usage)).into_response()
            }
        }
    }
}

fn sse_data(value: &Value) -> String {
    format!("data: {value}\n\n")
}

fn openai_frames(
    id: &str,
    model: &str,
    reply: &Reply,
    finish: &str,
    usage: Option<Value>,
) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        sse_data(
            &json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for piece in split(reply.reasoning.as_deref().unwrap_or_default(), 2) {
        frames.push(chunk(json!({"reasoning_content": piece}), None));
    }
    for piece in split(&reply.text, 3) {
        frames.push(chunk(json!({"content": piece}), None));
    }
    for (index, call) in reply.calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}]}),
            None,
        ));
        for piece in split(&call.arguments.to_string(), 3) {
            frames.push(chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    frames.push(chunk(json!({}), Some(finish)));
    if let Some(usage) = usage {
        frames.push(sse_data(
            &json!({"id": id, "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [], "usage": usage}),
        ));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    frames
}

fn openai_whole(id: &str, model: &str, reply: &Reply, finish: &str, usage: Value) -> Value {
    let mut message = json!({"role": "assistant",
        "content": if reply.text.is_empty() && !reply.calls.is_empty() { Value::Null } else { json!(reply.text) }});
    if let Some(reasoning) = &reply.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    if !reply.calls.is_empty() {
        message["tool_calls"] = reply
            .calls
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments.to_string()}})
            })
            .collect();
    }
    json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    (status, axum::Json(body)).into_response()
}

/// Like OpenAI: an assistant message with `tool_calls` must be followed by
/// tool messages answering each id, and a tool message must answer a call
/// of the assistant message before it.
fn check_openai(request: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut open: HashSet<String> = HashSet::new();
    let mut calls_of_turn: HashSet<String> = HashSet::new();
    for message in &messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if role == "tool" {
            let id = message
                .get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !open.remove(id) && !calls_of_turn.contains(id) {
                problems.push(format!("tool result {id} answers no tool call"));
            }
            continue;
        }
        let mut unanswered: Vec<&String> = open.iter().collect();
        unanswered.sort();
        problems.extend(
            unanswered
                .iter()
                .map(|id| format!("tool call {id} has no result")),
        );
        open.clear();
        calls_of_turn.clear();
        if role == "assistant" {
            for call in message
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = call.get("id").and_then(Value::as_str) {
                    open.insert(id.to_owned());
                    calls_of_turn.insert(id.to_owned());
                }
            }
        }
    }
    let mut unanswered: Vec<&String> = open.iter().collect();
    unanswered.sort();
    problems.extend(
        unanswered
            .iter()
            .map(|id| format!("tool call {id} has no result")),
    );
    problems
}

// ------------------------------------------------------------- Anthropic

async fn anthropic_messages(
    State(shared): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (request, next) = next_turn(
        &shared,
        "/v1/messages",
        &headers,
        &body,
        check_anthropic,
        anthropic_error,
    );
    let (turn, response_id) = match next {
        Next::Answer { turn, response_id } => (turn, response_id),
        Next::Reject(response) => return response,
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(FAKE_MODEL)
        .to_owned();
    let id = format!("msg_fake_{response_id}");
    let input_tokens = token_estimate(body.len());
    let (resolved, stream) = resolve(turn, stream).await;
    match resolved {
        Resolved::Error {
            status,
            body,
            retry_after,
        } => error_response(status, body, retry_after),
        Resolved::Cut(pause) => {
            let frames = vec![
                sse_event("message_start", &message_start(&id, &model, input_tokens)),
                sse_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                sse_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "Partial ans"}}),
                ),
            ];
            sse_response(frames, Some(pause))
        }
        Resolved::Reply(reply) => {
            let output_tokens = token_estimate(
                reply.text.len()
                    + reply
                        .calls
                        .iter()
                        .map(|c| c.arguments.to_string().len())
                        .sum::<usize>(),
            );
            let stop = if reply.calls.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            };
            if stream {
                sse_response(
                    anthropic_frames(&id, &model, &reply, stop, input_tokens, output_tokens),
                    None,
                )
            } else {
                let mut content = Vec::new();
                if let Some(thinking) = &reply.reasoning {
                    content.push(
                        json!({"type": "thinking", "thinking": thinking, "signature": "fake"}),
                    );
                }
                if !reply.text.is_empty() {
                    content.push(json!({"type": "text", "text": reply.text}));
                }
                for call in &reply.calls {
                    content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}));
                }
                axum::Json(
                    json!({"id": id, "type": "message", "role": "assistant", "model": model,
                    "content": content, "stop_reason": stop, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}),
                )
                .into_response()
            }
        }
    }
}

fn sse_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn message_start(id: &str, model: &str, input_tokens: u64) -> Value {
    json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
}

fn anthropic_frames(
    id: &str,
    model: &str,
    reply: &Reply,
    stop: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> Vec<String> {
    let mut frames = vec![
        sse_event("message_start", &message_start(id, model, input_tokens)),
        sse_event("ping", &json!({"type": "ping"})),
    ];
    let mut index = 0;
    let mut block = |frames: &mut Vec<String>, start: Value, deltas: Vec<Value>| {
        frames.push(sse_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            frames.push(sse_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        frames.push(sse_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    };
    if let Some(thinking) = &reply.reasoning {
        let mut deltas: Vec<Value> = split(thinking, 2)
            .into_iter()
            .map(|t| json!({"type": "thinking_delta", "thinking": t}))
            .collect();
        deltas.push(json!({"type": "signature_delta", "signature": "fake-signature"}));
        block(
            &mut frames,
            json!({"type": "thinking", "thinking": ""}),
            deltas,
        );
    }
    if !reply.text.is_empty() {
        let deltas = split(&reply.text, 3)
            .into_iter()
            .map(|t| json!({"type": "text_delta", "text": t}))
            .collect();
        block(&mut frames, json!({"type": "text", "text": ""}), deltas);
    }
    for call in &reply.calls {
        // Like the real API: an empty first fragment, then the JSON in pieces.
        let mut deltas = vec![json!({"type": "input_json_delta", "partial_json": ""})];
        deltas.extend(
            split(&call.arguments.to_string(), 3)
                .into_iter()
                .map(|p| json!({"type": "input_json_delta", "partial_json": p})),
        );
        block(
            &mut frames,
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
            deltas,
        );
    }
    frames.push(sse_event(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}}),
    ));
    frames.push(sse_event("message_stop", &json!({"type": "message_stop"})));
    frames
}

fn anthropic_error(status: StatusCode, message: &str) -> Response {
    let kind = if status.is_server_error() {
        "api_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn blocks(message: &Value) -> Vec<Value> {
    message
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Like Anthropic: every `tool_use` block must be answered by a
/// `tool_result` in the user message right after it, and every
/// `tool_result` must answer a `tool_use` of the message before it.
fn check_anthropic(request: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut previous_calls: Vec<String> = Vec::new();
    for message in &messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = blocks(message);
        let of_type = |kind: &str, key: &str| -> Vec<String> {
            content
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some(kind))
                .filter_map(|b| b.get(key).and_then(Value::as_str).map(str::to_owned))
                .collect()
        };
        let results = if role == "user" {
            of_type("tool_result", "tool_use_id")
        } else {
            Vec::new()
        };
        for id in &previous_calls {
            if !results.contains(id) {
                problems.push(format!("tool call {id} has no result"));
            }
        }
        for id in &results {
            if !previous_calls.contains(id) {
                problems.push(format!("tool result {id} answers no tool call"));
            }
        }
        previous_calls = if role == "assistant" {
            of_type("tool_use", "id")
        } else {
            Vec::new()
        };
    }
    problems.extend(
        previous_calls
            .iter()
            .map(|id| format!("tool call {id} has no result")),
    );
    problems
}

// ---------------------------------------------------------------- models

async fn models() -> Response {
    axum::Json(json!({"object": "list", "data": [
        {"id": FAKE_MODEL, "object": "model", "created": 0, "owned_by": "hangar-testkit"}
    ]}))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_check_finds_unanswered_and_orphan_results() {
        let ok = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "a"}, {"id": "b"}]},
            {"role": "tool", "tool_call_id": "b", "content": "x"},
            {"role": "tool", "tool_call_id": "a", "content": "y"},
            {"role": "assistant", "content": "done"}
        ]});
        assert!(check_openai(&ok).is_empty());
        let missing = json!({"messages": [
            {"role": "assistant", "tool_calls": [{"id": "a"}, {"id": "b"}]},
            {"role": "tool", "tool_call_id": "a", "content": "y"},
            {"role": "user", "content": "next"}
        ]});
        assert_eq!(check_openai(&missing), ["tool call b has no result"]);
        let trailing = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "z"}]}]});
        assert_eq!(check_openai(&trailing), ["tool call z has no result"]);
        let orphan = json!({"messages": [{"role": "user"}, {"role": "tool", "tool_call_id": "q"}]});
        assert_eq!(
            check_openai(&orphan),
            ["tool result q answers no tool call"]
        );
    }

    #[test]
    fn anthropic_check_wants_results_in_the_next_user_message() {
        let ok = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}
        ]});
        assert!(check_anthropic(&ok).is_empty());
        let late = json!({"messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1"}]},
            {"role": "user", "content": "what?"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}
        ]});
        assert_eq!(
            check_anthropic(&late),
            [
                "tool call t1 has no result",
                "tool result t1 answers no tool call"
            ]
        );
    }

    #[test]
    fn split_keeps_every_char() {
        assert_eq!(split("héllo wörld", 3).concat(), "héllo wörld");
        assert_eq!(split("héllo wörld", 3).len(), 3);
        assert!(split("", 3).is_empty());
        assert_eq!(split("ab", 3), ["a", "b"]);
    }

    async fn post(url: String, body: Value) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    #[tokio::test]
    async fn answers_plain_json_records_requests_and_reports_exhaustion() {
        let llm = FakeLlm::start(vec![Turn::tool_calls([
            ("shell", json!({"command": "ls"})),
            ("grep", json!({"pattern": "x"})),
        ])])
        .await;
        let url = format!("{}/chat/completions", llm.base_url());
        let request = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]});
        let (status, body) = post(url.clone(), request.clone()).await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "m1");
        let calls = body["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap();
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[1]["id"], "call_2");
        assert_eq!(calls[1]["function"]["arguments"], r#"{"pattern":"x"}"#);
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(llm.remaining(), 0);

        let (status, body) = post(url, request.clone()).await;
        assert_eq!(status, 500);
        assert!(body.contains("script exhausted"), "{body}");
        assert_eq!(llm.requests(), vec![request.clone(), request]);
    }

    #[tokio::test]
    async fn rejects_unanswered_tool_calls_without_using_a_turn() {
        let llm = FakeLlm::start(vec![Turn::text("hi")]).await;
        let request = json!({"model": "m", "messages": [
            {"role": "assistant", "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "shell", "arguments": "{}"}}]},
            {"role": "user", "content": "well?"}
        ]});
        let (status, body) = post(format!("{}/chat/completions", llm.base_url()), request).await;
        assert_eq!(status, 400);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["message"], "tool call call_9 has no result");
        assert_eq!(llm.violations(), ["tool call call_9 has no result"]);
        assert_eq!(llm.remaining(), 1);
    }

    #[tokio::test]
    async fn streams_openai_and_anthropic_sse() {
        let llm = FakeLlm::start(vec![Turn::text("Hello there"), Turn::text("Hi again")]).await;
        let (status, body) = post(
            format!("{}/chat/completions", llm.base_url()),
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 200);
        let data: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"));
        let text: String = data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "Hello there");
        assert!(data.iter().any(|d| d.contains("\"usage\"")));

        let (status, body) = post(
            format!("{}/v1/messages", llm.anthropic_base_url()),
            json!({"model": "claude", "stream": true, "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(status, 200);
        let events: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(events.first(), Some(&"message_start"));
        assert_eq!(events.last(), Some(&"message_stop"));
        assert!(body.contains("\"text_delta\""));
    }

    #[tokio::test]
    async fn lists_a_model() {
        let llm = FakeLlm::start(Vec::new()).await;
        let body: Value = reqwest::get(format!("{}/models", llm.base_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["data"][0]["id"], FAKE_MODEL);
    }
}
