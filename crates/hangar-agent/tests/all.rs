//! hangar-agent integration tests: the managed runner against an in-process
//! fake Hangar server (run API, session WebSocket, scripted LLM gateway).
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod support {
    pub mod mcp_server;
}

mod suite {
    mod fake_hangar;
    mod harness;
    mod local;
    mod managed;
    mod mcp;
    mod runtime;
    mod session;
    mod session_stream;
    mod skills_repo;
    mod tools;
}
