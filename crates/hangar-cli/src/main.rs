//! The `hangar` binary: one command per role, each a thin layer over a library
//! crate (`hangar-server`, `hangar-worker`, `hangar-agent`) or the API client.

mod commands;
mod credentials;
mod output;

use clap::{Parser, Subcommand};
use output::OutputFormat;
use std::process::ExitCode;

/// Hangar: run AI coding agents on your own infrastructure.
#[derive(Debug, Parser)]
#[command(
    name = "hangar",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// API key (default: $HANGAR_API_KEY, then the saved CLI credentials).
    #[arg(
        long,
        global = true,
        env = "HANGAR_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Server URL (default: $HANGAR_SERVER_URL, then the saved CLI credentials, then http://127.0.0.1:7420).
    #[arg(long, global = true, env = "HANGAR_SERVER_URL", value_name = "URL")]
    server_url: Option<String>,
    /// Output format of client commands.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Pretty)]
    output_format: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Hangar on this machine: server, SQLite, a local worker and the dashboard.
    Up(commands::up::UpArgs),
    /// Run the control plane.
    Server(commands::server::ServerArgs),
    /// Run a worker daemon, or list connected workers (`hangar worker list`).
    Worker(commands::worker::WorkerCommand),
    /// Agent runs: `run` (inside a sandbox) and `run-cloud` (create a run on the server).
    Agent(commands::agent::AgentCommand),
    /// Inspect and control runs.
    Run(commands::run::RunCommand),
    /// Manage scheduled agents (cron).
    Schedule(commands::schedule::ScheduleCommand),
    /// Manage API keys.
    #[command(name = "api-key")]
    ApiKey(commands::api_key::ApiKeyCommand),
    /// Manage environments (image, repositories, setup commands, variables, secrets).
    Environment(commands::environment::EnvironmentCommand),
    /// Manage secrets (values are write-only).
    Secret(commands::secret::SecretCommand),
    /// Manage integrations: Slack, Linear, GitHub and signed webhooks that start runs.
    Integration(commands::integration::IntegrationCommand),
    /// Manage outbound webhooks: signed run lifecycle events posted to your URLs.
    Webhook(commands::webhook::WebhookCommand),
    /// Manage the team's users and their dashboard logins.
    User(commands::user::UserCommand),
    /// Show the team of the current credentials.
    Team(commands::user::TeamCommand),
    /// Save a server URL and API key for later commands (`--server-url`, `--api-key`).
    Login,
    /// Forget the saved server URL and API key.
    Logout,
    /// Show the team and user of the current credentials.
    Whoami,
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = commands::Global {
        api_key: cli.api_key,
        server_url: cli.server_url,
        output: cli.output_format,
    };
    match cli.command {
        Command::Up(args) => commands::up::run(args).await,
        Command::Server(args) => commands::server::run(args).await,
        Command::Worker(cmd) => commands::worker::run(cmd, &global).await,
        Command::Agent(cmd) => commands::agent::run(cmd, &global).await,
        Command::Run(cmd) => commands::run::run(cmd, &global).await,
        Command::Schedule(cmd) => commands::schedule::run(cmd, &global).await,
        Command::ApiKey(cmd) => commands::api_key::run(cmd, &global).await,
        Command::Environment(cmd) => commands::environment::run(cmd, &global).await,
        Command::Secret(cmd) => commands::secret::run(cmd, &global).await,
        Command::Integration(cmd) => commands::integration::run(cmd, &global).await,
        Command::Webhook(cmd) => commands::webhook::run(cmd, &global).await,
        Command::User(cmd) => commands::user::run(cmd, &global).await,
        Command::Team(cmd) => commands::user::run_team(cmd, &global).await,
        Command::Login => commands::auth::login(&global).await,
        Command::Logout => commands::auth::logout(&global).await,
        Command::Whoami => commands::auth::whoami(&global).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "hangar", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}
