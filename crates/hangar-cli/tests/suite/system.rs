//! Server + worker + agent processes end to end.

mod api_errors;
mod cancel;
mod cli;
mod docker_system;
mod environments;
mod lifecycle;
mod local_runs;
mod oz_sdk;
mod models_followups;
mod replicas;
mod routing;
mod schedules;
