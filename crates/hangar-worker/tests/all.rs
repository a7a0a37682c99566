//! The single integration-test binary of hangar-worker.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
// Test helpers fail loudly by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite {
    pub mod common;
    mod config;
    mod conformance;
    mod connection;
    mod direct;
    pub mod docker;
    mod drain;
    mod idle;
    mod kubernetes_spec;
    mod lifecycle;
    mod security;
}
