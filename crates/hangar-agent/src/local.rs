//! Unmanaged runs: `hangar agent run -p …` in a directory, with no worker.
//!
//! The model comes from a provider configured in the environment
//! (`OPENAI_API_KEY`/`OPENAI_BASE_URL`, `ANTHROPIC_API_KEY`, see
//! [`ProviderRegistry::from_env`]). With a server URL and API key the run is
//! also *tracked*: it is registered with `POST /api/v1/agent/runs/local`
//! (`execution_location: LOCAL`), its events go to the server through the
//! normal durable session stream with the returned run token, and when no
//! local provider serves the model the server's LLM gateway does. Every
//! event also goes to a caller-supplied sink (the CLI's printer). `--share`
//! grants are applied right after registration; their syntax is checked
//! before anything is registered.

use crate::agent::{Agent, LoopConfig, RunOutcome};
use crate::error::AgentError;
use crate::event::{EventSink, SinkError};
use crate::harness::{HarnessKind, run_harness};
use crate::managed::{FLUSH_TIMEOUT, gateway_provider};
use crate::mcp::{DEFAULT_MCP_STARTUP_TIMEOUT, McpError, McpOptions, McpServers};
use crate::redact::Redactor;
use crate::session::{SessionConfig, SessionStream, spool_path};
use crate::skills::{
    LoadSkillTool, discover_skills, prompt_with_skill, resolve_skill_spec, skills_prompt,
};
use crate::tools::ToolRegistry;
use hangar_client::Client;
use hangar_llm::{ModelProvider, ProviderRegistry};
use hangar_protocol::session::{EventBody, Followup};
use hangar_protocol::share::{CreateShareRequest, ShareItem, ShareSpecError, parse_share_spec};
use hangar_protocol::{AgentConfig, McpServerConfig, RunAgentRequest, RunState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where tracked unmanaged runs are registered, relative to the server URL.
pub const LOCAL_RUNS_PATH: &str = "api/v1/agent/runs/local";

/// The server's answer to `POST /api/v1/agent/runs/local`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LocalRunRegistration {
    /// The tracked run.
    pub run_id: String,
    /// Its execution.
    pub execution_id: String,
    /// Run token (session stream, gateway).
    pub run_token: String,
    /// `INPROGRESS`.
    pub state: RunState,
}

/// A Hangar server to register the run with.
#[derive(Clone)]
pub struct TrackingServer {
    /// Base URL.
    pub url: String,
    /// API key.
    pub api_key: String,
    /// `--share` values (`team`, `team:edit`, `user@x:view`, `public:view`, …),
    /// granted right after the run is registered.
    pub share: Vec<String>,
}

impl std::fmt::Debug for TrackingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackingServer")
            .field("url", &self.url)
            .field("api_key", &"***")
            .field("share", &self.share)
            .finish()
    }
}

/// Everything an unmanaged run needs.
#[derive(Debug, Clone)]
pub struct LocalRun {
    /// The task (may be empty with `skill`).
    pub prompt: String,
    /// `provider/model`; default: the first configured provider's default.
    pub model: Option<String>,
    /// Workspace.
    pub workdir: PathBuf,
    /// Extra system prompt (`base_prompt` of a run config file).
    pub base_prompt: Option<String>,
    /// Run name (label).
    pub name: Option<String>,
    /// `--skill`.
    pub skill: Option<String>,
    /// MCP servers.
    pub mcp_servers: BTreeMap<String, McpServerConfig>,
    /// `--strict-mcp-startup`.
    pub strict_mcp_startup: bool,
    /// Bound on starting one MCP server.
    pub mcp_startup_timeout: Duration,
    /// Register the run with this server.
    pub server: Option<TrackingServer>,
    /// Spool directory of a tracked run (default `<workdir>/.hangar`).
    pub spool_dir: Option<PathBuf>,
    /// Model calls allowed.
    pub max_turns: Option<u32>,
    /// `--harness`: run this third-party CLI instead of the built-in loop.
    pub harness: Option<String>,
    /// The harness program (default: found in `PATH`).
    pub harness_program: Option<PathBuf>,
    /// Called once a tracked run is registered and shared, before the agent starts.
    pub on_registered: Option<RegisteredHook>,
}

/// Tells the caller a tracked run exists: its id and the grants applied
/// (public links carry their URL, shown only now).
#[derive(Clone)]
pub struct RegisteredHook(pub Arc<RegisteredFn>);

