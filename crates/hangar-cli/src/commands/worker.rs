//! `hangar worker`: the worker daemon; `hangar worker list`: connected workers.

use crate::commands::Global;
use crate::output::OutputFormat;
use anyhow::Result;
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
}

/// Runs the daemon or the subcommand.
pub async fn run(cmd: WorkerCommand, global: &Global) -> Result<ExitCode> {
    match cmd.sub {
        Some(WorkerSub::List) => list(global).await,
        None => daemon(cmd.args).await,
    }
}

async fn daemon(mut args: WorkerArgs) -> Result<ExitCode> {
    let level = args.log_level.map(|l| l.as_str()).unwrap_or("info");
    let log_secrets = crate::commands::init_logging(level);
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
    let worker = hangar_worker::Worker::new(config)?.with_log_secrets(log_secrets);
    let (graceful, forced) = crate::commands::signal_tokens();
    worker.run(graceful, forced).await?;
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
