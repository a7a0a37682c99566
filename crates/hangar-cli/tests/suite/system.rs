//! Server + worker + agent processes end to end.

mod api_errors;
mod browser;
mod cancel;
mod cli;
mod docker_system;
mod environments;
mod faults;
mod faults_stream;
mod faults_workers;
mod followups_ended;
mod gateway_budgets;
mod lifecycle;
mod local_runs;
mod mcp_named;
mod models_followups;
mod oz_sdk;
mod oz_worker;
mod replicas;
mod routing;
mod schedules;
mod security_inputs;
mod security_sandbox;
mod sharing;
mod users_cli;
mod watch;
mod worker_config;