/// The callback of a [`RegisteredHook`]: `(run_id, grants applied)`.
pub type RegisteredFn = dyn Fn(&str, &[ShareItem]) + Send + Sync;

impl std::fmt::Debug for RegisteredHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegisteredHook")
    }
}

impl LocalRun {
    /// A run of `prompt` in `workdir` with defaults for everything else.
    pub fn new(prompt: impl Into<String>, workdir: impl Into<PathBuf>) -> Self {
        LocalRun {
            prompt: prompt.into(),
            model: None,
            workdir: workdir.into(),
            base_prompt: None,
            name: None,
            skill: None,
            mcp_servers: BTreeMap::new(),
            strict_mcp_startup: false,
            mcp_startup_timeout: DEFAULT_MCP_STARTUP_TIMEOUT,
            server: None,
            spool_dir: None,
            max_turns: None,
            harness: None,
            harness_program: None,
            on_registered: None,
        }
    }
}

/// How an unmanaged run ended.
#[derive(Debug, Clone)]
pub struct LocalReport {
    /// The outcome.
    pub outcome: RunOutcome,
    /// The tracked run's id, if registered.
    pub run_id: Option<String>,
    /// The model used.
    pub model: String,
    /// Grants applied to the tracked run (`--share`).
    pub shares: Vec<ShareItem>,
}

/// Why an unmanaged run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalRunError {
    /// No provider and no server to reach a model.
    #[error(
        "no model provider: set OPENAI_API_KEY (and OPENAI_BASE_URL for an OpenAI-compatible \
         server) or ANTHROPIC_API_KEY, or HANGAR_SERVER_URL and HANGAR_API_KEY to use the server's gateway"
    )]
    NoProvider,
    /// The model id does not resolve.
    #[error(transparent)]
    Model(#[from] hangar_llm::LlmError),
    /// Registering with the server failed.
    #[error("cannot register the run with the server: {0}")]
    Register(#[source] hangar_client::ClientError),
    /// A `--share` value is not understood.
    #[error("--share {0}")]
    Share(#[source] ShareSpecError),
    /// A skill is missing.
    #[error("{0}")]
    Skill(String),
    /// `--harness` names an unknown CLI.
    #[error("{0}")]
    Harness(String),
    /// Neither a prompt nor a skill.
    #[error("nothing to do: pass a prompt with -p (or a skill with --skill)")]
    NoPrompt,
    /// MCP setup failed.
    #[error(transparent)]
    Mcp(#[from] McpError),
    /// The agent runtime failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Sends every event to each of its sinks, in order.
pub struct TeeSink<'a>(pub Vec<&'a dyn EventSink>);

#[async_trait::async_trait]
impl EventSink for TeeSink<'_> {
    async fn emit(&self, event: EventBody) -> Result<(), SinkError> {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.emit(event.clone()).await?;
            }
            last.emit(event).await?;
        }
        Ok(())
    }
}

/// What [`prepare`] sets up for a run: tools (built-ins, skills, MCP), the
/// effective prompt and system prompt addition.
pub struct Prepared {
    /// Tools to offer.
    pub tools: ToolRegistry,
    /// The first user message.
    pub prompt: String,
    /// Extra system prompt (base prompt + skills list).
    pub base_prompt: Option<String>,
    /// Connected MCP servers (shut down after the run).
    pub mcp: McpServers,
}

/// Sets up tools, skills and MCP servers for a run in `workdir`.
pub async fn prepare(
    workdir: &Path,
    prompt: &str,
    base_prompt: Option<&str>,
    skill: Option<&str>,
    mcp_servers: &BTreeMap<String, McpServerConfig>,
    mcp_options: &McpOptions,
) -> Result<Prepared, LocalRunError> {
    let mut tools = ToolRegistry::with_builtins();
    let skills = discover_skills(workdir);
    let prompt = match skill.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) => {
            let skill = resolve_skill_spec(spec, &skills)
                .await
                .map_err(LocalRunError::Skill)?;
            prompt_with_skill(&skill, Some(prompt))
        }
        None if prompt.trim().is_empty() => return Err(LocalRunError::NoPrompt),
        None => prompt.to_owned(),
    };
    let mut extra: Vec<String> = base_prompt
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .into_iter()
        .collect();
    if let Some(text) = skills_prompt(&skills) {
        extra.push(text);
        tools.register(Arc::new(LoadSkillTool::new(skills)));
    }
    let mcp = McpServers::start(mcp_servers, mcp_options).await?;
    for tool in mcp.tools() {
        tools.register(tool.clone());
    }
    Ok(Prepared {
        tools,
        prompt,
        base_prompt: (!extra.is_empty()).then(|| extra.join("\n\n")),
        mcp,
    })
}

