//! Unit tests of the Anthropic translation.

use super::*;
use crate::collect;
use hangar_protocol::llm::{FunctionCall, FunctionDef, ToolCall, ToolSpec};

fn request(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        model: "claude-sonnet-4-5".into(),
        messages,
        tools: None,
        tool_choice: None,
        stream: None,
        stream_options: None,
        temperature: None,
        max_tokens: None,
        max_completion_tokens: None,
        extra: Map::new(),
    }
}

fn assistant_calls(calls: &[(&str, &str, &str)]) -> ChatMessage {
    ChatMessage {
        tool_calls: Some(
            calls
                .iter()
                .map(|(id, name, args)| ToolCall {
                    id: (*id).into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: (*name).into(),
                        arguments: (*args).into(),
                    },
                })
                .collect(),
        ),
        ..ChatMessage::text(Role::Assistant, "Let me look.")
    }
}

#[test]
fn translates_a_conversation_with_tools() {
    let mut req = request(vec![
        ChatMessage::text(Role::System, "You are terse."),
        ChatMessage::text(Role::Developer, "Use tools."),
        ChatMessage::text(Role::User, "List files"),
        assistant_calls(&[
            ("t1", "shell", r#"{"command":"ls"}"#),
            ("t2", "list_files", ""),
        ]),
        ChatMessage::tool_result("t1", "a.txt"),
        ChatMessage::tool_result("t2", ""),
        ChatMessage::text(Role::User, "and?"),
    ]);
    req.tools = Some(vec![ToolSpec {
        kind: "function".into(),
        function: FunctionDef {
            name: "shell".into(),
            description: Some("Run a command".into()),
            parameters: json!({"type": "object", "properties": {"command": {"type": "string"}}}),
        },
    }]);
    req.tool_choice = Some(json!("required"));
    req.max_completion_tokens = Some(100);
    req.extra.insert("stop".into(), json!("END"));
    let body = to_messages_request(&req, 8192).unwrap();
    assert_eq!(body["system"], "You are terse.\n\nUse tools.");
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        body["tools"],
        json!([{"name": "shell", "description": "Run a command",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "List files"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "shell", "input": {"command": "ls"}},
                {"type": "tool_use", "id": "t2", "name": "list_files", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"},
                {"type": "tool_result", "tool_use_id": "t2"},
                {"type": "text", "text": "and?"},
            ]},
        ])
    );
}

#[test]
fn defaults_max_tokens_and_translates_images_and_named_tool_choice() {
    let mut req = request(vec![ChatMessage {
        content: Some(MessageContent::Parts(vec![
            json!({"type": "text", "text": "what is this"}),
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
            json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
        ])),
        ..ChatMessage::text(Role::User, "")
    }]);
    req.tool_choice = Some(json!({"type": "function", "function": {"name": "shell"}}));
    req.extra.insert("parallel_tool_calls".into(), json!(false));
    let body = to_messages_request(&req, 8192).unwrap();
    assert_eq!(body["max_tokens"], 8192);
    assert!(body.get("system").is_none());
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "shell", "disable_parallel_tool_use": true})
    );
    let content = &body["messages"][0]["content"];
    assert_eq!(
        content[1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    assert_eq!(
        content[2]["source"],
        json!({"type": "url", "url": "https://x/y.png"})
    );
}

#[test]
fn odd_tool_arguments_still_make_an_object() {
    assert_eq!(tool_input("[1]"), json!({"value": [1]}));
    assert_eq!(tool_input("{oops"), json!({"_raw_arguments": "{oops"}));
    assert_eq!(tool_input("  "), json!({}));
}

fn events(list: Vec<Value>) -> Result<Vec<ChatChunk>, LlmError> {
    let mut t = AnthropicTranslator::default();
    let mut out = VecDeque::new();
    for data in list {
        let event = Event {
            event: data["type"].as_str().unwrap_or_default().to_owned(),
            data: data.to_string(),
            id: String::new(),
            retry: None,
        };
        if let Flow::Done = t.event(event, &mut out)? {
            return Ok(out.into_iter().collect());
        }
    }
    t.end(&mut out)?;
    Ok(out.into_iter().collect())
}

#[tokio::test]
async fn translates_a_streamed_answer_with_thinking_text_and_tools() {
    let chunks = events(vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Sure"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "shell", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"command\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"ls\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "list_files", "input": {}}}),
        json!({"type": "content_block_stop", "index": 3}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}}),
        json!({"type": "message_stop"}),
    ])
    .unwrap();
    let stream: ChunkStream = Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)));
    let response = collect(stream).await.unwrap();
    assert_eq!(response.id, "msg_1");
    assert_eq!(response.model, "claude-x");
    let choice = &response.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(
        choice.message.content,
        Some(MessageContent::Text("Sure".into()))
    );
    assert_eq!(choice.message.reasoning_content.as_deref(), Some("hmm"));
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_str(), calls[0].function.name.as_str()),
        ("toolu_a", "shell")
    );
    assert_eq!(calls[0].function.arguments, r#"{"command":"ls"}"#);
    assert_eq!(
        (calls[1].id.as_str(), calls[1].function.arguments.as_str()),
        ("toolu_b", "{}")
    );
    let usage = response.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (15, 42, 57)
    );
}

#[test]
fn maps_stop_reasons_and_errors() {
    assert_eq!(finish_reason("end_turn"), "stop");
    assert_eq!(finish_reason("tool_use"), "tool_calls");
    assert_eq!(finish_reason("max_tokens"), "length");
    let err = events(vec![
        json!({"type": "message_start", "message": {"id": "m"}}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ])
    .unwrap_err();
    assert!(
        matches!(err, LlmError::Status { status: 529, retryable: true, ref body } if body.contains("Overloaded"))
    );
}

#[test]
fn an_unfinished_stream_is_an_error() {
    let err = events(vec![
        json!({"type": "message_start", "message": {"id": "m"}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}}),
    ])
    .unwrap_err();
    assert!(
        matches!(err, LlmError::Transport(ref m) if m.contains("stream ended early")),
        "{err}"
    );
}

#[test]
fn a_whole_message_becomes_chunks() {
    let chunks = message_to_chunks(&json!({
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "text", "text": "Running"},
            {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {"command": "ls"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 4}
    }))
    .unwrap();
    assert_eq!(chunks.len(), 2);
    let delta = &chunks[0].choices[0].delta;
    assert_eq!(delta.content.as_deref(), Some("Running"));
    let call = &delta.tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        call.function.as_ref().unwrap().arguments.as_deref(),
        Some(r#"{"command":"ls"}"#)
    );
    assert_eq!(
        chunks[0].choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );
    assert_eq!(chunks[1].usage.unwrap().total_tokens, 7);
}
