//! A managed run: launched by a worker with a run token, reporting to the server.

use crate::agent::{Agent, LoopConfig, RunOutcome};
use crate::error::AgentError;
use crate::event::EventSink;
use crate::local::prepare;
use crate::mcp::{DEFAULT_MCP_STARTUP_TIMEOUT, McpOptions};
use crate::redact::{RedactingSink, Redactor};
use crate::session::{SessionConfig, SessionStream, spool_path};
use hangar_client::Client;
use hangar_llm::{ModelProvider, OpenAiConfig, OpenAiProvider};
use hangar_protocol::RunItem;
use hangar_protocol::RunState;
use hangar_protocol::llm::{ChatMessage, FunctionCall, Role, ToolCall};
use hangar_protocol::run::McpServerConfig;
use hangar_protocol::session::EventBody;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Environment variable overriding the spool directory (default `<workdir>/.hangar`).
pub const ENV_SPOOL_DIR: &str = "HANGAR_SPOOL_DIR";
/// The server's OpenAI-compatible LLM gateway, relative to the server URL.
pub const GATEWAY_PATH: &str = "api/v1/llm";
/// How long a finished run waits for the server to acknowledge its last events.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at fetching the run before giving up (transport errors and 5xx only).
const FETCH_ATTEMPTS: u32 = 5;
/// Delay after the first failed fetch; doubles per attempt.
const FETCH_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Everything a managed run needs; see [`run_managed`].
#[derive(Clone)]
pub struct ManagedRun {
    /// The control plane's base URL.
    pub server_url: String,
    /// The run to work on (`--task-id`).
    pub run_id: String,
    /// This execution of the run (env `HANGAR_EXECUTION_ID`).
    pub execution_id: String,
    /// Run-scoped bearer token (env `HANGAR_RUN_TOKEN`).
    pub run_token: String,
    /// Workspace the tools work in.
    pub workdir: PathBuf,
    /// Model to use instead of the run's `agent_config.model_id` (`provider/model`).
    pub model_override: Option<String>,
    /// Spool directory (env [`ENV_SPOOL_DIR`]); `None` means `<workdir>/.hangar`.
    pub spool_dir: Option<PathBuf>,
    /// Skill to start with instead of the run's (`--skill`).
    pub skill_override: Option<String>,
    /// MCP servers added to the run's (`--mcp`); same names replace.
    pub mcp_overrides: BTreeMap<String, McpServerConfig>,
    /// Prepares the workspace before anything reads it (skills, MCP, the
    /// first turn): a stock `oz-agent-worker` passes `--environment` and
    /// leaves cloning and setup commands to the agent.
    pub prepare: Option<Prepare>,
    /// Flags accepted for compatibility that this agent cannot honour; each
    /// is recorded on the run as one status line at the start.
    pub notes: Vec<String>,
    /// Whether this execution may continue an earlier conversation of the
    /// run (a follow-up reopened it): only then is the transcript fetched at
    /// the start. From [`hangar_protocol::ENV_RUN_CONTINUES`] (`0`: a fresh
    /// run); true when unset.
    pub continues: bool,
}

/// Prepares a managed run's workspace; see [`ManagedRun::prepare`]. Gets
/// the run's cancellation.
pub type Prepare = Arc<
    dyn Fn(CancellationToken) -> futures::future::BoxFuture<'static, Result<(), PrepareError>>
        + Send
        + Sync,
>;

/// Why preparing the workspace failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareError {
    /// The `failure_reason` label (`workspace_setup`, `setup_command`, or
    /// `task_cancelled` when the run was cancelled meanwhile).
    pub failure_reason: String,
    /// What failed, secrets masked.
    pub message: String,
}

