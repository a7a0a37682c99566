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
    let _ = crate::commands::init_logging("info");
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
    let server = Server::start(config).await?;
    print_bootstrap(&server);
    println!("Hangar server listening on {}", server.url());
    let (stop, _) = crate::commands::signal_tokens();
    let token = server.shutdown_token();
    tokio::select! {
        _ = stop.cancelled() => tracing::info!("shutting down"),
        _ = token.cancelled() => {}
    }
    server.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
