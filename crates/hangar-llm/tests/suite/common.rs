//! Test helpers shared by the suite.

use hangar_llm::RetryPolicy;
use hangar_llm::llm::{ChatMessage, ChatRequest, FunctionDef, Role, ToolSpec};
use std::time::Duration;

/// Retries with delays short enough for tests.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        unreachable_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

/// A request for `model` with `messages` and no tools.
pub fn request(model: &str, messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        model: model.to_owned(),
        messages,
        tools: None,
        tool_choice: None,
        stream: None,
        stream_options: None,
        temperature: None,
        max_tokens: None,
        max_completion_tokens: None,
        extra: Default::default(),
    }
}

/// The `shell` tool.
pub fn shell_tool() -> ToolSpec {
    ToolSpec {
        kind: "function".to_owned(),
        function: FunctionDef {
            name: "shell".to_owned(),
            description: Some("Run a shell command".to_owned()),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"]
            }),
        },
    }
}

/// A user message.
pub fn user(text: &str) -> ChatMessage {
    ChatMessage::text(Role::User, text)
}
