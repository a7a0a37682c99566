//! Integration tests of hangar-llm against the fake model server of
//! hangar-testkit, over real HTTP and SSE. One binary; modules in `suite/`.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
// Helpers outside `#[test]` functions panic on purpose, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite {
    mod anthropic;
    mod common;
    mod openai;
    mod registry;
    mod retry;
}