impl std::fmt::Debug for ManagedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedRun")
            .field("server_url", &self.server_url)
            .field("run_id", &self.run_id)
            .field("execution_id", &self.execution_id)
            .field("run_token", &"***")
            .field("workdir", &self.workdir)
            .field("model_override", &self.model_override)
            .field("spool_dir", &self.spool_dir)
            .field("skill_override", &self.skill_override)
            .field(
                "mcp_overrides",
                &self.mcp_overrides.keys().collect::<Vec<_>>(),
            )
            .field("prepare", &self.prepare.is_some())
            .field("notes", &self.notes)
            .field("continues", &self.continues)
            .finish()
    }
}

impl ManagedRun {
    /// Fills the token, execution id and spool directory from the environment
    /// the worker sets (`HANGAR_RUN_TOKEN`, `HANGAR_EXECUTION_ID`,
    /// `HANGAR_SPOOL_DIR`). `None` names the first missing variable.
    pub fn from_env(
        server_url: impl Into<String>,
        run_id: impl Into<String>,
        workdir: impl Into<PathBuf>,
    ) -> Result<Self, &'static str> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(ManagedRun {
            server_url: server_url.into(),
            run_id: run_id.into(),
            execution_id: var(hangar_protocol::ENV_EXECUTION_ID)
                .ok_or(hangar_protocol::ENV_EXECUTION_ID)?,
            run_token: var(hangar_protocol::ENV_RUN_TOKEN).ok_or(hangar_protocol::ENV_RUN_TOKEN)?,
            workdir: workdir.into(),
            model_override: None,
            spool_dir: var(ENV_SPOOL_DIR).map(PathBuf::from),
            skill_override: None,
            mcp_overrides: BTreeMap::new(),
            prepare: None,
            notes: Vec::new(),
            continues: var(hangar_protocol::ENV_RUN_CONTINUES).is_none_or(|v| v != "0"),
        })
    }
}

/// Carries a managed run to its outcome: fetches the run, opens the session
/// stream, runs the [`Agent`] with the built-in tools against the server's LLM
/// gateway (`{server_url}/api/v1/llm`, the run token as API key, the run's
/// `provider/model` id as model), reports the outcome as the final `status`
/// event and waits up to [`FLUSH_TIMEOUT`] for the server to acknowledge it.
///
/// `cancel` (SIGTERM in the CLI; the server's `cancel` frame fires it too)
/// stops the model call and the running tool; the outcome is then
/// [`RunOutcome::Cancelled`].
pub async fn run_managed(
    opts: ManagedRun,
    cancel: CancellationToken,
) -> Result<RunOutcome, AgentError> {
    let client =
        Client::new(&opts.server_url, opts.run_token.clone()).map_err(AgentError::Client)?;
    let run = fetch_run(&client, &opts.run_id).await?;
    let config = run.agent_config.unwrap_or_default();
    let model = opts
        .model_override
        .clone()
        .or(config.model_id.clone())
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| AgentError::NoModel(opts.run_id.clone()))?;
    let provider = gateway_provider(&client)?;
    let continuation = fetch_continuation(&client, &opts).await?;
    let spool_dir = opts
        .spool_dir
        .clone()
        .unwrap_or_else(|| opts.workdir.join(".hangar"));
    tracing::info!(run_id = %opts.run_id, execution_id = %opts.execution_id, %model, "managed run starting");

    let (session, mut followups) = SessionStream::start(
        SessionConfig {
            client,
            run_id: opts.run_id.clone(),
            execution_id: opts.execution_id.clone(),
            spool_path: spool_path(&spool_dir, &opts.execution_id),
        },
        cancel.clone(),
    )
    .await?;
    let redactor = Arc::new(Redactor::from_env().with([opts.run_token.clone()]));
    if !opts.notes.is_empty() {
        let sink = RedactingSink::new(&session, redactor.clone());
        sink.emit(EventBody::Status {
            state: None,
            message: opts.notes.join("; "),
            failure_reason: None,
        })
        .await?;
    }
    if let Some(prepare_workspace) = &opts.prepare
        && let Err(e) = prepare_workspace(cancel.clone()).await
    {
        let outcome = prepare_failed(&session, redactor, e).await;
        session.finish(FLUSH_TIMEOUT).await;
        return outcome;
    }
    let prepared = prepare_agent(&opts, &run.prompt, &config).await;
    let outcome = match (third_party_harness(&config), prepared) {
        (Some(Ok(kind)), Ok(prepared)) => {
            prepared.mcp.shutdown().await;
            crate::harness::run_harness(
                kind,
                None,
                &prepared.prompt,
                &opts.workdir,
                &session,
                redactor,
                &cancel,
            )
            .await
        }
        (Some(Err(reason)), _) => {
            let message = format!("cannot start the run: {reason}");
            report_start_failure(&session, redactor, message, false).await
        }
        (None, Ok(prepared)) => {
            let agent = Agent::new(
                provider,
                prepared.tools,
                LoopConfig::new(model, &opts.workdir, prepared.base_prompt.as_deref()),
            )
            .with_redactor(redactor);
            let outcome = converse(
                &agent,
                &prepared.prompt,
                continuation,
                &session,
                &mut followups,
                &cancel,
            )
            .await;
            prepared.mcp.shutdown().await;
            outcome
        }
        (_, Err(e)) => {
            tracing::warn!(error = %e, "run setup failed");
            let message = format!("cannot start the run: {e}");
            report_start_failure(&session, redactor, message, true).await
        }
    };
    let report = session.finish(FLUSH_TIMEOUT).await;
    tracing::info!(
        last_seq = report.last_seq,
        acked_seq = report.acked_seq,
        "session stream closed"
    );
    outcome
}

