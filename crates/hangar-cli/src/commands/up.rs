//! `hangar up`: server, SQLite, a worker named `local` and the dashboard, in one process.

use anyhow::{Context, Result, bail};
use hangar_server::{Server, ServerConfig};
use hangar_worker::{BackendKind, WorkerArgs};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Name of the in-process worker; runs with `--host local` go to it.
pub const LOCAL_WORKER: &str = "local";

/// Flags of `hangar up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7420", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Data directory [default: $XDG_DATA_HOME/hangar].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Backend of the local worker.
    #[arg(long, value_enum, default_value = "direct")]
    pub backend: BackendKind,
    /// Server config file (providers, timeouts, …).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep task workspaces after runs end.
    #[arg(long)]
    pub no_cleanup: bool,
    /// Run the local worker's tasks without the bubblewrap sandbox (direct
    /// backend; an explicit relaxation shown in every run's details).
    #[arg(long)]
    pub no_sandbox: bool,
    /// Tasks the local worker runs at once (0 = unlimited).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_concurrent_tasks: u32,
    /// Log format [default: json when stderr is not a terminal, else pretty].
    #[arg(long, value_enum, env = "HANGAR_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<hangar_worker::LogFormat>,
}

/// Where the local worker keeps task workspaces: `$XDG_STATE_HOME/hangar/workspaces`
/// (beside, never inside, the data directory `data_dir`).
fn workspace_root(data_dir: &std::path::Path) -> PathBuf {
    let state = dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .map(|d| d.join("hangar").join("workspaces"));
    match state {
        Some(root) if !root.starts_with(data_dir) => root,
        _ => data_dir.with_file_name(format!(
            "{}-workspaces",
            data_dir
                .file_name()
                .map_or("hangar".into(), |n| n.to_string_lossy())
        )),
    }
}

/// What `hangar up` prints once everything runs: where to find it, how to
/// sign in and how to add a worker elsewhere.
async fn print_banner(
    server: &Server,
    args: &UpArgs,
    data_dir: &std::path::Path,
    workspaces: &std::path::Path,
    metrics_at: Option<std::net::SocketAddr>,
) {
    let url = server.url().to_owned();
    println!();
    println!("Hangar is up.");
    println!("  Dashboard   {url}/");
    println!("  API         {url}/api/v1");
    println!(
        "  Worker      `{LOCAL_WORKER}` ({} backend)",
        args.backend.as_str()
    );
    match crate::credentials::saved_path() {
        Some(p) => println!("  API key     saved in {}", p.display()),
        None => println!("  API key     printed above on first start"),
    }
    if let Some(addr) = metrics_at {
        println!(
            "  Metrics     http://{addr}/metrics (Prometheus; scrape it, see README \"Monitoring\")"
        );
    }
    println!("  Data        {}", data_dir.display());
    println!("  Workspaces  {}", workspaces.display());
    println!();
    println!(
        "Try:  hangar agent run-cloud -p \"List the files in the workspace and summarise them\""
    );
    match server.sign_in_link().await {
        Ok(link) => println!(
            "Sign in:  {link}\n          (works once, for 15 minutes; the dashboard then asks for a password)"
        ),
        Err(e) => println!(
            "Sign in:  no link ({e}); create an account with `hangar user create --email you@example.com --role admin --password-stdin`"
        ),
    }
    println!(
        "Another machine's worker:  hangar worker token create --worker-id NAME   (prints a token, once)\n          then there:  HANGAR_API_KEY=<token> hangar worker --server-url {url} --worker-id NAME"
    );
    if args.listen.ip().is_loopback() {
        println!(
            "          (this server listens on loopback only: start hangar up with --listen 0.0.0.0:{} and a reachable public_url in its --config for that)",
            args.listen.port()
        );
    }
    println!("Stop: Ctrl-C (twice to cancel running tasks)");
}

/// Starts everything and waits for Ctrl-C.
pub async fn run(args: UpArgs) -> Result<ExitCode> {
    let log_secrets = crate::commands::init_logging(
        "info,hangar_server=info,hangar_worker=info",
        args.log_format,
    );
    let mut config = match &args.config {
        Some(p) => ServerConfig::from_file(p)?,
        None => ServerConfig::default(),
    };
    config.listen = args.listen;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    // Prometheus on by default (OTEL_METRICS_EXPORTER overrides), at
    // OTEL_EXPORTER_PROMETHEUS_HOST:PORT (default localhost:9464) unless the
    // config's metrics.listen says otherwise.
    let mut settings = hangar_telemetry::Settings::new("hangar");
    settings.default_metrics = vec![hangar_telemetry::Exporter::Prometheus];
    settings.prometheus = config.metrics.listen.is_some();
    settings.attributes = vec![
        ("worker.id", LOCAL_WORKER.to_owned()),
        ("worker.backend", args.backend.as_str().to_owned()),
    ];
    let telemetry = hangar_telemetry::Telemetry::init(settings)?;
    let metrics_token = config.metrics.bearer_token()?;
    let server = Server::start(config.clone()).await?;
    crate::commands::server::print_bootstrap(&server);
    let metrics_at = match crate::commands::server::serve_metrics(
        &telemetry,
        config.metrics.listen,
        metrics_token,
        &server,
    )
    .await
    {
        Ok(addr) => addr,
        Err(e) => {
            // Metrics are not worth refusing to start over (another
            // `hangar up` may hold the port): say so and go on.
            eprintln!("warning: metrics not served: {e:#}");
            None
        }
    };

    let key = server.issue_local_key("hangar up: local worker").await?;
    let workspaces = workspace_root(&config.data_dir);
    let worker_args = WorkerArgs {
        worker_id: Some(LOCAL_WORKER.to_owned()),
        api_key: Some(key),
        server_url: Some(server.url().to_owned()),
        backend: Some(args.backend),
        no_cleanup: args.no_cleanup,
        no_sandbox: args.no_sandbox,
        max_concurrent_tasks: Some(args.max_concurrent_tasks),
        // Outside the data directory: tasks never get a path into it.
        workspace_root: Some(workspaces.clone()),
        ..WorkerArgs::default()
    };
    let mut worker_config = worker_args
        .resolve()
        .context("local worker configuration")?;
    if args.backend == BackendKind::Docker && args.listen.ip().is_loopback() {
        // The server listens on loopback only, which a container on a bridge
        // network cannot reach: share the host network (an explicit, printed
        // relaxation of the docker hardening; listen on a non-loopback address
        // to keep task containers on the default bridge).
        worker_config.docker.network = Some("host".to_owned());
        println!(
            "note: docker tasks use the host network so they can reach {} (listen on a non-loopback address to avoid this)",
            server.url()
        );
    }
    let worker = match hangar_worker::Worker::new(worker_config) {
        Ok(w) => w
            .with_log_secrets(log_secrets)
            .with_trace_export(telemetry.traces_exported()),
        Err(e) => {
            server.shutdown().await;
            bail!("cannot start the local worker: {e}");
        }
    };

    print_banner(&server, &args, &config.data_dir, &workspaces, metrics_at).await;

    let (graceful, forced) = crate::commands::signal_tokens();
    let worker_task = worker.run(graceful.clone(), forced.clone());
    let server_token = server.shutdown_token();
    let result = tokio::select! {
        r = worker_task => r,
        _ = server_token.cancelled() => Ok(()),
    };
    if let Err(e) = &result {
        eprintln!("error: local worker stopped: {e}");
    }
    server.shutdown().await;
    telemetry.shutdown().await;
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
