//! The Anthropic Messages provider: OpenAI-shaped requests translated to
//! `POST /v1/messages`, and Anthropic's SSE events translated back into
//! OpenAI chunks.

use crate::http::{self, Flow, SseTranslator};
use crate::retry::{Failure, RetryPolicy, with_retry};
use crate::{ChunkStream, LlmError, ModelProvider, SecretString};
use eventsource_stream::Event;
use hangar_protocol::llm::{
    ChatChunk, ChatMessage, ChatRequest, ChunkChoice, Delta, FunctionCallDelta, MessageContent,
    Role, ToolCallDelta, Usage,
};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Anthropic's public API.
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// The `anthropic-version` header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Request fields that mean the same to Anthropic and are passed through
/// from [`ChatRequest::extra`].
const PASSTHROUGH: &[&str] = &["top_p", "top_k", "thinking", "metadata"];

/// How to reach the Anthropic Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Base URL; the provider posts to `{base_url}/v1/messages` (a base URL
    /// that already ends in `/v1` is accepted too). Defaults to
    /// `DEFAULT_ANTHROPIC_BASE_URL`.
    pub base_url: String,
    /// Sent as `x-api-key` when set.
    pub api_key: Option<SecretString>,
    /// Bound on connecting, sending and receiving the response head.
    pub request_timeout: Duration,
    /// Bound on the wait for each next event of the stream.
    pub idle_timeout: Duration,
    /// Retries before the first chunk.
    pub retry: RetryPolicy,
    /// `max_tokens` when the request sets neither `max_completion_tokens`
    /// nor `max_tokens` (Anthropic requires one).
    pub default_max_tokens: u32,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        AnthropicConfig {
            base_url: DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            api_key: None,
            request_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            default_max_tokens: 8192,
        }
    }
}

impl AnthropicConfig {
    /// Defaults with another base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        AnthropicConfig {
            base_url: base_url.into(),
            ..AnthropicConfig::default()
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, api_key: impl Into<SecretString>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Streams chat completions from the Anthropic Messages API, in OpenAI shapes.
///
/// Request: system and developer messages become `system`; assistant tool
/// calls become `tool_use` blocks (arguments parsed into `input`); tool
/// messages become `tool_result` blocks in a user message (consecutive
/// messages of one role are merged, as Anthropic wants turns to alternate);
/// tools become `{name, description, input_schema}`.
///
/// Response: text → `content`, thinking → `reasoning_content`, each
/// `tool_use` block → a tool call with its own `index`, `stop_reason` →
/// `finish_reason` (`end_turn`/`stop_sequence` → `stop`, `tool_use` →
/// `tool_calls`, `max_tokens` → `length`), token usage (cache reads and
/// writes counted as prompt tokens) in a last chunk without choices.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    config: AnthropicConfig,
    endpoint: String,
    client: reqwest::Client,
}

impl AnthropicProvider {
    /// A provider for `config`.
    pub fn new(config: AnthropicConfig) -> Result<Self, LlmError> {
        let base = config.base_url.trim_end_matches('/');
        let endpoint = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        Ok(AnthropicProvider {
            config,
            endpoint,
            client: http::client()?,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }

    async fn attempt(&self, body: bytes::Bytes) -> Result<ChunkStream, Failure> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("anthropic-version", ANTHROPIC_VERSION)
            .body(body);
        if let Some(key) = &self.config.api_key {
            request = request.header("x-api-key", key.expose());
        }
        let response = http::send(request, self.config.request_timeout).await?;
        if http::is_event_stream(&response) {
            return Ok(http::sse_stream(
                response,
                self.config.idle_timeout,
                AnthropicTranslator::default(),
            ));
        }
        let message: Value = http::read_json(response, self.config.request_timeout).await?;
        let chunks = message_to_chunks(&message)?;
        Ok(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok))))
    }
}

