//! Folding a streamed model answer into one turn.

use hangar_protocol::llm::{
    ChatChunk, ChatMessage, FunctionCall, MessageContent, Role, ToolCall, Usage,
};
use std::collections::BTreeMap;

/// A tool call as the model made it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallRequest {
    pub id: String,
    pub name: String,
    /// Raw JSON text, as streamed.
    pub arguments: String,
}

/// One complete model answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Turn {
    pub text: String,
    pub reasoning: String,
    pub calls: Vec<CallRequest>,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
}

impl Turn {
    /// The assistant message to put back into the conversation.
    pub fn assistant_message(&self) -> ChatMessage {
        let tool_calls = (!self.calls.is_empty()).then(|| {
            self.calls
                .iter()
                .map(|c| ToolCall {
                    id: c.id.clone(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    },
                })
                .collect()
        });
        ChatMessage {
            role: Role::Assistant,
            content: (!self.text.is_empty()).then(|| MessageContent::Text(self.text.clone())),
            name: None,
            tool_calls,
            tool_call_id: None,
            reasoning_content: None,
        }
    }
}

#[derive(Debug, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// Accumulates `chat.completion.chunk`s (first choice only) into a [`Turn`].
#[derive(Debug, Default)]
pub(crate) struct TurnAccumulator {
    text: String,
    reasoning: String,
    calls: BTreeMap<u32, PartialCall>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

impl TurnAccumulator {
    pub fn push(&mut self, chunk: ChatChunk) {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return;
        };
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        let delta = choice.delta;
        if let Some(text) = delta.content {
            self.text.push_str(&text);
        }
        if let Some(text) = delta.reasoning_content {
            self.reasoning.push_str(&text);
        }
        for part in delta.tool_calls.unwrap_or_default() {
            let call = self.calls.entry(part.index).or_default();
            if let Some(id) = part.id.filter(|id| !id.is_empty()) {
                call.id = Some(id);
            }
            if let Some(function) = part.function {
                if let Some(name) = function.name {
                    call.name.push_str(&name);
                }
                if let Some(arguments) = function.arguments {
                    call.arguments.push_str(&arguments);
                }
            }
        }
    }

    /// The turn; `turn_no` makes ids for calls the server sent without one.
    pub fn finish(self, turn_no: u32) -> Turn {
        let calls = self
            .calls
            .into_iter()
            .map(|(index, call)| CallRequest {
                id: call.id.unwrap_or_else(|| format!("call_{turn_no}_{index}")),
                name: call.name,
                arguments: call.arguments,
            })
            .collect();
        Turn {
            text: self.text,
            reasoning: self.reasoning,
            calls,
            usage: self.usage,
            finish_reason: self.finish_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunk(v: serde_json::Value) -> ChatChunk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn assembles_text_tool_calls_and_usage() {
        let mut acc = TurnAccumulator::default();
        acc.push(chunk(
            json!({"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}),
        ));
        acc.push(chunk(
            json!({"choices":[{"index":0,"delta":{"content":"lo"}}]}),
        ));
        acc.push(chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"index":0,"id":"a","type":"function","function":{"name":"shell","arguments":"{\"comm"}},
            {"index":1,"type":"function","function":{"name":"shell","arguments":""}}]}}]})));
        acc.push(chunk(json!({"choices":[{"index":0,"delta":{"tool_calls":[
            {"index":0,"function":{"arguments":"and\":\"ls\"}"}},
            {"index":1,"function":{"arguments":"{}"}}]},"finish_reason":"tool_calls"}]})));
        acc.push(chunk(json!({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})));
        let turn = acc.finish(4);
        assert_eq!(turn.text, "Hello");
        assert_eq!(turn.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(turn.usage.map(|u| u.prompt_tokens), Some(7));
        assert_eq!(
            turn.calls,
            vec![
                CallRequest {
                    id: "a".into(),
                    name: "shell".into(),
                    arguments: r#"{"command":"ls"}"#.into()
                },
                CallRequest {
                    id: "call_4_1".into(),
                    name: "shell".into(),
                    arguments: "{}".into()
                },
            ]
        );
        let msg = turn.assistant_message();
        assert_eq!(msg.tool_calls.as_ref().map(Vec::len), Some(2));
        assert_eq!(msg.content, Some(MessageContent::Text("Hello".into())));
    }
}