/// The third-party harness the run asks for (`None` for Hangar's own agent,
/// which `oz` also names); `Err` names a harness that does not exist.
fn third_party_harness(
    config: &hangar_protocol::AgentConfig,
) -> Option<Result<crate::harness::HarnessKind, String>> {
    config
        .harness
        .as_ref()
        .and_then(|h| h.kind.as_deref())
        .filter(|k| !k.trim().is_empty() && k.trim() != "oz")
        .map(crate::harness::HarnessKind::parse)
}

/// Prepares the agent's tools and prompt: the run's MCP servers (plus the
/// command line's), its skill (or the override) and its base prompt.
async fn prepare_agent(
    opts: &ManagedRun,
    prompt: &str,
    config: &hangar_protocol::AgentConfig,
) -> Result<crate::local::Prepared, crate::local::LocalRunError> {
    let mcp_options = McpOptions {
        startup_timeout: DEFAULT_MCP_STARTUP_TIMEOUT,
        strict: false,
        workdir: opts.workdir.clone(),
    };
    let mut mcp_servers = config.mcp_servers.clone().unwrap_or_default();
    mcp_servers.extend(opts.mcp_overrides.clone());
    prepare(
        &opts.workdir,
        prompt,
        config.base_prompt.as_deref(),
        opts.skill_override
            .as_deref()
            .or(config.skill_spec.as_deref()),
        &mcp_servers,
        &mcp_options,
    )
    .await
}

/// Runs the agent on the task, or on the follow-up that continues the
/// conversation of earlier executions.
async fn converse(
    agent: &Agent,
    prompt: &str,
    continuation: Option<Continuation>,
    session: &SessionStream,
    followups: &mut tokio::sync::mpsc::Receiver<hangar_protocol::session::Followup>,
    cancel: &CancellationToken,
) -> Result<RunOutcome, AgentError> {
    match continuation {
        Some(Continuation { history, message }) => {
            tracing::info!(
                messages = history.len(),
                "continuing the conversation of earlier executions with a follow-up"
            );
            agent
                .continue_conversation(history, &message, session, followups, cancel)
                .await
        }
        None => agent.run(prompt, session, followups, cancel).await,
    }
}

