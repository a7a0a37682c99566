//! Test modules, grouped so nextest can put the slow ones in the `system` group.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]

mod agent_cli;
mod common;
mod system;
