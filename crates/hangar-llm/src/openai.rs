//! The OpenAI chat-completions provider, for OpenAI itself and for every
//! OpenAI-compatible server (vLLM, Ollama, llama.cpp, Hangar's gateway).

use crate::http::{self, Flow, SseTranslator};
use crate::retry::{Failure, RetryPolicy, with_retry};
use crate::{ChunkStream, LlmError, ModelProvider, SecretString};
use eventsource_stream::Event;
use hangar_protocol::llm::{
    ChatChunk, ChatRequest, ChatResponse, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta,
};
use std::collections::VecDeque;
use std::time::Duration;

/// OpenAI's public API.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// How to reach an OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL; the provider posts to `{base_url}/chat/completions`.
    /// Defaults to `DEFAULT_OPENAI_BASE_URL`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set (an OpenAI key, or a Hangar
    /// run token when talking to the gateway).
    pub api_key: Option<SecretString>,
    /// Bound on connecting, sending and receiving the response head (the
    /// whole answer, for servers that ignore `stream`).
    pub request_timeout: Duration,
    /// Bound on the wait for each next piece of a streamed answer.
    pub idle_timeout: Duration,
    /// Retries before the first chunk.
    pub retry: RetryPolicy,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: DEFAULT_OPENAI_BASE_URL.to_owned(),
            api_key: None,
            request_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
        }
    }
}

impl OpenAiConfig {
    /// Defaults with another base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url: base_url.into(),
            ..OpenAiConfig::default()
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

/// Streams chat completions from an OpenAI-compatible server.
///
/// The request is sent as given (unknown fields in `extra` included) with
/// `stream: true` and `stream_options.include_usage: true`, so the last chunk
/// carries token usage. A server that answers with one JSON
/// `chat.completion` instead yields it as a single chunk.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
    endpoint: String,
    client: reqwest::Client,
}