/// Reports that the run could not start (its MCP servers, skill or harness):
/// an `error` event when `error_event`, then the failed status.
async fn report_start_failure(
    session: &SessionStream,
    redactor: Arc<Redactor>,
    message: String,
    error_event: bool,
) -> Result<RunOutcome, AgentError> {
    let sink = RedactingSink::new(session, redactor);
    if error_event {
        sink.emit(EventBody::Error {
            message: message.clone(),
        })
        .await?;
    }
    sink.emit(EventBody::Status {
        state: Some(RunState::Failed),
        message: message.clone(),
        failure_reason: None,
    })
    .await?;
    Ok(RunOutcome::Failed { message })
}

/// Reports a failed workspace preparation as the run's outcome.
async fn prepare_failed(
    session: &SessionStream,
    redactor: Arc<Redactor>,
    e: PrepareError,
) -> Result<RunOutcome, AgentError> {
    tracing::warn!(failure_reason = %e.failure_reason, "{}", e.message);
    let sink = RedactingSink::new(session, redactor);
    if e.failure_reason == "task_cancelled" {
        sink.emit(EventBody::Status {
            state: Some(RunState::Cancelled),
            message: e.message,
            failure_reason: None,
        })
        .await?;
        return Ok(RunOutcome::Cancelled);
    }
    sink.emit(EventBody::Error {
        message: e.message.clone(),
    })
    .await?;
    sink.emit(EventBody::Status {
        state: Some(RunState::Failed),
        message: e.message.clone(),
        failure_reason: Some(e.failure_reason),
    })
    .await?;
    Ok(RunOutcome::Failed { message: e.message })
}

/// The server's LLM gateway as a provider, authenticated like `client`.
pub fn gateway_provider(client: &Client) -> Result<Arc<dyn ModelProvider>, AgentError> {
    let url = client.url(GATEWAY_PATH).map_err(AgentError::Client)?;
    let config = OpenAiConfig::new(url.as_str().trim_end_matches('/'))
        .with_api_key(client.token())
        .with_retry(hangar_llm::RetryPolicy::through_gateway());
    let provider = OpenAiProvider::new(config).map_err(AgentError::Provider)?;
    Ok(Arc::new(provider))
}

/// An ended run reopened by a follow-up: what its new execution continues.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    /// The earlier executions' conversation (no system prompt).
    pub history: Vec<ChatMessage>,
    /// The follow-up: the new user message.
    pub message: String,
}

/// Loads the run's transcript (with the run token) unless the assignment
/// said the run is fresh; `Some` when the run was
/// reopened by a follow-up after earlier executions talked to the model.
async fn fetch_continuation(
    client: &Client,
    opts: &ManagedRun,
) -> Result<Option<Continuation>, AgentError> {
    if !opts.continues {
        // A fresh run (the assignment said so): nothing to continue.
        return Ok(None);
    }
    let (run_id, execution_id) = (opts.run_id.as_str(), opts.execution_id.as_str());
    let transcript = client
        .transcript(run_id)
        .await
        .map_err(|source| AgentError::FetchRun {
            run_id: run_id.to_owned(),
            source,
        })?;
    let Some(message) = transcript.followup else {
        return Ok(None);
    };
    let earlier: Vec<EventBody> = transcript
        .events
        .into_iter()
        .filter(|e| e.execution_id != execution_id)
        .map(|e| e.event.body)
        .collect();
    let history = conversation_from_events(&earlier);
    if history.is_empty() {
        return Ok(None);
    }
    Ok(Some(Continuation { history, message }))
}

