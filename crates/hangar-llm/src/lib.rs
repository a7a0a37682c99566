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
//! directly. Depends only on `hangar-protocol`; it must not depend on the
//! server, the agent or the store.
//!
//! Main entry types:
//! - [`OpenAiProvider`] / [`OpenAiConfig`]: `POST {base_url}/chat/completions`
//!   with SSE streaming (or a plain JSON answer from servers that ignore
//!   `stream`).
//! - [`AnthropicProvider`] / [`AnthropicConfig`]: `POST {base_url}/v1/messages`,
//!   translating requests and SSE events to and from the OpenAI shapes.
//! - [`RetryPolicy`]: both providers retry retryable failures (429, 5xx,
//!   transport errors, timeouts) that happen before the first chunk, with
//!   exponential backoff, jitter and `Retry-After`.
//! - [`ProviderRegistry`] / [`ProvidersConfig`]: typed provider config and
//!   `provider/model` resolution.
//! - [`default_price`] / [`DEFAULT_PRICES`]: list prices of common OpenAI and
//!   Anthropic models, used when the config names no price for a model.
//! - [`collect`]: a [`ChunkStream`] folded into a [`llm::ChatResponse`].
//! - [`SecretString`]: API keys that print as `***`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hangar_llm::LlmError> {
//! use hangar_llm::llm::{ChatMessage, ChatRequest, Role};
//! use hangar_llm::{ModelProvider, ProviderRegistry, collect};
//!
//! let registry = ProviderRegistry::from_env()?;
//! let (provider, model) = registry.resolve("openai/gpt-5")?;
//! let request = ChatRequest {
//!     model,
//!     messages: vec![ChatMessage::text(Role::User, "hello")],
//!     tools: None,
//!     tool_choice: None,
//!     stream: None,
//!     stream_options: None,
//!     temperature: None,
//!     max_tokens: None,
//!     max_completion_tokens: None,
//!     extra: Default::default(),
//! };
//! let response = collect(provider.chat_stream(request).await?).await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```

use futures::Stream;
use hangar_protocol::llm::{ChatChunk, ChatRequest};
use std::pin::Pin;

pub use hangar_protocol::llm;

mod anthropic;
mod collect;
mod http;
mod openai;
mod prices;
mod registry;
mod retry;

pub use anthropic::{AnthropicConfig, AnthropicProvider};
pub use collect::collect;
pub use hangar_protocol::SecretString;
pub use openai::{OpenAiConfig, OpenAiProvider};
pub use prices::{DEFAULT_PRICES, DEFAULT_PRICES_AS_OF, default_price};
pub use registry::{ModelPrice, ProviderConfig, ProviderKind, ProviderRegistry, ProvidersConfig};
pub use retry::RetryPolicy;

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
    /// A provider's configuration is unusable (bad name, unset key variable).
    #[error("provider `{provider}` is misconfigured: {reason}")]
    Config {
        /// The provider's name in the config.
        provider: String,
        /// What is wrong.
        reason: String,
    },
}

impl LlmError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Status { retryable, .. } => *retryable,
            LlmError::Transport(_) | LlmError::Timeout(_) => true,
            LlmError::UnknownModel { .. } | LlmError::Malformed(_) | LlmError::Config { .. } => {
                false
            }
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
