//! The fake Kubernetes API server, driven by the real `kube` client.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod admission;
mod api;
mod common;
mod deletion;
mod docker;
mod faults;
mod pods;
mod watch;
