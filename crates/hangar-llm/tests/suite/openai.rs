//! The OpenAI provider against the fake server's chat-completions endpoint.

use super::common::{fast_retry, request, shell_tool, user};
use hangar_llm::llm::{ChatMessage, MessageContent, Role};
use hangar_llm::{LlmError, ModelProvider, OpenAiConfig, OpenAiProvider, collect};
use hangar_testkit::fake_llm::{FakeLlm, FakeToolCall, Turn};
use serde_json::{Value, json};

fn provider(llm: &FakeLlm) -> OpenAiProvider {
    OpenAiProvider::new(
        OpenAiConfig::new(llm.base_url())
            .with_api_key("run-token-123")
            .with_retry(fast_retry()),
    )
    .unwrap()
}

#[tokio::test]
async fn multi_turn_text_conversation() {
    let llm = FakeLlm::start(vec![
        Turn::text("Hello, how can I help?"),
        Turn::text("Sure: 4."),
    ])
    .await;
    let provider = provider(&llm);

    let mut messages = vec![ChatMessage::text(Role::System, "Be brief."), user("hi")];
    let mut first = request("openai/gpt-5", messages.clone());
    first.extra.insert("reasoning_effort".into(), json!("low"));
    let response = collect(provider.chat_stream(first).await.unwrap())
        .await
        .unwrap();
    let answer = response.choices[0].message.clone();
    assert_eq!(answer.role, Role::Assistant);
    assert_eq!(
        answer.content,
        Some(MessageContent::Text("Hello, how can I help?".into()))
    );
    assert_eq!(response.choices[0].finish_reason.as_deref(), Some("stop"));
    let usage = response.usage.expect("usage requested with include_usage");
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    messages.push(answer);
    messages.push(user("what is 2+2?"));
    let response = collect(
        provider
            .chat_stream(request("openai/gpt-5", messages))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        response.choices[0].message.content,
        Some(MessageContent::Text("Sure: 4.".into()))
    );

    let received = llm.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].path, "/v1/chat/completions");
    assert_eq!(received[0].headers["authorization"], "Bearer run-token-123");
    let body = &received[0].body;
    // Gateway-style ids go out verbatim; unknown fields are forwarded.
    assert_eq!(body["model"], "openai/gpt-5");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["reasoning_effort"], "low");
    assert_eq!(received[1].body["messages"].as_array().unwrap().len(), 4);
    assert_eq!(
        received[1].body["messages"][2]["content"],
        "Hello, how can I help?"
    );
    assert_eq!(llm.remaining(), 0);
    assert!(llm.violations().is_empty());
}

async fn parallel_tool_calls(non_streaming: bool) {
    let calls = Turn::tool_calls([
        ("shell", json!({"command": "ls -la"})),
        ("read_file", json!({"path": "src/main.rs", "limit": 20})),
    ]);
    let first = if non_streaming {
        Turn::non_streaming(calls)
    } else {
        calls
    };
    let llm = FakeLlm::start(vec![first, Turn::text("Two files.")]).await;
    let provider = provider(&llm);

    let mut req = request("gpt-5", vec![user("look around")]);
    req.tools = Some(vec![shell_tool()]);
    let response = collect(provider.chat_stream(req.clone()).await.unwrap())
        .await
        .unwrap();
    let choice = &response.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(choice.message.content, None);
    let calls = choice.message.tool_calls.clone().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_str(), calls[0].function.name.as_str()),
        ("call_1", "shell")
    );
    assert_eq!(
        (calls[1].id.as_str(), calls[1].function.name.as_str()),
        ("call_2", "read_file")
    );
    let args: Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(args, json!({"command": "ls -la"}));
    let args: Value = serde_json::from_str(&calls[1].function.arguments).unwrap();
    assert_eq!(args, json!({"path": "src/main.rs", "limit": 20}));

    // Answer both calls; the fake accepts only a complete set of results.
    req.messages.push(choice.message.clone());
    req.messages
        .push(ChatMessage::tool_result("call_2", "fn main() {}"));
    req.messages
        .push(ChatMessage::tool_result("call_1", "main.rs\nlib.rs"));
    let response = collect(provider.chat_stream(req).await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.choices[0].message.content,
        Some(MessageContent::Text("Two files.".into()))
    );
    assert!(llm.violations().is_empty(), "{:?}", llm.violations());
    assert_eq!(llm.requests()[1]["tools"][0]["function"]["name"], "shell");
}

#[tokio::test]
async fn parallel_tool_calls_streamed() {
    parallel_tool_calls(false).await;
}

#[tokio::test]
async fn parallel_tool_calls_from_a_server_that_ignores_stream() {
    parallel_tool_calls(true).await;
}

#[tokio::test]
async fn text_reasoning_and_tool_call_in_one_answer() {
    let llm = FakeLlm::start(vec![Turn::Message {
        text: "Let me check.".into(),
        reasoning: Some("The user wants a listing.".into()),
        tool_calls: vec![FakeToolCall::with_id(
            "abc",
            "shell",
            json!({"command": "ls"}),
        )],
    }])
    .await;
    let response = collect(
        provider(&llm)
            .chat_stream(request("m", vec![user("ls")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let message = &response.choices[0].message;
    assert_eq!(
        message.content,
        Some(MessageContent::Text("Let me check.".into()))
    );
    assert_eq!(
        message.reasoning_content.as_deref(),
        Some("The user wants a listing.")
    );
    assert_eq!(message.tool_calls.as_ref().unwrap()[0].id, "abc");
}

#[tokio::test]
async fn an_unanswered_tool_call_is_refused_and_not_retried() {
    let llm = FakeLlm::start(vec![Turn::text("never sent")]).await;
    let mut assistant = ChatMessage::text(Role::Assistant, "");
    assistant.tool_calls = Some(vec![hangar_llm::llm::ToolCall {
        id: "call_7".into(),
        kind: "function".into(),
        function: hangar_llm::llm::FunctionCall {
            name: "shell".into(),
            arguments: "{}".into(),
        },
    }]);
    let err = provider(&llm)
        .chat_stream(request("m", vec![user("go"), assistant, user("and?")]))
        .await
        .err()
        .unwrap();
    match err {
        LlmError::Status {
            status,
            body,
            retryable,
        } => {
            assert_eq!(status, 400);
            assert!(!retryable);
            assert!(body.contains("tool call call_7 has no result"), "{body}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert_eq!(llm.requests().len(), 1);
    assert_eq!(llm.violations(), ["tool call call_7 has no result"]);
    assert_eq!(llm.remaining(), 1);
}

#[tokio::test]
async fn a_stream_cut_mid_response_is_an_error() {
    let llm = FakeLlm::start(vec![Turn::CutStream, Turn::text("unused")]).await;
    let stream = provider(&llm)
        .chat_stream(request("m", vec![user("hi")]))
        .await
        .unwrap();
    let err = collect(stream).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Transport(m) if m.contains("stream ended early")),
        "unexpected error: {err}"
    );
    // A chunk had been yielded, so the request was not repeated.
    assert_eq!(llm.requests().len(), 1);
    assert_eq!(llm.remaining(), 1);
}