#[async_trait::async_trait]
impl ModelProvider for AnthropicProvider {
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, LlmError> {
        let body = to_messages_request(&request, self.config.default_max_tokens)?;
        let body = bytes::Bytes::from(
            serde_json::to_vec(&body)
                .map_err(|e| LlmError::Malformed(format!("encoding request: {e}")))?,
        );
        tracing::debug!(endpoint = %self.endpoint, model = %request.model, "anthropic messages request");
        with_retry(&self.config.retry, || self.attempt(body.clone())).await
    }
}

/// Translates an OpenAI chat request into an Anthropic Messages request body
/// (with `stream: true`).
pub(crate) fn to_messages_request(
    request: &ChatRequest,
    default_max_tokens: u32,
) -> Result<Value, LlmError> {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        match message.role {
            Role::System | Role::Developer => {
                let text = message
                    .content
                    .as_ref()
                    .map(MessageContent::text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    system.push(text);
                }
            }
            Role::User => push_turn(&mut messages, "user", content_blocks(message)),
            Role::Assistant => {
                let mut blocks = content_blocks(message);
                for call in message.tool_calls.iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.function.name,
                        "input": tool_input(&call.function.arguments),
                    }));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    LlmError::Malformed("request: a tool message has no tool_call_id".to_owned())
                })?;
                let mut block = json!({"type": "tool_result", "tool_use_id": id});
                let text = message
                    .content
                    .as_ref()
                    .map(MessageContent::text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    block["content"] = Value::String(text);
                }
                push_turn(&mut messages, "user", vec![block]);
            }
        }
    }

    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(default_max_tokens);
    let mut body = Map::new();
    body.insert("model".into(), Value::String(request.model.clone()));
    body.insert("max_tokens".into(), json!(max_tokens));
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    body.insert("stream".into(), Value::Bool(true));
    if !system.is_empty() {
        body.insert("system".into(), Value::String(system.join("\n\n")));
    }
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        let tools = tools
            .iter()
            .map(|tool| {
                let mut def = Map::new();
                def.insert("name".into(), Value::String(tool.function.name.clone()));
                if let Some(description) = &tool.function.description {
                    def.insert("description".into(), Value::String(description.clone()));
                }
                let schema = match &tool.function.parameters {
                    Value::Null => json!({"type": "object", "properties": {}}),
                    schema => schema.clone(),
                };
                def.insert("input_schema".into(), schema);
                Value::Object(def)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let parallel = request
        .extra
        .get("parallel_tool_calls")
        .and_then(Value::as_bool);
    if let Some(mut choice) = request.tool_choice.as_ref().and_then(tool_choice) {
        if parallel == Some(false) {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        body.insert("tool_choice".into(), choice);
    } else if parallel == Some(false) && body.contains_key("tools") {
        body.insert(
            "tool_choice".into(),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        );
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    match request.extra.get("stop") {
        Some(Value::String(stop)) => {
            body.insert("stop_sequences".into(), json!([stop]));
        }
        Some(stops @ Value::Array(_)) => {
            body.insert("stop_sequences".into(), stops.clone());
        }
        _ => {}
    }
    for key in PASSTHROUGH {
        if let Some(value) = request.extra.get(*key) {
            body.insert((*key).to_owned(), value.clone());
        }
    }
    Ok(Value::Object(body))
}

/// Appends blocks as a turn, merging into the previous turn of the same role.
fn push_turn(
    messages: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    blocks: Vec<Value>,
) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some((last, content)) if *last == role => content.extend(blocks),
        _ => messages.push((role, blocks)),
    }
}

/// A message's content as Anthropic blocks. Empty text is dropped (Anthropic
/// rejects empty text blocks); image parts become image blocks; parts of
/// other types are passed through as Anthropic-native blocks.
fn content_blocks(message: &ChatMessage) -> Vec<Value> {
    match &message.content {
        None => Vec::new(),
        Some(MessageContent::Text(text)) if text.is_empty() => Vec::new(),
        Some(MessageContent::Text(text)) => vec![json!({"type": "text", "text": text})],
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let text = part.get("text").and_then(Value::as_str).unwrap_or_default();
                    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
                }
                Some("image_url") => {
                    let url = part
                        .get("image_url")
                        .and_then(|i| i.get("url").or(Some(i)))
                        .and_then(Value::as_str)?;
                    Some(image_block(url))
                }
                _ => Some(part.clone()),
            })
            .collect(),
    }
}

fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        });
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// Tool-call arguments as a `tool_use` input, which must be an object.
/// Arguments that are not a JSON object (a model can produce anything) are
/// kept under a key rather than failing the whole conversation.
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({ "value": other }),
        Err(_) => json!({ "_raw_arguments": arguments }),
    }
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            _ => None,
        },
        Value::Object(_) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)?;
            Some(json!({"type": "tool", "name": name}))
        }
        _ => None,
    }
}

fn finish_reason(stop_reason: &str) -> String {
    match stop_reason {
        "end_turn" | "stop_sequence" | "pause_turn" => "stop",
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

fn prompt_tokens(usage: &Value) -> Option<u64> {
    let input = usage.get("input_tokens").and_then(Value::as_u64)?;
    let cache = ["cache_creation_input_tokens", "cache_read_input_tokens"]
        .iter()
        .filter_map(|k| usage.get(*k).and_then(Value::as_u64))
        .sum::<u64>();
    Some(input + cache)
}

/// An Anthropic `error` object as an [`LlmError`].
fn error_from(error: &Value) -> LlmError {
    let kind = error
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    };
    LlmError::Status {
        status,
        body: http::truncate(&error.to_string()),
        retryable: status == 429 || status >= 500,
    }
}

/// Translates Anthropic SSE events into OpenAI chunks.
#[derive(Default)]
struct AnthropicTranslator {
    id: String,
    model: String,
    created: i64,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Anthropic content-block index → (OpenAI tool-call index, saw arguments).
    tools: HashMap<u64, (u32, bool)>,
    next_tool: u32,
    stopped: bool,
}

impl AnthropicTranslator {
    fn chunk(&self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: None,
        }
    }

    fn usage_chunk(&self) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(Usage {
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
                total_tokens: self.prompt_tokens + self.completion_tokens,
            }),
        }
    }

    fn tool_delta(
        &self,
        index: u32,
        id: Option<String>,
        name: Option<String>,
        args: String,
    ) -> Delta {
        Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index,
                kind: id.as_ref().map(|_| "function".to_owned()),
                id,
                function: Some(FunctionCallDelta {
                    name,
                    arguments: Some(args),
                }),
            }]),
            ..Delta::default()
        }
    }
}

