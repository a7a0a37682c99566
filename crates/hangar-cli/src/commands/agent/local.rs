//! `hangar agent run -p …`: an unmanaged run in the current directory (or
//! `-C DIR`), printing its transcript in the chosen output format.

use crate::output::OutputFormat;
use anyhow::{Context, Result, bail};
use hangar_agent::mcp::{DEFAULT_MCP_STARTUP_TIMEOUT, resolve_mcp_specs};
use hangar_agent::{
    CancellationToken, EventBody, EventSink, LocalRun, RegisteredHook, RunOutcome, SinkError,
    TrackingServer,
};
use hangar_protocol::McpServerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A run config file (`-f`): YAML or JSON, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfigFile {
    /// Run name.
    #[serde(default)]
    pub name: Option<String>,
    /// Environment (managed runs only; ignored locally).
    #[serde(default)]
    pub environment_id: Option<String>,
    /// Model.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Extra system prompt.
    #[serde(default)]
    pub base_prompt: Option<String>,
    /// MCP servers.
    #[serde(default)]
    pub mcp_servers: Option<BTreeMap<String, McpServerConfig>>,
    /// Worker host (managed runs only; ignored locally).
    #[serde(default)]
    pub host: Option<String>,
}

impl RunConfigFile {
    /// Reads `path` (JSON when it parses as JSON, else YAML).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the run config {}", path.display()))?;
        if text.trim_start().starts_with('{') {
            serde_json::from_str(&text)
                .with_context(|| format!("invalid run config {}", path.display()))
        } else {
            serde_norway::from_str(&text)
                .with_context(|| format!("invalid run config {}", path.display()))
        }
    }
}

/// The flags of an unmanaged run, gathered by `agent.rs`.
#[derive(Debug)]
pub struct LocalArgs {
    pub prompt: String,
    pub model: Option<String>,
    pub cwd: Option<PathBuf>,
    pub file: Option<PathBuf>,
    pub skill: Option<String>,
    pub name: Option<String>,
    pub share: Vec<String>,
    pub mcp: Vec<String>,
    pub strict_mcp_startup: bool,
    pub mcp_startup_timeout: Option<Duration>,
    pub harness: Option<String>,
    pub server_url: Option<String>,
    pub api_key: Option<String>,
    pub output: OutputFormat,
}

/// Prints events as they happen, in the chosen format (also `hangar run watch`).
pub(crate) struct Printer {
    format: OutputFormat,
    seq: AtomicU64,
    spinner: bool,
    state: Mutex<PrintState>,
}

#[derive(Default)]
struct PrintState {
    events: Vec<serde_json::Value>,
    artifacts: Vec<serde_json::Value>,
    prompt_tokens: u64,
    completion_tokens: u64,
    last_answer: String,
}

impl Printer {
    pub(crate) fn new(format: OutputFormat) -> Self {
        Printer {
            format,
            seq: AtomicU64::new(0),
            spinner: format == OutputFormat::Pretty && std::io::stderr().is_terminal(),
            state: Mutex::default(),
        }
    }

    pub(crate) fn thinking(&self) {
        if self.spinner {
            eprint!("\r⠋ thinking…");
            let _ = std::io::stderr().flush();
        }
    }

    pub(crate) fn clear_spinner(&self) {
        if self.spinner {
            eprint!("\r\x1b[2K");
        }
    }

    pub(crate) fn pretty(&self, event: &EventBody) {
        self.clear_spinner();
        let mut out = std::io::stdout().lock();
        let _ = match event {
            EventBody::UserMessage { text } => writeln!(out, "› {text}"),
            EventBody::AssistantMessage { text } => writeln!(out, "{text}"),
            EventBody::Reasoning { text } => writeln!(out, "  (thinking) {}", first_line(text)),
            EventBody::ToolCall {
                name, arguments, ..
            } => {
                writeln!(out, "⚙ {name} {}", shorten(&arguments.to_string(), 160))
            }
            EventBody::ToolResult {
                output, is_error, ..
            } => {
                let mark = if *is_error { "✗" } else { "✓" };
                writeln!(
                    out,
                    "  {mark} {}",
                    shorten(output.trim_end(), 400).replace('\n', "\n    ")
                )
            }
            EventBody::Status {
                state: Some(state),
                message,
                ..
            } => {
                writeln!(out, "── {state}: {}", first_line(message))
            }
            EventBody::Status {
                state: None,
                message,
                ..
            } => writeln!(out, "· {message}"),
            EventBody::Artifact {
                artifact_type,
                url,
                path,
                title,
            } => writeln!(
                out,
                "★ {artifact_type}: {}",
                title
                    .as_ref()
                    .or(url.as_ref())
                    .or(path.as_ref())
                    .cloned()
                    .unwrap_or_default()
            ),
            EventBody::Usage { .. } => Ok(()),
            EventBody::Error { message } => writeln!(out, "error: {message}"),
        };
        let _ = out.flush();
        drop(out);
        if matches!(
            event,
            EventBody::UserMessage { .. } | EventBody::ToolResult { .. }
        ) {
            self.thinking();
        }
    }

    fn summary(
        &self,
        outcome: &RunOutcome,
        run_id: Option<&str>,
        model: &str,
    ) -> serde_json::Value {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        serde_json::json!({
            "state": outcome.state(),
            "success": outcome.is_success(),
            "result": outcome.message(),
            "run_id": run_id,
            "model": model,
            "usage": {"prompt_tokens": state.prompt_tokens, "completion_tokens": state.completion_tokens},
            "artifacts": state.artifacts,
            "events": state.events.len(),
        })
    }
}

