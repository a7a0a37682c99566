//! One module per noun.

pub mod agent;
pub mod api_key;
pub mod auth;
pub mod environment;
pub mod integration;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod share;
pub mod up;
pub mod user;
pub mod watch;
pub mod webhook;
pub mod worker;

use crate::output::OutputFormat;
use tokio_util::sync::CancellationToken;

/// Flags every client command shares.
#[derive(Debug, Clone)]
pub struct Global {
    /// `--api-key`.
    pub api_key: Option<String>,
    /// `--server-url`.
    pub server_url: Option<String>,
    /// `--output-format`.
    pub output: OutputFormat,
}

impl Global {
    /// A client for the configured server.
    pub fn client(&self) -> anyhow::Result<hangar_client::Client> {
        crate::credentials::client(self.api_key.as_deref(), self.server_url.as_deref())
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default`. Every value registered
/// in the returned set (a worker registers its API key and each running
/// task's secrets and run token) is masked in the output (scenario S10), in
/// either format. `json` writes one object per line with the fields of the
/// spans the event happened in (`run_id`, `execution_id`, `worker_id`,
/// `request_id`, `trace_id`).
pub fn init_logging(
    default: &str,
    format: Option<hangar_worker::LogFormat>,
) -> hangar_protocol::redact::LogSecrets {
    use tracing_subscriber::EnvFilter;
    let secrets = hangar_protocol::redact::LogSecrets::default();
    let writer = secrets.clone();
    // OpenTelemetry's own notes ("global meter provider is set") are noise below warn.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},opentelemetry=warn,opentelemetry_sdk=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || writer.writer(std::io::stderr()));
    let _ = match format.unwrap_or_else(hangar_worker::LogFormat::for_stderr) {
        hangar_worker::LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
        hangar_worker::LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
    };
    secrets
}

/// Two tokens fired by signals: the first SIGINT/SIGTERM fires `first`, the
/// next one fires `second` (graceful, then forced).
pub fn signal_tokens() -> (CancellationToken, CancellationToken) {
    let first = CancellationToken::new();
    let second = CancellationToken::new();
    let (f, s) = (first.clone(), second.clone());
    // Owned by the runtime for the life of the process: it only waits on signals.
    #[allow(clippy::disallowed_methods)] // waits on signals for the life of the process
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        for token in [f, s] {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            token.cancel();
        }
    });
    (first, second)
}
