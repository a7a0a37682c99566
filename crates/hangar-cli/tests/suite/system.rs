//! Server + worker + agent processes end to end.

mod api_errors;
mod cancel;
mod cli;
mod environments;
mod lifecycle;
mod local_runs;
mod routing;
mod schedules;
