//! Hangar's agent runtime: the model ↔ tools loop that does a run's work.
//!
//! Owns:
//! - [`Agent`]: the loop itself. It takes any [`ModelProvider`] and a model
//!   name, offers the tools of a [`ToolRegistry`] to the model, runs the calls
//!   the model makes and reports everything it does to an [`EventSink`] as
//!   session events ([`EventBody`]). Follow-up messages arrive on a channel and
//!   are injected at turn boundaries; a [`CancellationToken`] stops it.
//! - [`ToolRegistry`] / [`ToolHandler`]: the tool surface. Built-in tools live
//!   in [`tools`] (the first slice ships `shell`).
//! - [`SessionStream`]: the durable session stream to the server (PROTOCOL.md
//!   §4). Every event gets a sequence number, is fsync'd to an append-only
//!   spool file before it is sent, and is resent after a reconnect until the
//!   server acknowledges it.
//! - [`run_managed`] / [`ManagedRun`]: the wiring used by `hangar agent run
//!   --task-id`: fetch the run, open the session stream, call the model through
//!   the server's LLM gateway with the run token, report the outcome.
//!
//! An unmanaged run (no server) is another wiring of the same [`Agent`] with a
//! provider from `hangar-llm` and a sink that prints events.
//!
//! Depends on `hangar-protocol`, `hangar-client` and `hangar-llm`; never on the
//! server, the worker or the store.

mod agent;
mod error;
mod event;
pub mod harness;
pub mod local;
mod managed;
pub mod mcp;
pub mod redact;
mod session;
pub mod skills;
pub mod tools;

pub use agent::{
    Agent, COMPACT_AT_PERCENT, COMPACTION_PREFIX, DEFAULT_KEEP_RECENT_MESSAGES,
    DEFAULT_MAX_TOOL_OUTPUT_BYTES, DEFAULT_MAX_TURNS, DEFAULT_MODEL_ATTEMPTS, LoopConfig,
    RunOutcome, cap_tool_output, context_window_for, estimate_tokens, system_prompt,
};
pub use error::AgentError;
pub use event::{EventSink, SinkError};
pub use local::{
    LocalReport, LocalRun, LocalRunError, RegisteredHook, TeeSink, TrackingServer, run_local,
};
pub use managed::{
    ENV_SPOOL_DIR, FLUSH_TIMEOUT, GATEWAY_PATH, ManagedRun, Prepare, PrepareError,
    gateway_provider, run_managed,
};
pub use redact::{REDACTED, RedactingSink, Redactor, StreamRedactor};
pub use session::{
    BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, FOLLOWUP_CAPACITY, IDLE_TIMEOUT,
    INITIAL_ACK_TIMEOUT, PING_INTERVAL, SessionConfig, SessionReport, SessionStream, spool_path,
};
pub use tools::{ToolContext, ToolError, ToolHandler, ToolOutput, ToolRegistry};

pub use hangar_llm::ModelProvider;
pub use hangar_protocol::session::{EventBody, Followup, SessionEvent};
pub use tokio_util::sync::CancellationToken;