// `EventSink` is an `async_trait`; this is its desugared form (the CLI does
// not depend on the macro crate). Printing is synchronous anyway.
impl EventSink for Printer {
    fn emit<'a, 'b>(
        &'a self,
        event: EventBody,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SinkError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        self.print(event);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Printer {
    fn print(&self, event: EventBody) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &event {
                EventBody::Usage {
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    state.prompt_tokens += prompt_tokens;
                    state.completion_tokens += completion_tokens;
                }
                EventBody::Artifact { .. } => {
                    state
                        .artifacts
                        .push(serde_json::to_value(&event).unwrap_or_default());
                }
                EventBody::AssistantMessage { text } => state.last_answer.clone_from(text),
                _ => {}
            }
            state.events.push(serde_json::Value::Null);
        }
        match self.format {
            OutputFormat::Pretty => self.pretty(&event),
            OutputFormat::Ndjson => {
                let mut line = serde_json::to_value(&event).unwrap_or_default();
                line["seq"] = seq.into();
                line["at"] =
                    serde_json::to_value(hangar_protocol::Timestamp::now()).unwrap_or_default();
                println!("{line}");
            }
            OutputFormat::Json | OutputFormat::Text => {}
        }
    }
}

fn first_line(text: &str) -> String {
    shorten(text.lines().next().unwrap_or_default(), 200)
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The local run `args` ask for: the working directory, the run file, the
/// MCP servers (a bare `--mcp NAME` looked up on the server when one is
/// configured), the tracking server and the share hook.
async fn local_run(args: &LocalArgs) -> Result<LocalRun> {
    let workdir = match &args.cwd {
        Some(dir) => std::fs::canonicalize(dir)
            .with_context(|| format!("-C {}: no such directory", dir.display()))?,
        None => std::env::current_dir()?,
    };
    let file = match &args.file {
        Some(path) => RunConfigFile::load(path)?,
        None => RunConfigFile::default(),
    };
    if file.environment_id.is_some() || file.host.is_some() {
        tracing::warn!("environment_id and host apply to cloud runs; ignored by a local run");
    }
    // Checked before anything starts, so a typo fails fast with the accepted forms.
    crate::commands::share::parse_specs("--share", &args.share)?;
    let mut mcp_servers = file.mcp_servers.clone().unwrap_or_default();
    // A bare `--mcp NAME` is looked up on the server, when one is configured.
    let lookup = match (&args.server_url, &args.api_key) {
        (Some(url), Some(key)) if !url.trim().is_empty() && !key.trim().is_empty() => {
            Some(hangar_client::Client::new(url, key.trim())?)
        }
        _ => None,
    };
    mcp_servers.extend(resolve_mcp_specs(&args.mcp, lookup.as_ref()).await?);
    let server = match (&args.server_url, &args.api_key) {
        (Some(url), Some(key)) if !url.trim().is_empty() && !key.trim().is_empty() => {
            Some(TrackingServer {
                url: url.clone(),
                api_key: key.clone(),
                share: args.share.clone(),
            })
        }
        _ => {
            if !args.share.is_empty() {
                bail!("--share needs a server: set HANGAR_SERVER_URL and HANGAR_API_KEY");
            }
            None
        }
    };
    let mut opts = LocalRun::new(args.prompt.clone(), workdir);
    opts.model = args.model.clone().or(file.model_id);
    opts.base_prompt = file.base_prompt;
    opts.name = args.name.clone().or(file.name);
    opts.skill = args.skill.clone();
    opts.mcp_servers = mcp_servers;
    opts.strict_mcp_startup = args.strict_mcp_startup;
    opts.mcp_startup_timeout = args
        .mcp_startup_timeout
        .unwrap_or(DEFAULT_MCP_STARTUP_TIMEOUT);
    opts.server = server;
    opts.harness = args.harness.clone();
    let output = args.output;
    opts.on_registered = Some(RegisteredHook(std::sync::Arc::new(
        move |_run_id, shares| {
            for item in shares {
                let line = crate::commands::share::describe(item);
                // Machine formats keep stdout for events and the summary.
                if output == OutputFormat::Pretty {
                    println!("{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        },
    )));
    Ok(opts)
}

/// Runs an unmanaged agent and prints the result; exit 0 only on success.
pub async fn run(args: LocalArgs) -> Result<ExitCode> {
    let opts = local_run(&args).await?;
    let printer = Printer::new(args.output);
    let cancel = CancellationToken::new();
    let (first, _) = crate::commands::signal_tokens();
    let watcher = {
        let cancel = cancel.clone();
        #[allow(clippy::disallowed_methods)] // aborted on drop: ends with the local run
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            first.cancelled().await;
            cancel.cancel();
        }))
    };
    printer.thinking();
    let report = hangar_agent::run_local(opts, &printer, cancel).await;
    drop(watcher);
    printer.clear_spinner();
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            if matches!(args.output, OutputFormat::Json | OutputFormat::Ndjson) {
                println!(
                    "{}",
                    serde_json::json!({"state": "ERROR", "success": false, "error": e.to_string()})
                );
            }
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut summary = printer.summary(&report.outcome, report.run_id.as_deref(), &report.model);
    if !report.shares.is_empty() {
        summary["shares"] = serde_json::to_value(&report.shares).unwrap_or_default();
    }
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        ),
        OutputFormat::Text => println!("{}", report.outcome.message()),
        OutputFormat::Ndjson => {}
        OutputFormat::Pretty => {
            if let Some(id) = &report.run_id {
                println!("Run {id} is on the server: hangar run get {id}");
            }
        }
    }
    Ok(match report.outcome {
        RunOutcome::Succeeded { .. } => ExitCode::SUCCESS,
        RunOutcome::Failed { .. } => ExitCode::from(1),
        RunOutcome::Cancelled => ExitCode::from(130),
    })
}
