// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
mod accounts;
mod behaviours;
mod conformance;
mod dump;
mod leases_model;
mod lifecycle;
mod postgres;
mod schedules;
mod shares;
mod sqlite;
mod worker_tokens;
