//! The Hangar worker daemon.
//!
//! Owns: the configuration of `hangar worker` ([`WorkerArgs`] → [`WorkerConfig`]),
//! the one outbound WebSocket to the control plane (hello, heartbeats,
//! reconnect with jittered backoff, an outbox that survives reconnects), the
//! task lifecycle (claim/reject, started, completed/failed, cancel, drain), and
//! the execution backends behind the [`backends::Backend`] trait: `direct`
//! (bubblewrap sandbox on the host), `docker`, `kubernetes` and `command`,
//! each built from the worker's configuration by its
//! [`backends::factory::BackendFactory`]; docker, kubernetes and command
//! executions are recovered after a restart.
//!
//! Depends on `hangar-protocol` (wire types) and `hangar-client` (WebSocket
//! connect); never on the server or the CLI.
//!
//! Entry point, used by `hangar worker` and in-process by `hangar up`:
//!
//! ```no_run
//! # async fn f(args: hangar_worker::WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
//! use tokio_util::sync::CancellationToken;
//! let config = args.resolve()?;
//! let (shutdown, hard_shutdown) = (CancellationToken::new(), CancellationToken::new());
//! hangar_worker::Worker::new(config)?.run(shutdown, hard_shutdown).await?;
//! # Ok(()) }
//! ```

pub mod backends;
pub mod config;
mod connection;
pub mod metrics;
pub mod prepare;
mod task;
mod worker;

pub use config::{
    ApiKey, BackendKind, CommandSettings, ConfigError, DirectSettings, DockerSettings, LogFormat,
    LogLevel, PullPolicy, SandboxKind, SandboxMount, WorkerArgs, WorkerConfig,
};
pub use connection::{INBOX_CAPACITY, OUTBOX_CAPACITY, worker_ws_url};
pub use task::{CANCELLED_MESSAGE, CANCELLED_STATE, COMPLETED_MESSAGE};
pub use worker::{
    REJECT_AT_CAPACITY, REJECT_DRAINING, Worker, WorkerError, default_workspace_root,
};