impl OpenAiProvider {
    /// A provider for `config`.
    pub fn new(config: OpenAiConfig) -> Result<Self, LlmError> {
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(OpenAiProvider {
            client: http::client(&endpoint)?,
            config,
            endpoint,
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    async fn attempt(&self, body: bytes::Bytes) -> Result<ChunkStream, Failure> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = http::send(request, self.config.request_timeout).await?;
        if http::is_event_stream(&response) {
            return Ok(http::sse_stream(
                response,
                self.config.idle_timeout,
                OpenAiTranslator::default(),
            ));
        }
        let whole: ChatResponse = http::read_json(response, self.config.request_timeout).await?;
        let chunk = response_to_chunk(whole);
        Ok(Box::pin(futures::stream::once(async move { Ok(chunk) })))
    }
}

#[async_trait::async_trait]
impl ModelProvider for OpenAiProvider {
    async fn chat_stream(&self, mut request: ChatRequest) -> Result<ChunkStream, LlmError> {
        request.stream = Some(true);
        let mut options = match request.stream_options.take() {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
        request.stream_options = Some(serde_json::Value::Object(options));
        let body = bytes::Bytes::from(
            serde_json::to_vec(&request)
                .map_err(|e| LlmError::Malformed(format!("encoding request: {e}")))?,
        );
        tracing::debug!(endpoint = %self.endpoint, model = %request.model, "chat completion request");
        with_retry(&self.config.retry, || self.attempt(body.clone())).await
    }
}

/// Parses OpenAI `chat.completion.chunk` events until `[DONE]`.
#[derive(Default)]
struct OpenAiTranslator {
    saw_finish: bool,
}

impl SseTranslator for OpenAiTranslator {
    fn event(&mut self, event: Event, out: &mut VecDeque<ChatChunk>) -> Result<Flow, LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let value: serde_json::Value = serde_json::from_str(data).map_err(|e| {
            LlmError::Malformed(format!("chunk is not JSON ({e}): {}", http::truncate(data)))
        })?;
        if let Some(error) = value.get("error") {
            return Err(stream_error(error));
        }
        if event.event == "error" {
            return Err(stream_error(&value));
        }
        let chunk: ChatChunk = serde_json::from_value(value)
            .map_err(|e| LlmError::Malformed(format!("chunk: {e}: {}", http::truncate(data))))?;
        if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
            self.saw_finish = true;
        }
        out.push_back(chunk);
        Ok(Flow::Continue)
    }

    fn end(&mut self, _out: &mut VecDeque<ChatChunk>) -> Result<(), LlmError> {
        // Some servers omit `[DONE]`; a finish reason shows the answer is whole.
        if self.saw_finish {
            Ok(())
        } else {
            Err(LlmError::Transport(
                "stream ended early: no `data: [DONE]` and no finish_reason".to_owned(),
            ))
        }
    }
}

/// An error object sent inside the stream (`{"error": {…}}`).
fn stream_error(error: &serde_json::Value) -> LlmError {
    let status = error
        .get("code")
        .and_then(|c| c.as_u64())
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(500);
    LlmError::Status {
        status,
        body: http::truncate(&error.to_string()),
        retryable: status == 429 || status >= 500,
    }
}

/// A whole `chat.completion` as one chunk, for servers that ignore `stream`.
pub(crate) fn response_to_chunk(response: ChatResponse) -> ChatChunk {
    let choices = response
        .choices
        .into_iter()
        .map(|choice| {
            let message = choice.message;
            let tool_calls = message.tool_calls.map(|calls| {
                calls
                    .into_iter()
                    .zip(0u32..)
                    .map(|(call, index)| ToolCallDelta {
                        index,
                        id: Some(call.id),
                        kind: Some(call.kind),
                        function: Some(FunctionCallDelta {
                            name: Some(call.function.name),
                            arguments: Some(call.function.arguments),
                        }),
                    })
                    .collect()
            });
            ChunkChoice {
                index: choice.index,
                delta: Delta {
                    role: Some(message.role),
                    content: message.content.map(|c| c.text()),
                    reasoning_content: message.reasoning_content,
                    tool_calls,
                },
                finish_reason: choice.finish_reason,
            }
        })
        .collect();
    ChatChunk {
        id: response.id,
        object: "chat.completion.chunk".to_owned(),
        created: response.created,
        model: response.model,
        choices,
        usage: response.usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: &str) -> Event {
        Event {
            event: "message".to_owned(),
            data: data.to_owned(),
            id: String::new(),
            retry: None,
        }
    }

    #[test]
    fn parses_chunks_until_done() {
        let mut t = OpenAiTranslator::default();
        let mut out = VecDeque::new();
        let data = json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "hi"}}]});
        assert!(matches!(
            t.event(event(&data.to_string()), &mut out),
            Ok(Flow::Continue)
        ));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].choices[0].delta.content.as_deref(), Some("hi"));
        assert!(matches!(t.event(event("[DONE]"), &mut out), Ok(Flow::Done)));
    }

    #[test]
    fn an_end_without_done_or_finish_is_an_error() {
        let mut t = OpenAiTranslator::default();
        let mut out = VecDeque::new();
        let err = t.end(&mut out).unwrap_err();
        assert!(err.to_string().contains("stream ended early"), "{err}");

        let data = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        t.event(event(&data.to_string()), &mut out).unwrap();
        assert!(t.end(&mut out).is_ok());
    }

    #[test]
    fn an_error_object_in_the_stream_is_an_error() {
        let mut t = OpenAiTranslator::default();
        let mut out = VecDeque::new();
        let data = json!({"error": {"message": "overloaded", "code": 503}});
        let err = t.event(event(&data.to_string()), &mut out).unwrap_err();
        assert!(
            matches!(err, LlmError::Status { status: 503, retryable: true, ref body } if body.contains("overloaded"))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_whole_response_becomes_one_chunk() {
        let response: ChatResponse = serde_json::from_value(json!({
            "id": "r1", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "shell", "arguments": "{}"}},
                    {"id": "b", "type": "function", "function": {"name": "grep", "arguments": "{\"pattern\":\"x\"}"}}
                ]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        }))
        .unwrap();
        let chunk = response_to_chunk(response);
        assert_eq!(chunk.object, "chat.completion.chunk");
        let calls = chunk.choices[0].delta.tool_calls.as_ref().unwrap();
        assert_eq!(calls[1].index, 1);
        assert_eq!(calls[1].id.as_deref(), Some("b"));
        assert_eq!(
            chunk.choices[0].finish_reason.as_deref(),
            Some("tool_calls")
        );
        assert_eq!(chunk.usage.unwrap().total_tokens, 7);
    }
}
