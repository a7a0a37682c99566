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
            client: http::client(&endpoint)?,
            config,
            endpoint,
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

/// The system prompt parts and the alternating user/assistant turns of an
/// OpenAI conversation, in Anthropic's shape (tool results are user turns).
type Conversation = (Vec<String>, Vec<(&'static str, Vec<Value>)>);

/// Splits `request`'s messages into [`Conversation`].
fn conversation(request: &ChatRequest) -> Result<Conversation, LlmError> {
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
    Ok((system, messages))
}

/// An OpenAI function tool as an Anthropic tool definition.
fn tool_definition(tool: &hangar_protocol::llm::ToolSpec) -> Value {
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
}

/// Translates an OpenAI chat request into an Anthropic Messages request body
/// (with `stream: true`).
pub(crate) fn to_messages_request(
    request: &ChatRequest,
    default_max_tokens: u32,
) -> Result<Value, LlmError> {
    let (system, messages) = conversation(request)?;
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
        let tools = tools.iter().map(tool_definition).collect();
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

impl AnthropicTranslator {
    /// `message_start`: the response's id, model and first usage.
    fn message_start(&mut self, data: &Value, out: &mut VecDeque<ChatChunk>) {
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

    /// `content_block_start`: text and thinking may start with content; a
    /// `tool_use` block becomes the next tool call.
    fn block_start(&mut self, data: &Value, out: &mut VecDeque<ChatChunk>) {
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
                let delta = self.tool_delta(tool, text_of("id"), text_of("name"), String::new());
                out.push_back(self.chunk(delta, None));
            }
            _ => {}
        }
    }

    /// `content_block_delta`: more text, thinking or tool-call arguments.
    fn block_delta(
        &mut self,
        data: &Value,
        out: &mut VecDeque<ChatChunk>,
    ) -> Result<Flow, LlmError> {
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
        Ok(Flow::Continue)
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
            "message_start" => self.message_start(&data, out),
            "content_block_start" => self.block_start(&data, out),
            "content_block_delta" => return self.block_delta(&data, out),
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
mod tests;
