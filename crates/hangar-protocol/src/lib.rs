//! Hangar's wire contract.
//!
//! Everything that crosses a process boundary is defined here: identifiers, run
//! states, the REST request and response bodies (field names and enum values
//! follow the Oz Agent API so the official Oz SDKs work unchanged), RFC 7807
//! problems, the worker ⇄ server WebSocket messages, the agent's session stream
//! and the OpenAI-compatible LLM gateway types.
//!
//! It also holds the checks and redaction every side must apply the same way
//! (`repository`: repository URLs, refs, image names and restricted
//! addresses; `redact`: secret masking).
//!
//! This crate depends on serde only and on no other hangar crate.

pub mod account;
pub mod agent;
pub mod envelope;
pub mod environment;
pub mod ids;
pub mod integration;
pub mod keys;
pub mod llm;
pub mod problem;
pub mod redact;
pub mod repository;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod session;
pub mod share;
pub mod timestamp;
pub mod webhook;
pub mod worker;

pub use envelope::{Envelope, EnvelopeError};
pub use ids::{ExecutionId, RunId, WorkerId};
pub use keys::*;
pub use problem::{PlatformErrorCode, Problem};
pub use run::*;
pub use schedule::*;
pub use secret::SecretString;
pub use timestamp::Timestamp;

/// Environment variable that carries the run-scoped token into a task.
pub const ENV_RUN_TOKEN: &str = "HANGAR_RUN_TOKEN";
/// Environment variable that carries the run id into a task.
pub const ENV_RUN_ID: &str = "HANGAR_RUN_ID";
/// Environment variable that carries the execution id into a task.
pub const ENV_EXECUTION_ID: &str = "HANGAR_EXECUTION_ID";
/// Environment variable naming the control plane's base URL.
pub const ENV_SERVER_URL: &str = "HANGAR_SERVER_URL";
/// Environment variable saying whether a task continues an earlier
/// conversation of its run (a follow-up reopened it): `1` or `0`, set by the
/// server in every assignment, so that an agent fetches the run's transcript
/// only when there is one to continue. Unset (an older server): it fetches.
pub const ENV_RUN_CONTINUES: &str = "HANGAR_RUN_CONTINUES";
/// Environment variable holding an API key for CLI and worker.
pub const ENV_API_KEY: &str = "HANGAR_API_KEY";

/// Environment variable listing (comma-separated) the names of the task's
/// environment variables whose values are secrets and must be redacted.
pub const ENV_SECRET_NAMES: &str = "HANGAR_SECRET_NAMES";
/// Set by a Hangar worker in every task's environment: it prepared the
/// sandbox (repositories, setup commands), so `hangar agent run
/// --environment` does not prepare it again.
pub const ENV_ENVIRONMENT_PREPARED: &str = "HANGAR_ENVIRONMENT_PREPARED";

/// Prefix of every API key (`hk_…`).
pub const API_KEY_PREFIX: &str = "hk_";
/// Prefix of every run-scoped token (`hr_…`).
pub const RUN_TOKEN_PREFIX: &str = "hr_";
/// Prefix of every worker token (`hw_…`): it can only connect a worker,
/// under the worker id or pool it is bound to.
pub const WORKER_TOKEN_PREFIX: &str = "hw_";

/// Path of the worker WebSocket, relative to the server's base URL.
pub const WORKER_WS_PATH: &str = "/api/v1/selfhosted/worker/ws";
