//! `hangar agent run` (the agent runtime, launched by workers) and
//! `hangar agent run-cloud` (create a run on the server).

pub(crate) mod local;

use crate::commands::Global;
use crate::output::OutputFormat;
use anyhow::{Context, Result, bail};
use hangar_agent::{ManagedRun, RunOutcome};
use hangar_protocol::{AgentConfig, RunAgentRequest};
use std::path::PathBuf;
use std::process::ExitCode;

/// `hangar agent …`.
#[derive(Debug, clap::Args)]
pub struct AgentCommand {
    #[command(subcommand)]
    sub: AgentSub,
}

// Parsed once per process: the size of the arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum AgentSub {
    /// Run the agent on a task (as a worker launches it: `--task-id RUN --server-url URL`).
    Run(RunArgs),
    /// Create a run on the server and print its id.
    #[command(name = "run-cloud")]
    RunCloud(RunCloudArgs),
}

/// Flags of `hangar agent run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Run to work on (managed mode); the run token comes from $HANGAR_RUN_TOKEN.
    #[arg(long, value_name = "RUN")]
    task_id: Option<String>,
    /// Server URL (managed mode).
    #[arg(
        long,
        alias = "server-root-url",
        env = "HANGAR_SERVER_URL",
        value_name = "URL"
    )]
    server_url: Option<String>,
    /// Set by workers: the agent runs inside a sandbox.
    #[arg(long)]
    sandboxed: bool,
    /// Model (`provider/model`), overriding the run's.
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Working directory [default: the current directory].
    #[arg(short = 'C', long = "cwd", value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Keep the sandbox alive this long after finishing (accepted for Oz compatibility).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "45m")]
    idle_on_complete: Option<String>,
    /// What the agent should do (unmanaged run in the current directory or -C).
    #[arg(short = 'p', long, value_name = "PROMPT")]
    prompt: Option<String>,
    /// Run config file (YAML/JSON: name, environment_id, model_id, base_prompt, mcp_servers, host).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Start with this skill (`name` or `owner/repo:name`).
    #[arg(long, value_name = "SKILL")]
    skill: Option<String>,
    /// Run name (label).
    #[arg(short = 'n', long, value_name = "NAME")]
    name: Option<String>,
    /// Share a tracked run (team, team:view, team:edit, user@x[:view|edit], public:view); repeatable.
    #[arg(long, value_name = "WHO")]
    share: Vec<String>,
    /// MCP server: inline JSON, a JSON file, or a server name; repeatable.
    #[arg(long, value_name = "SPEC")]
    mcp: Vec<String>,
    /// Fail when an MCP server does not start (default: continue without it).
    #[arg(long)]
    strict_mcp_startup: bool,
    /// Seconds an MCP server may take to start.
    #[arg(long, value_name = "SECS")]
    mcp_startup_timeout: Option<u64>,
    /// Run a third-party CLI instead of the built-in agent: claude, codex, opencode or gemini.
    #[arg(long, value_name = "CLI")]
    harness: Option<String>,
    /// Managed mode: the run's environment (set by a stock `oz-agent-worker`).
    /// Unless the worker prepared the sandbox already, the agent clones the
    /// environment's repositories and runs its setup commands first.
    #[arg(long, value_name = "ENV")]
    environment: Option<String>,
    /// Oz agent profile (accepted for Oz compatibility; Hangar has no profiles).
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
    /// Enable computer use (accepted for Oz compatibility; not available in Hangar yet).
    #[arg(long, overrides_with = "no_computer_use")]
    computer_use: bool,
    /// Disable computer use (the default in Hangar).
    #[arg(long, overrides_with = "computer_use")]
    no_computer_use: bool,
    /// AWS Bedrock inference role (accepted for Oz compatibility; Hangar routes
    /// model calls through its own LLM gateway).
    #[arg(long, value_name = "ARN")]
    bedrock_inference_role: Option<String>,
    /// Region of the Bedrock inference role (see --bedrock-inference-role).
    #[arg(long, value_name = "REGION", requires = "bedrock_inference_role")]
    bedrock_role_region: Option<String>,
    /// Workspace snapshots off (Hangar takes none).
    #[arg(long)]
    no_snapshot: bool,
    /// Snapshot upload timeout (accepted for Oz compatibility; Hangar takes no snapshots).
    #[arg(long, value_name = "DURATION")]
    snapshot_upload_timeout: Option<String>,
    /// Snapshot script timeout (accepted for Oz compatibility; Hangar takes no snapshots).
    #[arg(long, value_name = "DURATION")]
    snapshot_script_timeout: Option<String>,
    /// Session-sharing server (accepted for Oz compatibility; Hangar's server serves sessions itself).
    #[arg(long, value_name = "URL")]
    session_sharing_server_url: Option<String>,
}

