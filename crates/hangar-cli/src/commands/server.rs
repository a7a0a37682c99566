//! `hangar server`: the control plane.

use anyhow::{Context, Result};
use hangar_server::{Server, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `hangar server` (they override the config file).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:7420].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory (database, server files) [default: $XDG_DATA_HOME/hangar].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// YAML config file (providers, timeouts, …).
    #[arg(long, visible_alias = "config-file", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL: `postgres://…` to run several replicas, or `sqlite:PATH` [default: SQLite in the data directory].
    #[arg(
        long,
        env = "HANGAR_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,
    /// URL workers and clients use to reach this server [default: from --listen].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log format [default: json when stderr is not a terminal, else pretty].
    #[arg(long, value_enum, env = "HANGAR_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<hangar_worker::LogFormat>,
}

/// Defaults → file → flags.
pub fn load_config(args: &ServerArgs) -> Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(u) = &args.database_url {
        config.database_url = Some(u.clone());
    }
    if let Some(u) = &args.public_url {
        config.public_url = Some(u.clone());
    }
    config.validate()?;
    Ok(config)
}

/// Prints what a first start created.
pub fn print_bootstrap(server: &Server) {
    if let Some(b) = server.bootstrap() {
        println!(
            "First start: created team `{}` and an admin API key (shown once):",
            b.team
        );
        println!();
        println!("    {}", b.api_key);
        println!();
        match &b.cli_config_path {
            Some(p) => println!(
                "Saved with the server URL to {} for the local CLI.",
                p.display()
            ),
            None => println!("Store it safely; pass it with --api-key or HANGAR_API_KEY."),
        }
    }
}

/// Runs the server until SIGINT/SIGTERM.
pub async fn run(args: ServerArgs) -> Result<ExitCode> {
    let _ = crate::commands::init_logging("info", args.log_format);
    let config = load_config(&args)?;
    if args.print_config {
        let mut shown = config.clone();
        // Never print a database password.
        shown.database_url = shown.database_url.as_deref().map(hangar_store::redact_url);
        print!(
            "{}",
            serde_norway::to_string(&shown).context("render config")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut settings = hangar_telemetry::Settings::new("hangar-server");
    settings.prometheus = config.metrics.listen.is_some();
    let telemetry = hangar_telemetry::Telemetry::init(settings)?;
    let token = config.metrics.bearer_token()?;
    let listen = config.metrics.listen;
    let server = Server::start(config).await?;
    print_bootstrap(&server);
    println!("Hangar server listening on {}", server.url());
    if let Some(addr) = serve_metrics(&telemetry, listen, token, &server).await? {
        println!("Metrics at http://{addr}/metrics");
    }
    tracing::info!(telemetry = %telemetry.describe(), "telemetry");
    let (stop, force) = crate::commands::signal_tokens();
    let token = server.shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => tracing::info!("shutting down (a second signal stops at once)"),
        _ = token.cancelled() => {}
    }
    tokio::select! {
        () = server.shutdown() => {}
        () = force.cancelled() => {
            tracing::warn!("second signal: stopping now without waiting for connections to close");
            return Ok(ExitCode::from(130));
        }
    }
    telemetry.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Serves `/metrics` where the config's `metrics.listen` or
/// `OTEL_METRICS_EXPORTER=prometheus` asks, until the server stops.
pub async fn serve_metrics(
    telemetry: &hangar_telemetry::Telemetry,
    listen: Option<SocketAddr>,
    bearer_token: Option<String>,
    server: &Server,
) -> Result<Option<SocketAddr>> {
    let endpoint = match (listen, telemetry.env_endpoint()) {
        (Some(addr), _) => hangar_telemetry::PrometheusEndpoint { addr, bearer_token },
        (None, Some(env)) => env.clone(),
        (None, None) => return Ok(None),
    };
    let (addr, _) = telemetry
        .serve_prometheus(&endpoint, server.shutdown_token())
        .await?;
    Ok(Some(addr))
}
