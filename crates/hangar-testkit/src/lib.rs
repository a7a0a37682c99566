//! Test support for Hangar: fake services that speak the real wire formats,
//! and harnesses that start real hangar processes. Used only from
//! dev-dependencies; nothing in a release build may depend on this crate.
//!
//! - [`fake_llm`]: a fake OpenAI / Anthropic model server with scripted
//!   turns that checks every tool call is answered.
//! - [`cluster`]: a [`cluster::TestCluster`] of real `hangar server` and
//!   `hangar worker` processes on random loopback ports.
//! - [`images`]: Docker images built locally (a Debian minbase from
//!   `mmdebstrap`, and our files on top), cached by tag.
//! - [`fake_kube`]: a fake Kubernetes API server (Jobs, Pods, Secrets,
//!   Events, watches) with a simulated job controller and kubelet, for the
//!   real `kube` client.
//! - [`fake_providers`]: fake Slack, Linear and GitHub APIs that record
//!   what an integration posts in a thread, issue or pull request.
//! - [`otlp`]: an OTLP/HTTP collector that decodes protobuf exports.
//! - [`poll`]: `eventually` / `until`, for waiting on a condition.
//! - [`up`]: `hangar up` on a fresh HOME, as a new user runs it.
// Test support: the fakes own the tasks they spawn, for as long as the test holds them.
#![allow(clippy::disallowed_methods)]

pub mod cluster;
pub mod fake_kube;
pub mod fake_llm;
pub mod fake_providers;
pub mod git;
pub mod images;
pub mod otlp;
pub mod oz_worker;
pub mod poll;
pub mod up;
