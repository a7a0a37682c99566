//! Unit tests of the model ↔ tools loop.

use super::*;
use crate::event::SinkError;
use hangar_llm::ChunkStream;
use hangar_protocol::llm::ChatChunk;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Mutex;

/// Answers each request with the next scripted chunk list.
struct Scripted {
    turns: Mutex<VecDeque<Result<Vec<serde_json::Value>, LlmError>>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(turns: Vec<Result<Vec<serde_json::Value>, LlmError>>) -> Arc<Self> {
        Arc::new(Scripted {
            turns: Mutex::new(turns.into()),
            requests: Mutex::default(),
        })
    }
}

#[async_trait::async_trait]
impl ModelProvider for Scripted {
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, LlmError> {
        self.requests.lock().unwrap().push(request);
        let next = self.turns.lock().unwrap().pop_front();
        match next {
            Some(Ok(chunks)) => {
                let chunks: Vec<Result<ChatChunk, LlmError>> = chunks
                    .into_iter()
                    .map(|c| Ok(serde_json::from_value(c).unwrap()))
                    .collect();
                Ok(Box::pin(futures::stream::iter(chunks)))
            }
            Some(Err(e)) => Err(e),
            None => Ok(Box::pin(futures::stream::pending())),
        }
    }
}

fn text(t: &str) -> Vec<serde_json::Value> {
    vec![json!({"choices":[{"index":0,"delta":{"content":t},"finish_reason":"stop"}]})]
}

fn call(id: &str, name: &str, args: &str) -> Vec<serde_json::Value> {
    vec![json!({"choices":[{"index":0,"delta":{"tool_calls":[
        {"index":0,"id":id,"type":"function","function":{"name":name,"arguments":args}}]},"finish_reason":"tool_calls"}],
        "usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})]
}

#[derive(Default)]
struct VecSink(Mutex<Vec<EventBody>>);

#[async_trait::async_trait]
impl EventSink for VecSink {
    async fn emit(&self, event: EventBody) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(event);
        Ok(())
    }
}

impl VecSink {
    fn kinds(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

fn agent(provider: Arc<Scripted>, dir: &Path, max_turns: u32) -> Agent {
    let mut config = LoopConfig::new("openai/test", dir, Some("Be brief."));
    config.max_turns = max_turns;
    Agent::new(provider, ToolRegistry::with_builtins(), config)
}

#[tokio::test]
async fn tool_errors_go_back_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Scripted::new(vec![
        Ok(call("c1", "nope", "{}")),
        Ok(call("c2", "shell", "{oops")),
        Ok(text("gave up")),
    ]);
    let sink = VecSink::default();
    let (_tx, mut rx) = mpsc::channel(1);
    let outcome = agent(provider.clone(), dir.path(), 10)
        .run("do it", &sink, &mut rx, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Succeeded {
            message: "gave up".into()
        }
    );
    let events = sink.0.lock().unwrap().clone();
    let errors: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EventBody::ToolResult {
                is_error: true,
                output,
                ..
            } => Some(output.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2, "{events:?}");
    assert!(matches!(&events[2], EventBody::ToolCall { arguments, .. } if arguments == &json!({})));
    assert!(
        matches!(&events[5], EventBody::ToolCall { arguments, .. } if arguments == &json!("{oops"))
    );
    let requests = provider.requests.lock().unwrap();
    assert_eq!(requests.len(), 3);
    let system = requests[0].messages[0].content.as_ref().unwrap().text();
    assert!(system.ends_with("Be brief."), "{system}");
    assert_eq!(requests[0].stream, Some(true));
    let last = requests[2].messages.last().unwrap();
    assert_eq!(last.role, Role::Tool);
    assert_eq!(last.tool_call_id.as_deref(), Some("c2"));
}

#[tokio::test]
async fn turn_limit_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Scripted::new(
        (0..3)
            .map(|_| Ok(call("c1", "shell", r#"{"command":"true"}"#)))
            .collect(),
    );
    let sink = VecSink::default();
    let (_tx, mut rx) = mpsc::channel(1);
    let outcome = agent(provider, dir.path(), 2)
        .run("loop", &sink, &mut rx, &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Failed { ref message } if message.contains("2 model calls"))
    );
    assert_eq!(sink.kinds().last().map(String::as_str), Some("status"));
}

#[tokio::test]
async fn model_error_is_reported_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Scripted::new(vec![Err(LlmError::Status {
        status: 500,
        body: "down".into(),
        retryable: true,
    })]);
    let sink = VecSink::default();
    let (_tx, mut rx) = mpsc::channel(1);
    let outcome = agent(provider, dir.path(), 5)
        .run("x", &sink, &mut rx, &CancellationToken::new())
        .await
        .unwrap();
    assert!(matches!(outcome, RunOutcome::Failed { .. }));
    assert_eq!(sink.kinds(), ["user_message", "error", "status"]);
    let last = sink.0.lock().unwrap().last().cloned().unwrap();
    assert!(matches!(
        last,
        EventBody::Status {
            state: Some(RunState::Failed),
            ..
        }
    ));
}

#[tokio::test]
async fn cancel_stops_a_hanging_model_call() {
    let dir = tempfile::tempdir().unwrap();
    // No scripted turn: the stream never yields.
    let provider = Scripted::new(vec![]);
    let sink = VecSink::default();
    let (_tx, mut rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let agent = agent(provider, dir.path(), 5);
    let run = agent.run("x", &sink, &mut rx, &cancel);
    let (outcome, ()) = tokio::join!(run, async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        cancel.cancel();
    });
    assert_eq!(outcome.unwrap(), RunOutcome::Cancelled);
    assert_eq!(sink.kinds(), ["user_message", "status"]);
}

#[tokio::test]
async fn followup_after_final_answer_continues() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Scripted::new(vec![Ok(text("first")), Ok(text("second"))]);
    let sink = VecSink::default();
    let (tx, mut rx) = mpsc::channel(4);
    tx.send(Followup {
        message: "also this".into(),
        from: "ana".into(),
        id: None,
    })
    .await
    .unwrap();
    let outcome = agent(provider.clone(), dir.path(), 5)
        .run("x", &sink, &mut rx, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RunOutcome::Succeeded {
            message: "second".into()
        }
    );
    assert_eq!(
        sink.kinds(),
        [
            "user_message",
            "assistant_message",
            "user_message",
            "assistant_message",
            "status"
        ]
    );
    let requests = provider.requests.lock().unwrap();
    let last = requests[1].messages.last().unwrap();
    assert_eq!(last.content.as_ref().unwrap().text(), "also this");
}
