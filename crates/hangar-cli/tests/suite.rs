//! Test modules, grouped so nextest can put the slow ones in the `system` group.

mod agent_cli;
mod common;
mod system;
