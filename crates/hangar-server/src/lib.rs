//! Hangar's control plane.
//!
//! The module tree follows the life of a run:
//!
//! 1. **Triggers** ask for a run: the REST API ([`api`], `/api/v1`), the
//!    [`schedule`]r, the dashboard ([`web`]), which acts through the API, and
//!    the signed webhooks of [`integrations`].
//! 2. **[`runs`]** holds the rules every trigger goes through: a request is
//!    validated, its model and environment resolved, the run stored and
//!    handed to dispatch; cancelling and continuing (follow-ups) live there
//!    too.
//! 3. **[`dispatch`]** queues runs and places each on a connected worker: the
//!    [`dispatch::Dispatcher`], the worker WebSocket
//!    ([`dispatch::worker_socket`]), execution leases and the worker registry
//!    every replica shares ([`dispatch::presence`]).
//! 4. **[`sessions`]**: the agent streams its session into the hub
//!    ([`sessions::hub`]); viewers watch it live ([`sessions::viewers`]) when
//!    [`sessions::sharing`] lets them.
//! 5. **[`llm`]**: the agent's model calls go through the LLM gateway, which
//!    holds the provider keys, meters every call and enforces budgets.
//!
//! Around them: credentials ([`auth`]), errors as problem+json ([`error`]),
//! configuration ([`config`]), secrets at rest ([`secrets`]), rate limits
//! ([`rate_limit`]), outbound [`webhooks`], metrics ([`metrics`]) and the signals between replicas
//! on PostgreSQL ([`replicas`]). Storage comes from `hangar-store`, model
//! providers from `hangar-llm`; this crate never depends on the worker, the
//! agent or the CLI.
//!
//! The process itself: [`server`] starts and stops it ([`Server::start`]
//! with a [`ServerConfig`]), [`bootstrap`] creates the first team and key,
//! and [`app`] holds the services every handler shares ([`AppState`]).

pub mod api;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod integrations;
pub mod llm;
pub mod metrics;
pub mod rate_limit;
pub mod replicas;
pub mod runs;
pub mod schedule;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod web;
pub mod webhooks;

pub use app::AppState;
pub use bootstrap::{Bootstrap, CliCredentials, write_cli_credentials};
pub use config::{ConfigError, MetricsConfig, ServerConfig};
pub use server::{SHUTDOWN_DEADLINE, Server, ServerError};
