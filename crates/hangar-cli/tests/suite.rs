//! Test modules, grouped so nextest can put the slow ones in the `system` group.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]

mod agent_cli;
mod common;
mod system;