impl SseTranslator for AnthropicTranslator {
    fn event(&mut self, event: Event, out: &mut VecDeque<ChatChunk>) -> Result<Flow, LlmError> {
        if event.data.trim().is_empty() {
            return Ok(Flow::Continue);
        }
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
            LlmError::Malformed(format!(
                "event is not JSON ({e}): {}",
                http::truncate(&event.data)
            ))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                self.id = message
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.model = message
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.created = http::now_unix();
                if let Some(usage) = message.get("usage") {
                    self.prompt_tokens = prompt_tokens(usage).unwrap_or(0);
                    self.completion_tokens = usage
                        .get("output_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                }
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                out.push_back(self.chunk(delta, None));
            }
            "content_block_start" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = data.get("content_block").unwrap_or(&Value::Null);
                let text_of = |key: &str| {
                    block
                        .get(key)
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = text_of("text") {
                            out.push_back(self.chunk(
                                Delta {
                                    content: Some(text),
                                    ..Delta::default()
                                },
                                None,
                            ));
                        }
                    }
                    Some("thinking") => {
                        if let Some(text) = text_of("thinking") {
                            out.push_back(self.chunk(
                                Delta {
                                    reasoning_content: Some(text),
                                    ..Delta::default()
                                },
                                None,
                            ));
                        }
                    }
                    Some("tool_use") => {
                        let tool = self.next_tool;
                        self.next_tool += 1;
                        self.tools.insert(index, (tool, false));
                        let delta =
                            self.tool_delta(tool, text_of("id"), text_of("name"), String::new());
                        out.push_back(self.chunk(delta, None));
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = data.get("delta").unwrap_or(&Value::Null);
                let field = |key: &str| {
                    delta
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = field("text");
                        out.push_back(self.chunk(
                            Delta {
                                content: Some(text),
                                ..Delta::default()
                            },
                            None,
                        ));
                    }
                    Some("thinking_delta") => {
                        let text = field("thinking");
                        out.push_back(self.chunk(
                            Delta {
                                reasoning_content: Some(text),
                                ..Delta::default()
                            },
                            None,
                        ));
                    }
                    Some("input_json_delta") => {
                        let json = field("partial_json");
                        let Some((tool, saw)) = self.tools.get_mut(&index) else {
                            return Err(LlmError::Malformed(format!(
                                "input_json_delta for block {index}, which is not a tool_use"
                            )));
                        };
                        if json.is_empty() {
                            return Ok(Flow::Continue);
                        }
                        *saw = true;
                        let tool = *tool;
                        let delta = self.tool_delta(tool, None, None, json);
                        out.push_back(self.chunk(delta, None));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                // A tool without parameters streams no JSON at all; its
                // arguments must still parse.
                if let Some((tool, false)) = self.tools.get(&index).copied() {
                    let delta = self.tool_delta(tool, None, None, "{}".to_owned());
                    out.push_back(self.chunk(delta, None));
                }
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage") {
                    if let Some(output) = usage.get("output_tokens").and_then(Value::as_u64) {
                        self.completion_tokens = output;
                    }
                    if let Some(input) = prompt_tokens(usage) {
                        self.prompt_tokens = input;
                    }
                }
                if let Some(reason) = data
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stopped = true;
                    out.push_back(self.chunk(Delta::default(), Some(finish_reason(reason))));
                }
            }
            "message_stop" => {
                out.push_back(self.usage_chunk());
                return Ok(Flow::Done);
            }
            "error" => return Err(error_from(data.get("error").unwrap_or(&data))),
            // `ping` and event types added after this was written.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn end(&mut self, out: &mut VecDeque<ChatChunk>) -> Result<(), LlmError> {
        if self.stopped {
            out.push_back(self.usage_chunk());
            Ok(())
        } else {
            Err(LlmError::Transport(
                "stream ended early: no message_stop and no stop_reason".to_owned(),
            ))
        }
    }
}

/// A non-streamed Anthropic message (or error) as chunks.
fn message_to_chunks(message: &Value) -> Result<Vec<ChatChunk>, LlmError> {
    if message.get("type").and_then(Value::as_str) == Some("error") {
        return Err(error_from(message.get("error").unwrap_or(message)));
    }
    let mut translator = AnthropicTranslator {
        id: message
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        model: message
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        created: http::now_unix(),
        ..AnthropicTranslator::default()
    };
    if let Some(usage) = message.get("usage") {
        translator.prompt_tokens = prompt_tokens(usage).unwrap_or(0);
        translator.completion_tokens = usage
            .get("output_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
    }
    let mut delta = Delta {
        role: Some(Role::Assistant),
        ..Delta::default()
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |key: &str| {
            block
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(&field("text")),
            Some("thinking") => reasoning.push_str(&field("thinking")),
            Some("tool_use") => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(ToolCallDelta {
                    index: u32::try_from(calls.len()).unwrap_or(u32::MAX),
                    id: Some(field("id")),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: Some(field("name")),
                        arguments: Some(input.to_string()),
                    }),
                });
            }
            _ => {}
        }
    }
    delta.content = Some(text);
    delta.reasoning_content = (!reasoning.is_empty()).then_some(reasoning);
    delta.tool_calls = (!calls.is_empty()).then_some(calls);
    let finish = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason);
    Ok(vec![
        translator.chunk(delta, finish),
        translator.usage_chunk(),
    ])
}

#[cfg(test)]
mod tests {
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
}
