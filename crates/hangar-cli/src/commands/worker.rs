//! `hangar worker`: the worker daemon; `hangar worker list`: connected
//! workers; `hangar worker token create|list|expire`: worker credentials.

use crate::commands::Global;
use crate::output::{OutputFormat, print_json};
use anyhow::{Result, bail};
use hangar_protocol::{CreateWorkerTokenRequest, WorkerTokenItem};
use hangar_worker::WorkerArgs;
use std::process::ExitCode;

/// `hangar worker [list] …`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkerCommand {
    #[command(subcommand)]
    sub: Option<WorkerSub>,
    #[command(flatten)]
    args: WorkerArgs,
}

#[derive(Debug, clap::Subcommand)]
enum WorkerSub {
    /// List the workers connected to the server.
    List,
    /// Worker credentials (admins): a token that can only connect a worker,
    /// as one worker id or under a pool prefix.
    Token {
        #[command(subcommand)]
        sub: TokenSub,
    },
}

#[derive(Debug, clap::Subcommand)]
enum TokenSub {
    /// Create a worker token bound to one worker id or a pool; its secret is printed once.
    Create {
        /// The one worker id the token may connect as.
        #[arg(
            long,
            value_name = "ID",
            conflicts_with = "pool",
            required_unless_present = "pool"
        )]
        worker_id: Option<String>,
        /// A prefix: the token may connect as any worker id starting with it.
        #[arg(long, value_name = "PREFIX")]
        pool: Option<String>,
        /// Name to recognise the token by (default: its binding).
        #[arg(long)]
        name: Option<String>,
        /// Expire after this long (e.g. `30d`, `12h`).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List the team's worker tokens (never their secrets).
    List,
    /// Revoke a worker token now.
    Expire {
        /// Token id.
        token_id: String,
    },
}

/// Runs the daemon or the subcommand.
pub async fn run(cmd: WorkerCommand, global: &Global) -> Result<ExitCode> {
    match cmd.sub {
        Some(WorkerSub::List) => list(global).await,
        Some(WorkerSub::Token { sub }) => token(sub, global).await,
        None => daemon(cmd.args).await,
    }
}

