//! Test modules.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]

mod accounts;
mod api_contract;
mod common;
mod fuzz;
mod gateway_budgets;
mod integrations;
mod integrations_providers;
mod isolation;
mod limits;
mod oz_compat;
mod roles;
mod run_tokens;
mod sharing;
mod viewers;
mod web;
mod webhooks;
mod worker_tokens;