impl RunArgs {
    /// Flags of the stock worker's command line that this agent accepts but
    /// cannot honour, one clear sentence each (recorded on the run).
    fn compatibility_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.computer_use {
            notes.push(
                "--computer-use: computer use is not available in Hangar yet; the run has the \
                 built-in tools only"
                    .to_owned(),
            );
        }
        if let Some(role) = &self.bedrock_inference_role {
            notes.push(format!(
                "--bedrock-inference-role {role}: not used; Hangar routes model calls through \
                 its own LLM gateway"
            ));
        }
        if self.snapshot_upload_timeout.is_some() || self.snapshot_script_timeout.is_some() {
            notes.push(
                "--snapshot-*: Hangar takes no workspace snapshots; the timeouts are ignored"
                    .to_owned(),
            );
        }
        if let Some(profile) = &self.profile {
            notes.push(format!(
                "--profile {profile}: Hangar has no agent profiles; the run's configuration applies"
            ));
        }
        if !self.share.is_empty() {
            notes.push(format!(
                "--share {}: sharing is managed on the server (`hangar run share`), not by the agent",
                self.share.join(", ")
            ));
        }
        if self.session_sharing_server_url.is_some() {
            notes.push(
                "--session-sharing-server-url: ignored; the Hangar server serves sessions itself"
                    .to_owned(),
            );
        }
        notes
    }
}

/// Flags of `hangar agent run-cloud`.
#[derive(Debug, clap::Args)]
struct RunCloudArgs {
    /// What the agent should do.
    #[arg(short = 'p', long, value_name = "PROMPT")]
    prompt: String,
    /// Model (`provider/model`, e.g. `openai/gpt-5`) [default: the server's].
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Worker that must run it (its `--worker-id`, exact match).
    #[arg(long, value_name = "WORKER")]
    host: Option<String>,
    /// Run title [default: the prompt's first line].
    #[arg(long, value_name = "TITLE")]
    title: Option<String>,
    /// Label for grouping and filtering runs.
    #[arg(short = 'n', long, value_name = "NAME")]
    name: Option<String>,
    /// Environment (id or name) to run in.
    #[arg(
        short = 'e',
        long,
        value_name = "ENV",
        conflicts_with = "no_environment"
    )]
    environment: Option<String>,
    /// Run without an environment.
    #[arg(long)]
    no_environment: bool,
    /// Skill to start with (`name` or `owner/repo:name`).
    #[arg(long, value_name = "SKILL")]
    skill: Option<String>,
    /// MCP servers: inline JSON `{"name": {...}}` or a JSON file (repeatable).
    #[arg(long, value_name = "SPEC")]
    mcp: Vec<String>,
    /// Share the run's session (team, team:view, team:edit, user@x[:view|edit], public:view); repeatable.
    #[arg(long, value_name = "WHO")]
    share: Vec<String>,
    /// Stream the session live until the run ends; exit with its status.
    #[arg(long)]
    follow: bool,
}

/// Dispatches `hangar agent …`.
pub async fn run(cmd: AgentCommand, global: &Global) -> Result<ExitCode> {
    match cmd.sub {
        AgentSub::Run(args) => agent_run(args, global).await,
        AgentSub::RunCloud(args) => run_cloud(args, global).await,
    }
}