async fn token(sub: TokenSub, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    match sub {
        TokenSub::Create {
            worker_id,
            pool,
            name,
            expires_in,
        } => {
            if worker_id.is_some() == pool.is_some() {
                bail!("give exactly one of --worker-id ID (one worker) and --pool PREFIX");
            }
            let expires_at = crate::commands::api_key::expires_at(expires_in.as_deref())?;
            let token: WorkerTokenItem = client
                .create_worker_token(&CreateWorkerTokenRequest {
                    name,
                    worker_id: worker_id.map(Into::into),
                    pool,
                    expires_at,
                })
                .await?;
            let secret = token.token.as_deref().unwrap_or("");
            match global.output {
                OutputFormat::Pretty => {
                    println!(
                        "Created worker token `{}` ({}) for {}. Its secret is shown once:",
                        token.name,
                        token.id,
                        binding(&token)
                    );
                    println!();
                    println!("    {secret}");
                    println!();
                    let id = token
                        .worker_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| {
                            format!("{}NAME", token.pool.as_deref().unwrap_or_default())
                        });
                    let url = client.base_url().as_str().trim_end_matches('/');
                    println!("Start the worker with it:");
                    println!(
                        "    HANGAR_API_KEY={secret} hangar worker --worker-id {id} --server-url {url}"
                    );
                }
                OutputFormat::Text => println!("{secret}"),
                f => print_json(&token, f),
            }
        }
        TokenSub::List => {
            let list = client.list_worker_tokens().await?;
            match global.output {
                OutputFormat::Pretty | OutputFormat::Text => {
                    println!(
                        "{:<36}  {:<24}  {:<12}  {:<28}  STATUS",
                        "ID", "NAME", "PREFIX", "BINDING"
                    );
                    for t in &list.worker_tokens {
                        let status = if t.revoked_at.is_some() {
                            "revoked"
                        } else if t
                            .expires_at
                            .is_some_and(|e| e <= hangar_protocol::Timestamp::now())
                        {
                            "expired"
                        } else {
                            "active"
                        };
                        println!(
                            "{:<36}  {:<24}  {:<12}  {:<28}  {}",
                            t.id,
                            t.name,
                            t.prefix,
                            binding(t),
                            status
                        );
                    }
                }
                f => print_json(&list, f),
            }
        }
        TokenSub::Expire { token_id } => {
            let body = client.expire_worker_token(&token_id).await?;
            match global.output {
                OutputFormat::Pretty => println!("Revoked worker token {token_id}."),
                OutputFormat::Text => println!("{token_id}"),
                f => print_json(&body, f),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `worker ID` or `pool PREFIX*`.
fn binding(t: &WorkerTokenItem) -> String {
    match (&t.worker_id, &t.pool) {
        (Some(id), _) => format!("worker {id}"),
        (None, Some(prefix)) => format!("pool {prefix}*"),
        (None, None) => "?".to_owned(),
    }
}

async fn daemon(mut args: WorkerArgs) -> Result<ExitCode> {
    let level = args.log_level.map(|l| l.as_str()).unwrap_or("info");
    let log_secrets = crate::commands::init_logging(level, args.log_format);
    if args.backend.is_none() && args.config_file.is_none() {
        // Docker is the production default; until it lands, say so instead of failing obscurely.
        args.backend = Some(hangar_worker::BackendKind::Direct);
        tracing::info!("no --backend given: using the direct backend");
    }
    let config = args.resolve()?;
    if args.print_config {
        print!("{}", config.to_yaml());
        return Ok(ExitCode::SUCCESS);
    }
    let mut settings = hangar_telemetry::Settings::new("hangar-worker");
    settings.attributes = vec![
        ("worker.id", config.worker_id.to_string()),
        ("worker.backend", config.backend.as_str().to_owned()),
    ];
    let telemetry = hangar_telemetry::Telemetry::init(settings)?;
    let worker = hangar_worker::Worker::new(config)?
        .with_log_secrets(log_secrets)
        .with_trace_export(telemetry.traces_exported());
    let (graceful, forced) = crate::commands::signal_tokens();
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    if let Some(endpoint) = telemetry.env_endpoint() {
        let (addr, _) = telemetry
            .serve_prometheus(endpoint, metrics_stop.clone())
            .await?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }
    tracing::info!(telemetry = %telemetry.describe(), "telemetry");
    let result = worker.run(graceful, forced).await;
    metrics_stop.cancel();
    telemetry.shutdown().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn list(global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    let body: serde_json::Value = client.get_json("api/v1/workers").await?;
    match global.output {
        OutputFormat::Pretty => {
            let workers = body["workers"].as_array().cloned().unwrap_or_default();
            if workers.is_empty() {
                println!("No workers connected. Start one with: hangar worker --worker-id NAME");
            } else {
                println!(
                    "{:<24}  {:<10}  {:<9}  {:<8}  CONNECTED",
                    "WORKER", "BACKEND", "RUNNING", "DRAINING"
                );
                for w in workers {
                    let cap = w["max_concurrent_tasks"].as_u64().unwrap_or(0);
                    let running = format!(
                        "{}/{}",
                        w["running_tasks"].as_u64().unwrap_or(0),
                        if cap == 0 {
                            "∞".to_owned()
                        } else {
                            cap.to_string()
                        }
                    );
                    println!(
                        "{:<24}  {:<10}  {:<9}  {:<8}  {}",
                        w["worker_id"].as_str().unwrap_or(""),
                        w["backend"].as_str().unwrap_or(""),
                        running,
                        w["draining"].as_bool().unwrap_or(false),
                        w["connected_at"].as_str().unwrap_or("")
                    );
                }
            }
        }
        OutputFormat::Text => {
            for w in body["workers"].as_array().cloned().unwrap_or_default() {
                println!("{}", w["worker_id"].as_str().unwrap_or(""));
            }
        }
        f => crate::output::print_json(&body, f),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerCommand,
    }

    fn parse(args: &[&str]) -> Result<WorkerCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("worker").chain(args.iter().copied())).map(|c| c.worker)
    }

    #[test]
    fn s8_worker_token_create_takes_exactly_one_binding() {
        let cmd = parse(&[
            "token",
            "create",
            "--worker-id",
            "gpu-box-1",
            "--name",
            "gpu",
        ])
        .unwrap();
        let Some(WorkerSub::Token {
            sub:
                TokenSub::Create {
                    worker_id,
                    pool,
                    name,
                    expires_in,
                },
        }) = cmd.sub
        else {
            panic!("not `token create`: {cmd:?}");
        };
        assert_eq!(worker_id.as_deref(), Some("gpu-box-1"));
        assert_eq!(pool, None);
        assert_eq!(name.as_deref(), Some("gpu"));
        assert_eq!(expires_in, None);

        let cmd = parse(&["token", "create", "--pool", "ci-", "--expires-in", "30d"]).unwrap();
        assert!(
            matches!(
                &cmd.sub,
                Some(WorkerSub::Token { sub: TokenSub::Create { worker_id: None, pool: Some(p), expires_in: Some(e), .. } })
                    if p == "ci-" && e == "30d"
            ),
            "{cmd:?}"
        );

        // Both bindings, or none: a clear error naming the flags.
        let both = parse(&["token", "create", "--worker-id", "a", "--pool", "b"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(both.to_string().contains("--pool"), "{both}");
        let none = parse(&["token", "create", "--name", "x"]).unwrap_err();
        assert_eq!(none.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(none.to_string().contains("--worker-id"), "{none}");

        assert!(matches!(
            parse(&["token", "list"]).unwrap().sub,
            Some(WorkerSub::Token {
                sub: TokenSub::List
            })
        ));
        assert!(matches!(
            parse(&["token", "expire", "01TOKEN"]).unwrap().sub,
            Some(WorkerSub::Token { sub: TokenSub::Expire { token_id } }) if token_id == "01TOKEN"
        ));
        assert!(parse(&["token", "expire"]).is_err(), "expire needs the id");

        // The daemon's own `--worker-id` still works without a subcommand.
        let daemon = parse(&["--worker-id", "gpu-box-1"]).unwrap();
        assert!(daemon.sub.is_none());
        assert_eq!(daemon.args.worker_id.as_deref(), Some("gpu-box-1"));
    }
}
