// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
mod accounts;
mod behaviours;
mod conformance;
mod dump;
mod executions;
mod integrations;
mod leases_model;
mod lifecycle;
mod postgres;
mod schedules;
mod shares;
mod sqlite;
mod webhooks;
mod worker_tokens;
