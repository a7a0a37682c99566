//! Folding a chunk stream into a complete response.

use crate::{ChunkStream, LlmError};
use futures::StreamExt;
use hangar_protocol::llm::{
    ChatChunk, ChatMessage, ChatResponse, Choice, FunctionCall, MessageContent, Role, ToolCall,
    Usage,
};
use std::collections::{BTreeMap, HashMap};

/// Reads `stream` to its end and assembles the complete response.
///
/// Text and reasoning fragments are concatenated; tool calls are assembled by
/// their `index` (id, type and name from the first fragment that has them,
/// arguments concatenated), which handles parallel tool calls. A fragment
/// whose id differs from the one already seen at its index starts a new call
/// (some servers send every call with index 0). Calls that never got an id get
/// `call_<n>`. The first error in the stream is returned as is.
pub async fn collect(mut stream: ChunkStream) -> Result<ChatResponse, LlmError> {
    let mut acc = Accumulator::default();
    while let Some(chunk) = stream.next().await {
        acc.push(chunk?);
    }
    Ok(acc.finish())
}

#[derive(Default)]
struct Accumulator {
    id: String,
    created: i64,
    model: String,
    usage: Option<Usage>,
    choices: BTreeMap<u32, ChoiceAcc>,
}

#[derive(Default)]
struct ChoiceAcc {
    role: Option<Role>,
    text: String,
    saw_text: bool,
    reasoning: String,
    calls: Vec<CallAcc>,
    /// Wire index → position in `calls`.
    by_index: HashMap<u32, usize>,
    finish_reason: Option<String>,
}

#[derive(Default)]
struct CallAcc {
    id: Option<String>,
    kind: Option<String>,
    name: String,
    arguments: String,
}

