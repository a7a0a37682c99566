//! Store conformance: every implementation must pass the same suite.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