async fn agent_run(args: RunArgs, global: &Global) -> Result<ExitCode> {
    let notes = args.compatibility_notes();
    let Some(task_id) = args.task_id else {
        let _ = crate::commands::init_logging("warn", Some(hangar_worker::LogFormat::Pretty));
        if args.prompt.is_none() && args.skill.is_none() {
            bail!(
                "`hangar agent run` needs -p PROMPT (an unmanaged run here) or --task-id RUN \
                 --server-url URL (as workers launch it)"
            );
        }
        return local::run(local::LocalArgs {
            prompt: args.prompt.unwrap_or_default(),
            model: args.model,
            cwd: args.cwd,
            file: args.file,
            skill: args.skill,
            name: args.name,
            share: args.share,
            mcp: args.mcp,
            strict_mcp_startup: args.strict_mcp_startup,
            mcp_startup_timeout: args.mcp_startup_timeout.map(std::time::Duration::from_secs),
            harness: args.harness,
            server_url: args.server_url.or_else(|| global.server_url.clone()),
            api_key: global.api_key.clone(),
            output: global.output,
        })
        .await;
    };
    // The tools this agent runs share its user: without this they could read
    // its run token from /proc/<agent>/environ or its memory (issue 11, S7).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("warning: cannot mark the agent non-dumpable: {e}");
    }
    let log_secrets = crate::commands::init_logging(
        "warn,hangar_agent=info",
        Some(hangar_worker::LogFormat::Pretty),
    );
    // The agent's own log (its stderr, which the worker logs) never shows the
    // run's secrets or token either.
    let _masked = log_secrets.register(
        hangar_protocol::redact::Redactor::from_env()
            .values()
            .to_vec(),
    );
    let Some(server_url) = args.server_url else {
        bail!("--server-url (or HANGAR_SERVER_URL) is required with --task-id");
    };
    let workdir = match args.cwd {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let mut opts = match ManagedRun::from_env(server_url, task_id, workdir) {
        Ok(o) => o,
        Err(missing) => {
            bail!("environment variable {missing} is not set; workers set it for each task")
        }
    };
    for note in notes {
        tracing::info!("{note}");
        opts.notes.push(note);
    }
    opts.model_override = args.model;
    opts.skill_override = args.skill;
    for spec in &args.mcp {
        let parsed = hangar_agent::mcp::resolve_mcp_spec(spec, None)
            .await
            .map_err(|e| anyhow::anyhow!("--mcp `{spec}`: {e}"))?;
        opts.mcp_overrides.extend(parsed);
    }
    if let Some(environment) = args.environment {
        if std::env::var_os(hangar_protocol::ENV_ENVIRONMENT_PREPARED).is_some() {
            tracing::info!(environment, "the worker prepared the environment already");
        } else {
            opts.prepare = Some(environment_preparation(&opts, environment));
        }
    }
    // SIGTERM/SIGINT cancel the run; the agent still reports the cancellation
    // (the worker SIGKILLs after its grace anyway).
    // Traces only, and only when the worker passed OTEL_TRACES_EXPORTER on:
    // the agent's spans join the run's trace (TRACEPARENT).
    let mut settings = hangar_telemetry::Settings::new("hangar-agent");
    settings.attributes = vec![("hangar.run.id", opts.run_id.clone())];
    let telemetry = match hangar_telemetry::Telemetry::init_traces(settings) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(error = %e, "traces not exported");
            None
        }
    };
    let (cancel, _) = crate::commands::signal_tokens();
    let outcome = hangar_agent::run_managed(opts, cancel).await;
    if let Some(t) = telemetry {
        t.shutdown().await;
    }
    match outcome {
        Ok(RunOutcome::Succeeded { .. }) => Ok(ExitCode::SUCCESS),
        Ok(RunOutcome::Failed { message }) => {
            eprintln!("run failed: {message}");
            Ok(ExitCode::from(1))
        }
        Ok(RunOutcome::Cancelled) => Ok(ExitCode::from(130)),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Prepares the run's environment in the agent's working directory, with
/// the worker's own code ([`hangar_worker::prepare`]): a stock
/// `oz-agent-worker` leaves it to the agent, as Oz's agent does.
fn environment_preparation(
    opts: &hangar_agent::ManagedRun,
    requested: String,
) -> hangar_agent::Prepare {
    let (server_url, run_id, token, workdir) = (
        opts.server_url.clone(),
        opts.run_id.clone(),
        opts.run_token.clone(),
        opts.workdir.clone(),
    );
    std::sync::Arc::new(move |cancel| {
        let (server_url, run_id, token, workdir, requested) = (
            server_url.clone(),
            run_id.clone(),
            token.clone(),
            workdir.clone(),
            requested.clone(),
        );
        Box::pin(async move {
            let failed = |reason: &str, message: String| hangar_agent::PrepareError {
                failure_reason: reason.to_owned(),
                message,
            };
            let client = hangar_client::Client::new(&server_url, token.clone())
                .map_err(|e| failed("workspace_setup", format!("cannot reach the server: {e}")))?;
            let got: hangar_protocol::worker::RunEnvironment = client
                .get_json(&format!("api/v1/agent/runs/{run_id}/environment"))
                .await
                .map_err(|e| {
                    failed(
                        "workspace_setup",
                        format!("cannot fetch the run's environment {requested}: {e}"),
                    )
                })?;
            let Some(environment) = got.environment else {
                tracing::warn!(
                    environment = requested,
                    "--environment given, but the run has no environment: nothing to prepare"
                );
                return Ok(());
            };
            if environment.id != requested && environment.name != requested {
                tracing::warn!(
                    requested,
                    environment = environment.id,
                    "--environment names another environment than the run's; preparing the run's"
                );
            }
            tracing::info!(
                environment = environment.id,
                repositories = environment.repos.len(),
                setup_commands = environment.setup_commands.len(),
                "preparing the environment (the worker did not)"
            );
            let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let ctx = hangar_worker::prepare::InPlace {
                workspace: &workdir,
                env: &env,
                redactor: hangar_protocol::redact::Redactor::from_env().with([token]),
                allow_local_repositories: got.allow_local_repositories,
            };
            hangar_worker::prepare::prepare_in_place(&environment, ctx, &cancel)
                .await
                .map_err(|e| failed(e.reason.as_str(), e.message))
        }) as futures::future::BoxFuture<'static, _>
    })
}

/// The run source `run-cloud` reports: `$HANGAR_RUN_SOURCE` when set (the
/// GitHub Action sets `GITHUB_ACTION`; the server refuses unknown values),
/// else `CLI`.
fn run_source() -> String {
    std::env::var("HANGAR_RUN_SOURCE")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "CLI".to_owned())
}

