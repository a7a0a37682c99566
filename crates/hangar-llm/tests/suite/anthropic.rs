//! The Anthropic provider against the fake server's Messages endpoint.

use super::common::{fast_retry, request, shell_tool, user};
use hangar_llm::llm::{ChatMessage, MessageContent, Role};
use hangar_llm::{AnthropicConfig, AnthropicProvider, LlmError, ModelProvider, collect};
use hangar_testkit::fake_llm::{FakeLlm, FakeToolCall, Turn};
use serde_json::{Value, json};

fn provider(llm: &FakeLlm) -> AnthropicProvider {
    AnthropicProvider::new(
        AnthropicConfig::new(llm.anthropic_base_url())
            .with_api_key("sk-ant-test")
            .with_retry(fast_retry()),
    )
    .unwrap()
}

#[tokio::test]
async fn tool_use_round_trip_with_system_prompt() {
    let llm = FakeLlm::start(vec![
        Turn::Message {
            text: "Listing files.".into(),
            reasoning: Some("I should run ls.".into()),
            tool_calls: vec![
                FakeToolCall::new("shell", json!({"command": "ls"})),
                FakeToolCall::new("shell", json!({"command": "pwd"})),
            ],
        },
        Turn::text("There are two files."),
    ])
    .await;
    let provider = provider(&llm);

    let mut req = request(
        "claude-sonnet-4-5",
        vec![
            ChatMessage::text(Role::System, "You are a coding agent."),
            user("what is here?"),
        ],
    );
    req.tools = Some(vec![shell_tool()]);
    let response = collect(provider.chat_stream(req.clone()).await.unwrap())
        .await
        .unwrap();
    let choice = &response.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        choice.message.content,
        Some(MessageContent::Text("Listing files.".into()))
    );
    assert_eq!(
        choice.message.reasoning_content.as_deref(),
        Some("I should run ls.")
    );
    let calls = choice.message.tool_calls.clone().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].id, "call_1");
    assert_eq!(calls[1].id, "call_2");
    let args: Value = serde_json::from_str(&calls[1].function.arguments).unwrap();
    assert_eq!(args, json!({"command": "pwd"}));
    assert_eq!(response.model, "claude-sonnet-4-5");
    let usage = response.usage.unwrap();
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);

    req.messages.push(choice.message.clone());
    req.messages
        .push(ChatMessage::tool_result("call_1", "a.txt b.txt"));
    req.messages
        .push(ChatMessage::tool_result("call_2", "/work"));
    let response = collect(provider.chat_stream(req).await.unwrap())
        .await
        .unwrap();
    assert_eq!(response.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        response.choices[0].message.content,
        Some(MessageContent::Text("There are two files.".into()))
    );
    assert!(llm.violations().is_empty(), "{:?}", llm.violations());

    let received = llm.received();
    assert_eq!(received[0].path, "/v1/messages");
    assert_eq!(received[0].headers["x-api-key"], "sk-ant-test");
    assert_eq!(received[0].headers["anthropic-version"], "2023-06-01");
    let first = &received[0].body;
    assert_eq!(first["system"], "You are a coding agent.");
    assert_eq!(first["max_tokens"], 8192);
    assert_eq!(first["stream"], true);
    assert_eq!(first["tools"][0]["name"], "shell");
    assert_eq!(
        first["tools"][0]["input_schema"]["required"],
        json!(["command"])
    );
    let second = &received[1].body;
    assert_eq!(
        second["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "what is here?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Listing files."},
                {"type": "tool_use", "id": "call_1", "name": "shell", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "call_2", "name": "shell", "input": {"command": "pwd"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt b.txt"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "/work"},
            ]},
        ])
    );
}

#[tokio::test]
async fn a_plain_json_message_is_translated() {
    let llm = FakeLlm::start(vec![Turn::non_streaming(Turn::tool_call(
        "shell",
        json!({"command": "ls"}),
    ))])
    .await;
    let response = collect(
        provider(&llm)
            .chat_stream(request("claude", vec![user("hi")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let calls = response.choices[0].message.tool_calls.clone().unwrap();
    assert_eq!(calls[0].function.name, "shell");
    assert_eq!(calls[0].function.arguments, r#"{"command":"ls"}"#);
    assert_eq!(
        response.choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );
}

#[tokio::test]
async fn an_unanswered_tool_use_is_refused() {
    let llm = FakeLlm::start(vec![Turn::text("never sent")]).await;
    let mut assistant = ChatMessage::text(Role::Assistant, "");
    assistant.tool_calls = Some(vec![hangar_llm::llm::ToolCall {
        id: "toolu_1".into(),
        kind: "function".into(),
        function: hangar_llm::llm::FunctionCall {
            name: "shell".into(),
            arguments: r#"{"command":"ls"}"#.into(),
        },
    }]);
    let err = provider(&llm)
        .chat_stream(request("claude", vec![user("go"), assistant]))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, LlmError::Status { status: 400, body, .. } if body.contains("tool call toolu_1 has no result")),
        "unexpected error: {err}"
    );
    assert_eq!(llm.violations(), ["tool call toolu_1 has no result"]);
}

#[tokio::test]
async fn a_cut_stream_is_an_error() {
    let llm = FakeLlm::start(vec![Turn::CutStream]).await;
    let stream = provider(&llm)
        .chat_stream(request("claude", vec![user("hi")]))
        .await
        .unwrap();
    let err = collect(stream).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Transport(m) if m.contains("stream ended early")),
        "unexpected error: {err}"
    );
    assert_eq!(llm.requests().len(), 1);
}

#[tokio::test]
async fn an_overloaded_answer_is_retried() {
    let overloaded = Turn::Error {
        status: 529,
        body:
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                .to_string(),
        retry_after: None,
    };
    let llm = FakeLlm::start(vec![overloaded, Turn::text("ok now")]).await;
    let response = collect(
        provider(&llm)
            .chat_stream(request("claude", vec![user("hi")]))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        response.choices[0].message.content,
        Some(MessageContent::Text("ok now".into()))
    );
    assert_eq!(llm.requests().len(), 2);
}