/// The provider for `model`: a local one when one serves it, else the
/// server's gateway for a tracked run. Returns the provider, the model name
/// it knows and the full `provider/model` id.
fn resolve_provider(
    registry: &ProviderRegistry,
    model: Option<String>,
    registration: &Option<(String, LocalRunRegistration)>,
) -> Result<(Arc<dyn ModelProvider>, String, String), LocalRunError> {
    Ok(match (model, registration) {
        (Some(model), reg) => match registry.resolve(&model) {
            Ok((provider, local)) => (provider, local, model),
            Err(e) => match reg {
                Some((url, reg)) => {
                    let client =
                        Client::new(url, reg.run_token.clone()).map_err(LocalRunError::Register)?;
                    (gateway_provider(&client)?, model.clone(), model)
                }
                None => return Err(e.into()),
            },
        },
        (None, Some(_)) => {
            return Err(LocalRunError::Model(hangar_llm::LlmError::UnknownModel {
                model: String::new(),
                reason: "pass --model provider/model".into(),
            }));
        }
        (None, None) => return Err(LocalRunError::NoProvider),
    })
}

/// Registers a tracked local run with `server` and shares it as asked;
/// calls the `on_registered` hook.
async fn register(
    opts: &LocalRun,
    server: &TrackingServer,
    model: Option<String>,
) -> Result<(LocalRunRegistration, Vec<ShareItem>), LocalRunError> {
    let client =
        Client::new(&server.url, server.api_key.clone()).map_err(LocalRunError::Register)?;
    let request = RunAgentRequest {
        prompt: Some(opts.prompt.clone()).filter(|p| !p.trim().is_empty()),
        skill: opts.skill.clone(),
        config: Some(AgentConfig {
            name: opts.name.clone(),
            model_id: model,
            base_prompt: opts.base_prompt.clone(),
            mcp_servers: (!opts.mcp_servers.is_empty()).then(|| opts.mcp_servers.clone()),
            ..AgentConfig::default()
        }),
        ..RunAgentRequest::default()
    };
    let grants = server
        .share
        .iter()
        .map(|s| parse_share_spec(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LocalRunError::Share)?;
    let reg: LocalRunRegistration = client
        .post_json(LOCAL_RUNS_PATH, &request)
        .await
        .map_err(LocalRunError::Register)?;
    tracing::info!(run_id = %reg.run_id, "tracked local run registered");
    let shares = share_run(&client, &reg.run_id, &grants).await;
    if let Some(hook) = &opts.on_registered {
        (hook.0)(&reg.run_id, &shares);
    }
    Ok((reg, shares))
}

/// Runs `opts` to its outcome, reporting every event to `sink` (and to the
/// server when tracked). `cancel` stops it (the outcome is then `Cancelled`).
pub async fn run_local(
    opts: LocalRun,
    sink: &dyn EventSink,
    cancel: CancellationToken,
) -> Result<LocalReport, LocalRunError> {
    let registry = ProviderRegistry::from_env()?;
    let model = opts
        .model
        .clone()
        .filter(|m| !m.trim().is_empty())
        .or_else(|| registry.default_model());
    let mut redactor = Redactor::from_env();

    let mut shares = Vec::new();
    let registration = match &opts.server {
        Some(server) => {
            let (reg, granted) = register(&opts, server, model.clone()).await?;
            shares = granted;
            redactor = redactor.with([reg.run_token.clone(), server.api_key.clone()]);
            Some((server.url.clone(), reg))
        }
        None => None,
    };

    let harness = opts
        .harness
        .as_deref()
        .filter(|h| !h.trim().is_empty() && h.trim() != "oz")
        .map(HarnessKind::parse)
        .transpose()
        .map_err(LocalRunError::Harness)?;
    if let Some(kind) = harness {
        let redactor = Arc::new(redactor);
        let program = opts.harness_program.as_deref();
        let (prompt, workdir) = (opts.prompt.as_str(), opts.workdir.as_path());
        let (outcome, run_id) = match registration {
            Some((url, reg)) => {
                let (session, _followups) = open_session(&url, &reg, &opts, &cancel).await?;
                let tee = TeeSink(vec![&session, sink]);
                let outcome =
                    run_harness(kind, program, prompt, workdir, &tee, redactor, &cancel).await;
                drop(tee);
                close_session(session).await;
                (outcome?, Some(reg.run_id))
            }
            None => (
                run_harness(kind, program, prompt, workdir, sink, redactor, &cancel).await?,
                None,
            ),
        };
        return Ok(LocalReport {
            outcome,
            run_id,
            model: kind.program().to_owned(),
            shares,
        });
    }

    // A local provider when one serves the model, else the server's gateway.
    let (provider, model_name, model) = resolve_provider(&registry, model, &registration)?;

    let mcp_options = McpOptions {
        startup_timeout: opts.mcp_startup_timeout,
        strict: opts.strict_mcp_startup,
        workdir: opts.workdir.clone(),
    };
    let prepared = prepare(
        &opts.workdir,
        &opts.prompt,
        opts.base_prompt.as_deref(),
        opts.skill.as_deref(),
        &opts.mcp_servers,
        &mcp_options,
    )
    .await?;
    let mut config = LoopConfig::new(model_name, &opts.workdir, prepared.base_prompt.as_deref());
    config.context_window = crate::agent::context_window_for(&model);
    if let Some(max) = opts.max_turns {
        config.max_turns = max;
    }
    let agent = Agent::new(provider, prepared.tools, config).with_redactor(Arc::new(redactor));

    let result = match registration {
        Some((url, reg)) => {
            let (session, mut followups) = open_session(&url, &reg, &opts, &cancel).await?;
            let tee = TeeSink(vec![&session, sink]);
            let outcome = agent
                .run(&prepared.prompt, &tee, &mut followups, &cancel)
                .await;
            drop(tee);
            close_session(session).await;
            outcome.map(|outcome| (outcome, Some(reg.run_id)))
        }
        None => {
            let (_tx, mut followups) = mpsc::channel::<Followup>(1);
            agent
                .run(&prepared.prompt, sink, &mut followups, &cancel)
                .await
                .map(|outcome| (outcome, None))
        }
    };
    prepared.mcp.shutdown().await;
    let (outcome, run_id) = result?;
    Ok(LocalReport {
        outcome,
        run_id,
        model,
        shares,
    })
}

/// Applies `--share` grants to a registered run. The run already exists and
/// the work should not be lost over a grant, so a refused one (an unknown
/// email, say) is reported as a warning and the run goes on.
async fn share_run(client: &Client, run_id: &str, grants: &[CreateShareRequest]) -> Vec<ShareItem> {
    let mut applied = Vec::with_capacity(grants.len());
    for grant in grants {
        match client.create_share(run_id, grant).await {
            Ok(item) => applied.push(item),
            Err(e) => tracing::warn!(
                %run_id,
                grantee = %grant.grantee,
                error = %e,
                "could not share the run; share it later with `hangar run share`"
            ),
        }
    }
    applied
}

/// Opens the tracked run's session stream; a `cancel` frame from the server
/// fires `cancel`.
async fn open_session(
    url: &str,
    reg: &LocalRunRegistration,
    opts: &LocalRun,
    cancel: &CancellationToken,
) -> Result<(SessionStream, mpsc::Receiver<Followup>), LocalRunError> {
    let client = Client::new(url, reg.run_token.clone()).map_err(LocalRunError::Register)?;
    let spool_dir = opts
        .spool_dir
        .clone()
        .unwrap_or_else(|| opts.workdir.join(".hangar"));
    Ok(SessionStream::start(
        SessionConfig {
            client,
            run_id: reg.run_id.clone(),
            execution_id: reg.execution_id.clone(),
            spool_path: spool_path(&spool_dir, &reg.execution_id),
        },
        cancel.clone(),
    )
    .await?)
}

async fn close_session(session: SessionStream) {
    let report = session.finish(FLUSH_TIMEOUT).await;
    if !report.is_complete() {
        tracing::warn!(
            last_seq = report.last_seq,
            acked_seq = report.acked_seq,
            "the server did not acknowledge every event"
        );
    }
}
