//! Agent overhead per tool call, excluding model and tool time.
//!
//! An in-process provider answers instantly with a pre-built tool-call
//! chunk; the tool does nothing. For each call, overhead = time between two
//! consecutive model calls minus the time spent inside the tool: parsing
//! the streamed turn, reporting events (with redaction), dispatching the
//! call and building the next request. Target ≤ 1 ms.
//!
//! Measured twice: with a sink that discards events (the loop alone) and
//! with the real durable [`SessionStream`] (spool on disk, group-committed
//! fsync, WebSocket to an in-process server that acks every event), which
//! is what a managed run pays.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code

#[path = "support/common.rs"]
mod common;

use common::{NullSink, summary};
use hangar_agent::{
    Agent, CancellationToken, EventSink, LoopConfig, ModelProvider, Redactor, SessionConfig,
    SessionStream, ToolContext, ToolError, ToolHandler, ToolRegistry,
};
use hangar_llm::{ChunkStream, LlmError};
use hangar_protocol::llm::{ChatChunk, ChatRequest};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CALLS_PER_RUN: u32 = 200;
const RUNS: u32 = 10;

#[derive(Default)]
struct Clock {
    model_calls: Vec<Instant>,
    tool_spans: Vec<(Instant, Instant)>,
}

struct Instant0 {
    clock: Arc<Mutex<Clock>>,
    calls: Mutex<u32>,
    limit: u32,
}

fn chunk(value: serde_json::Value) -> ChatChunk {
    serde_json::from_value(value).unwrap()
}

#[async_trait::async_trait]
impl ModelProvider for Instant0 {
    async fn chat_stream(&self, _request: ChatRequest) -> Result<ChunkStream, LlmError> {
        self.clock.lock().unwrap().model_calls.push(Instant::now());
        let n = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        let chunks = if n > self.limit {
            vec![chunk(
                serde_json::json!({"id":"r","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"done"},"finish_reason":"stop"}]}),
            )]
        } else {
            vec![
                chunk(
                    serde_json::json!({"id":"r","created":0,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":format!("call_{n}"),"type":"function","function":{"name":"noop","arguments":""}}]}}]}),
                ),
                chunk(
                    serde_json::json!({"id":"r","created":0,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"path\": \"src/main.rs\", \"n\": 1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1000,"completion_tokens":20,"total_tokens":1020}}),
                ),
            ]
        };
        Ok(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
    }
}

struct Noop(Arc<Mutex<Clock>>);

#[async_trait::async_trait]
impl ToolHandler for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "does nothing"
    }
    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({"type": "object"})
    }
    async fn call(&self, _: serde_json::Value, _: &ToolContext) -> Result<String, ToolError> {
        let start = Instant::now();
        let out = "ok: a small result of the kind tools return\n".repeat(4);
        self.0
            .lock()
            .unwrap()
            .tool_spans
            .push((start, Instant::now()));
        Ok(out)
    }
}

/// A session endpoint that acks every event it receives.
async fn ack_server() -> String {
    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use hangar_protocol::session::{Ack, ServerToAgent};
    async fn serve(mut socket: WebSocket) {
        let ack = |seq| {
            Message::Text(
                ServerToAgent::Ack(Ack { seq })
                    .to_envelope()
                    .to_text()
                    .into(),
            )
        };
        if socket.send(ack(0)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Text(text) = msg {
                let env = hangar_protocol::Envelope::parse(text.as_str()).unwrap();
                let event: hangar_protocol::session::SessionEvent = env.decode().unwrap();
                if socket.send(ack(event.seq)).await.is_err() {
                    return;
                }
            }
        }
    }
    let app = axum::Router::new().route(
        "/api/v1/agent/runs/{id}/session",
        axum::routing::get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(serve) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// One bench pass: `RUNS` runs of `CALLS_PER_RUN` tool calls; `durable`
/// streams through a real [`SessionStream`].
fn measure(rt: &tokio::runtime::Runtime, durable: Option<&str>) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let mut overheads: Vec<Duration> = Vec::new();
    for run in 0..RUNS {
        let clock = Arc::new(Mutex::new(Clock::default()));
        let provider = Arc::new(Instant0 {
            clock: clock.clone(),
            calls: Mutex::new(0),
            limit: CALLS_PER_RUN,
        });
        let mut tools = ToolRegistry::with_builtins();
        tools.register(Arc::new(Noop(clock.clone())));
        let mut config = LoopConfig::new("m", dir.path(), None);
        config.max_turns = CALLS_PER_RUN + 1;
        let agent = Agent::new(provider, tools, config).with_redactor(Arc::new(Redactor::new([
            "sk-secret-value-1",
            "hr_run_token_abcdef",
        ])));
        rt.block_on(async {
            let (_tx, mut rx) = tokio::sync::mpsc::channel(1);
            let cancel = CancellationToken::new();
            let stream = match durable {
                Some(url) => Some(
                    SessionStream::start(
                        SessionConfig {
                            client: hangar_client::Client::new(url, "hr_bench").unwrap(),
                            run_id: format!("run-{run}"),
                            execution_id: format!("exec-{run}"),
                            spool_path: dir.path().join(format!("spool-{run}.ndjson")),
                        },
                        cancel.clone(),
                    )
                    .await
                    .unwrap()
                    .0,
                ),
                None => None,
            };
            let sink: &dyn EventSink = match &stream {
                Some(s) => s,
                None => &NullSink,
            };
            let outcome = agent.run("bench", sink, &mut rx, &cancel).await.unwrap();
            assert!(outcome.is_success());
            if let Some(stream) = stream {
                let report = stream.finish(Duration::from_secs(10)).await;
                assert!(report.is_complete(), "{report:?}");
            }
        });
        let clock = clock.lock().unwrap();
        if run == 0 {
            continue; // warm-up
        }
        for (i, span) in clock.tool_spans.iter().enumerate() {
            let between = clock.model_calls[i + 1] - clock.model_calls[i];
            overheads.push(between.saturating_sub(span.1 - span.0));
        }
    }
    overheads
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut loop_only = measure(&rt, None);
    println!(
        "agent overhead per tool call (excl. model and tool time), null sink:      {}",
        summary(&mut loop_only)
    );
    let url = rt.block_on(ack_server());
    let mut durable = measure(&rt, Some(&url));
    println!(
        "agent overhead per tool call (excl. model and tool time), durable stream: {}",
        summary(&mut durable)
    );
    println!("target: p99 <= 1 ms");
}