/// Rebuilds the chat messages of a stored conversation: user and assistant
/// text, tool calls with their results. A call left without a result (the
/// execution ended mid-tool) gets one saying so, as providers require.
pub fn conversation_from_events(events: &[EventBody]) -> Vec<ChatMessage> {
    let mut messages: Vec<ChatMessage> = Vec::new();
    let mut open_calls: Vec<String> = Vec::new();
    let close_calls = |messages: &mut Vec<ChatMessage>, open: &mut Vec<String>| {
        for id in open.drain(..) {
            messages.push(ChatMessage::tool_result(
                id,
                "(no result: the execution ended before the tool finished)",
            ));
        }
    };
    for body in events {
        match body {
            EventBody::UserMessage { text } => {
                close_calls(&mut messages, &mut open_calls);
                messages.push(ChatMessage::text(Role::User, text));
            }
            EventBody::AssistantMessage { text } => {
                close_calls(&mut messages, &mut open_calls);
                messages.push(ChatMessage::text(Role::Assistant, text));
            }
            EventBody::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                // Calls belong to the assistant message of their turn: the one
                // just written, unless tool results already followed it.
                let joins_last = messages.last().is_some_and(|m| m.role == Role::Assistant);
                if !joins_last {
                    close_calls(&mut messages, &mut open_calls);
                    let mut m = ChatMessage::text(Role::Assistant, "");
                    m.content = None;
                    messages.push(m);
                }
                let arguments = match arguments {
                    serde_json::Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                if let Some(last) = messages.last_mut() {
                    last.tool_calls.get_or_insert_with(Vec::new).push(ToolCall {
                        id: call_id.clone(),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: name.clone(),
                            arguments,
                        },
                    });
                }
                open_calls.push(call_id.clone());
            }
            EventBody::ToolResult {
                call_id, output, ..
            } => {
                if let Some(at) = open_calls.iter().position(|c| c == call_id) {
                    open_calls.remove(at);
                    messages.push(ChatMessage::tool_result(call_id, output));
                }
            }
            EventBody::Reasoning { .. }
            | EventBody::Status { .. }
            | EventBody::Artifact { .. }
            | EventBody::Usage { .. }
            | EventBody::Error { .. } => {}
        }
    }
    close_calls(&mut messages, &mut open_calls);
    messages
}

/// `GET /api/v1/agent/runs/{id}`, retrying transport errors and 5xx.
async fn fetch_run(client: &Client, run_id: &str) -> Result<RunItem, AgentError> {
    let mut delay = FETCH_RETRY_DELAY;
    let mut attempt = 1;
    loop {
        match client.get_run(run_id).await {
            Ok(run) => return Ok(run),
            Err(e) if attempt < FETCH_ATTEMPTS && e.status().is_none_or(|s| s >= 500) => {
                tracing::warn!(error = %e, attempt, "cannot fetch the run; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(source) => {
                return Err(AgentError::FetchRun {
                    run_id: run_id.to_owned(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_events_become_the_conversation_with_every_call_answered() {
        let events = vec![
            EventBody::UserMessage {
                text: "fix it".into(),
            },
            EventBody::Usage {
                model: "m".into(),
                prompt_tokens: 1,
                completion_tokens: 1,
            },
            EventBody::AssistantMessage {
                text: "looking".into(),
            },
            EventBody::ToolCall {
                call_id: "c1".into(),
                name: "shell".into(),
                arguments: serde_json::json!({"command": "ls"}),
            },
            EventBody::ToolCall {
                call_id: "c2".into(),
                name: "read_file".into(),
                arguments: serde_json::json!({"path": "a"}),
            },
            EventBody::ToolResult {
                call_id: "c1".into(),
                name: "shell".into(),
                output: "a b".into(),
                is_error: false,
            },
            EventBody::AssistantMessage {
                text: "done".into(),
            },
            EventBody::Status {
                state: Some(RunState::Succeeded),
                message: "done".into(),
                failure_reason: None,
            },
        ];
        let m = conversation_from_events(&events);
        let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            vec![
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Tool,
                Role::Assistant
            ]
        );
        let calls = m[1].tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].function.arguments, r#"{"command":"ls"}"#);
        assert_eq!(m[2].tool_call_id.as_deref(), Some("c1"));
        // c2 never got a result: one is made up so the provider accepts the history.
        assert_eq!(m[3].tool_call_id.as_deref(), Some("c2"));
    }
}