impl Accumulator {
    fn push(&mut self, chunk: ChatChunk) {
        if self.id.is_empty() {
            self.id = chunk.id;
        }
        if self.created == 0 {
            self.created = chunk.created;
        }
        if self.model.is_empty() {
            self.model = chunk.model;
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        for choice in chunk.choices {
            let acc = self.choices.entry(choice.index).or_default();
            let delta = choice.delta;
            if acc.role.is_none() {
                acc.role = delta.role;
            }
            if let Some(text) = delta.content {
                acc.saw_text = true;
                acc.text.push_str(&text);
            }
            if let Some(reasoning) = delta.reasoning_content {
                acc.reasoning.push_str(&reasoning);
            }
            for fragment in delta.tool_calls.unwrap_or_default() {
                let known = acc.by_index.get(&fragment.index).copied();
                let position = match (known, &fragment.id) {
                    (Some(pos), Some(id))
                        if acc.calls[pos].id.as_ref().is_some_and(|seen| seen != id) =>
                    {
                        None
                    }
                    (Some(pos), _) => Some(pos),
                    (None, _) => None,
                };
                let position = position.unwrap_or_else(|| {
                    acc.calls.push(CallAcc::default());
                    let pos = acc.calls.len() - 1;
                    acc.by_index.insert(fragment.index, pos);
                    pos
                });
                let call = &mut acc.calls[position];
                if call.id.is_none() {
                    call.id = fragment.id.filter(|id| !id.is_empty());
                }
                if call.kind.is_none() {
                    call.kind = fragment.kind;
                }
                if let Some(function) = fragment.function {
                    if let Some(name) = function.name
                        && call.name.is_empty()
                    {
                        call.name = name;
                    }
                    if let Some(arguments) = function.arguments {
                        call.arguments.push_str(&arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                acc.finish_reason = choice.finish_reason;
            }
        }
    }

    fn finish(self) -> ChatResponse {
        let choices = self
            .choices
            .into_iter()
            .map(|(index, acc)| {
                let tool_calls: Vec<ToolCall> = acc
                    .calls
                    .into_iter()
                    .enumerate()
                    .map(|(n, call)| ToolCall {
                        id: call.id.unwrap_or_else(|| format!("call_{n}")),
                        kind: call.kind.unwrap_or_else(|| "function".to_owned()),
                        function: FunctionCall {
                            name: call.name,
                            arguments: call.arguments,
                        },
                    })
                    .collect();
                // OpenAI answers `content: null` next to tool calls.
                let content = (acc.saw_text && !acc.text.is_empty() || tool_calls.is_empty())
                    .then_some(MessageContent::Text(acc.text));
                Choice {
                    index,
                    message: ChatMessage {
                        role: acc.role.unwrap_or(Role::Assistant),
                        content,
                        name: None,
                        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                        tool_call_id: None,
                        reasoning_content: (!acc.reasoning.is_empty()).then_some(acc.reasoning),
                    },
                    finish_reason: acc.finish_reason,
                }
            })
            .collect();
        ChatResponse {
            id: self.id,
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stream(chunks: Vec<serde_json::Value>) -> ChunkStream {
        let items: Vec<Result<ChatChunk, LlmError>> = chunks
            .into_iter()
            .map(|c| Ok(serde_json::from_value(c).unwrap()))
            .collect();
        Box::pin(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn concatenates_text_and_keeps_usage() {
        let response = collect(stream(vec![
            json!({"id": "r", "model": "m", "created": 9, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "r", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
            json!({"id": "r", "choices": [{"index": 0, "delta": {"content": "lo", "reasoning_content": "think"}}]}),
            json!({"id": "r", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"id": "r", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        ]))
        .await
        .unwrap();
        assert_eq!(response.id, "r");
        assert_eq!(response.model, "m");
        assert_eq!(response.created, 9);
        let choice = &response.choices[0];
        assert_eq!(choice.message.role, Role::Assistant);
        assert_eq!(
            choice.message.content,
            Some(MessageContent::Text("Hello".into()))
        );
        assert_eq!(choice.message.reasoning_content.as_deref(), Some("think"));
        assert_eq!(choice.message.tool_calls, None);
        assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
        assert_eq!(response.usage.unwrap().total_tokens, 7);
    }

    #[tokio::test]
    async fn assembles_interleaved_parallel_tool_calls() {
        let response = collect(stream(vec![
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "a", "type": "function", "function": {"name": "shell", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": "b", "type": "function", "function": {"name": "grep", "arguments": "{\"pat"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "{\"command\":"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "function": {"arguments": "tern\":\"x\"}"}},
                {"index": 0, "function": {"arguments": "\"ls\"}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        ]))
        .await
        .unwrap();
        let message = &response.choices[0].message;
        assert_eq!(message.content, None);
        let calls = message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[0].function.name, "shell");
        assert_eq!(calls[0].function.arguments, r#"{"command":"ls"}"#);
        assert_eq!(calls[1].id, "b");
        assert_eq!(calls[1].function.name, "grep");
        assert_eq!(calls[1].function.arguments, r#"{"pattern":"x"}"#);
        assert_eq!(
            response.choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
    }

    #[tokio::test]
    async fn a_new_id_at_a_reused_index_is_a_new_call_and_missing_ids_are_filled() {
        let response = collect(stream(vec![
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "x", "function": {"name": "one", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "y", "function": {"name": "two", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 5, "function": {"name": "three", "arguments": "{}"}}]}}]}),
        ]))
        .await
        .unwrap();
        let calls = response.choices[0].message.tool_calls.clone().unwrap();
        let names: Vec<_> = calls.iter().map(|c| c.function.name.as_str()).collect();
        assert_eq!(names, ["one", "two", "three"]);
        assert_eq!(calls[1].id, "y");
        assert_eq!(calls[2].id, "call_2");
        assert_eq!(calls[2].kind, "function");
    }

    #[tokio::test]
    async fn returns_the_first_error() {
        let items: Vec<Result<ChatChunk, LlmError>> = vec![
            Ok(serde_json::from_value(json!({"choices": []})).unwrap()),
            Err(LlmError::Transport("cut".into())),
        ];
        let err = collect(Box::pin(futures::stream::iter(items)))
            .await
            .unwrap_err();
        assert!(matches!(err, LlmError::Transport(m) if m == "cut"));
    }
}
