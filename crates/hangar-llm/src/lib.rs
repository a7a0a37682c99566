//! Model providers behind one streaming trait.
//!
//! Owns: the [`ModelProvider`] trait, the OpenAI chat-completions provider (which
//! also serves any OpenAI-compatible base URL: vLLM, Ollama, llama.cpp, and
//! Hangar's own LLM gateway), the Anthropic Messages provider, the
//! [`ProviderRegistry`] that maps `provider/model` ids to providers, and
//! [`collect`], which folds a chunk stream into a complete response.
//!
//! The internal stream format is OpenAI's `chat.completion.chunk`
//! ([`ChatChunk`]); providers with another wire format translate into it.
//! Used by the server's gateway and by the agent when it talks to a provider
//! directly. Depends only on `hangar-protocol`.

use futures::Stream;
use hangar_protocol::llm::{ChatChunk, ChatRequest};
use std::pin::Pin;

pub use hangar_protocol::llm;

/// A stream of response chunks.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, LlmError>> + Send>>;

/// Errors from a provider.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The model id is not `provider/model` or names an unknown provider.
    #[error("unknown model `{model}`: {reason}")]
    UnknownModel {
        /// The id asked for.
        model: String,
        /// Why it did not resolve.
        reason: String,
    },
    /// The provider answered with an error status.
    #[error("provider returned HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Response body (truncated).
        body: String,
        /// Whether retrying may succeed (429, 5xx).
        retryable: bool,
    },
    /// Connecting or reading failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The response did not parse.
    #[error("malformed provider response: {0}")]
    Malformed(String),
    /// The request or the stream went idle past its timeout.
    #[error("provider timed out after {0:?}")]
    Timeout(std::time::Duration),
}

impl LlmError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { retryable, .. } => *retryable,
            LlmError::Transport(_) | LlmError::Timeout(_) => true,
            LlmError::UnknownModel { .. } | LlmError::Malformed(_) => false,
        }
    }
}

/// A model provider: one wire format, one endpoint, one key.
#[async_trait::async_trait]
pub trait ModelProvider: Send + Sync + 'static {
    /// Streams a chat completion. `request.model` is the provider-local model
    /// name (without the `provider/` prefix).
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, LlmError>;
}