async fn run_cloud(args: RunCloudArgs, global: &Global) -> Result<ExitCode> {
    let client = global.client()?;
    if args.prompt.trim().is_empty() {
        bail!("the prompt is empty: pass what the agent should do with -p");
    }
    // Checked before the run exists, so a typo never leaves an unshared run behind.
    let shares = crate::commands::share::parse_specs("--share", &args.share)?;
    let mut mcp_servers = std::collections::BTreeMap::new();
    for spec in &args.mcp {
        let parsed = hangar_agent::mcp::resolve_mcp_spec(spec, Some(&client))
            .await
            .map_err(|e| anyhow::anyhow!("--mcp `{spec}`: {e}"))?;
        mcp_servers.extend(parsed);
    }
    let config = AgentConfig {
        name: args.name,
        model_id: args.model,
        worker_host: args.host,
        environment_id: if args.no_environment {
            None
        } else {
            args.environment
        },
        skill_spec: args.skill,
        mcp_servers: (!mcp_servers.is_empty()).then_some(mcp_servers),
        ..AgentConfig::default()
    };
    let req = RunAgentRequest {
        prompt: Some(args.prompt),
        config: Some(config),
        title: args.title,
        ..RunAgentRequest::default()
    };
    let resp = client.create_run_from(&req, &run_source()).await?;
    let applied = crate::commands::share::apply(&client, &resp.run_id, &shares)
        .await
        .with_context(|| format!("run {} was created but not shared", resp.run_id));
    match global.output {
        OutputFormat::Pretty => {
            println!("Created run {} ({}).", resp.run_id, resp.state);
            if resp.at_capacity {
                println!("No worker has a free slot right now; it starts when one does.");
            }
            if let Ok(items) = &applied {
                items
                    .iter()
                    .for_each(|i| println!("{}", crate::commands::share::describe(i)));
            }
            if !args.follow {
                println!("Watch it with: hangar run watch {}", resp.run_id);
            }
        }
        OutputFormat::Text => {
            println!("{}", resp.run_id);
            if let Ok(items) = &applied {
                items
                    .iter()
                    .filter_map(|i| i.url.as_deref())
                    .for_each(|url| println!("{url}"));
            }
        }
        f => {
            let mut value = serde_json::to_value(&resp)?;
            if let Ok(items) = &applied
                && !items.is_empty()
            {
                value["shares"] = serde_json::to_value(items)?;
            }
            crate::output::print_json(&value, f);
        }
    }
    applied?;
    if args.follow {
        return crate::commands::watch::watch(&client, &resp.run_id, global.output).await;
    }
    Ok(ExitCode::SUCCESS)
}
