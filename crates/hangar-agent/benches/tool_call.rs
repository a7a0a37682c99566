//! Agent overhead per tool call, excluding model and tool time.
//!
//! An in-process provider answers instantly with a pre-built tool-call
//! chunk; the tool does nothing. For each call, overhead = time between two
//! consecutive model calls minus the time spent inside the tool: parsing
//! the streamed turn, reporting events (with redaction), dispatching the
//! call and building the next request. Target ≤ 1 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code

#[path = "support/common.rs"]
mod common;

use common::{NullSink, summary};
use hangar_agent::{
    Agent, CancellationToken, LoopConfig, ModelProvider, Redactor, ToolContext, ToolError,
    ToolHandler, ToolRegistry,
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

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
            let outcome = agent
                .run("bench", &NullSink, &mut rx, &CancellationToken::new())
                .await
                .unwrap();
            assert!(outcome.is_success());
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
    println!(
        "agent overhead per tool call (excl. model and tool time): {}",
        summary(&mut overheads)
    );
    println!("target: p50 <= 1 ms");
}
