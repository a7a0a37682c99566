//! The model ↔ tools loop.

mod turn;

use crate::error::AgentError;
use crate::event::EventSink;
use crate::redact::{RedactingSink, Redactor};
use crate::tools::{
    ARTIFACT_TOOL, ReportArtifactTool, ToolContext, ToolOutput, ToolRegistry, parse_arguments,
};
use futures::StreamExt;
use hangar_llm::{LlmError, ModelProvider};
use hangar_protocol::RunState;
use hangar_protocol::llm::{ChatMessage, ChatRequest, Role, ToolSpec};
use hangar_protocol::session::{EventBody, Followup};
use hangar_telemetry::trace::{self, TraceParent};
use opentelemetry::KeyValue;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use turn::{Turn, TurnAccumulator};

/// Model calls allowed per run before it counts as failed.
pub const DEFAULT_MAX_TURNS: u32 = 100;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The model gave a final answer.
    Succeeded {
        /// The final answer.
        message: String,
    },
    /// The model failed, a tool failed fatally, or the turn limit was reached.
    Failed {
        /// Why.
        message: String,
    },
    /// The run was cancelled.
    Cancelled,
}

impl RunOutcome {
    /// The run state this outcome reports.
    pub fn state(&self) -> RunState {
        match self {
            RunOutcome::Succeeded { .. } => RunState::Succeeded,
            RunOutcome::Failed { .. } => RunState::Failed,
            RunOutcome::Cancelled => RunState::Cancelled,
        }
    }

    /// The outcome's message.
    pub fn message(&self) -> &str {
        match self {
            RunOutcome::Succeeded { message } | RunOutcome::Failed { message } => message,
            RunOutcome::Cancelled => "cancelled",
        }
    }

    /// Whether the run succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Succeeded { .. })
    }
}

/// What the loop needs besides a provider and tools.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Model name as the provider expects it (for the gateway: `provider/model`).
    pub model: String,
    /// System prompt (see [`system_prompt`]).
    pub system_prompt: String,
    /// Workspace the tools work in.
    pub workdir: PathBuf,
    /// Model calls allowed before the run fails.
    pub max_turns: u32,
    /// The model's context window in tokens; the conversation is compacted
    /// when it reaches [`COMPACT_AT_PERCENT`] of it.
    pub context_window: u64,
    /// Messages kept verbatim at the end of the conversation when compacting.
    pub keep_recent_messages: usize,
    /// Tool output longer than this is cut (head and tail kept) with a note.
    pub max_tool_output_bytes: usize,
    /// Attempts at a model call whose stream broke mid-answer.
    pub model_attempts: u32,
}

impl LoopConfig {
    /// A configuration with the default system prompt and turn limit.
    pub fn new(
        model: impl Into<String>,
        workdir: impl Into<PathBuf>,
        base_prompt: Option<&str>,
    ) -> Self {
        let workdir = workdir.into();
        let model = model.into();
        LoopConfig {
            context_window: context_window_for(&model),
            model,
            system_prompt: system_prompt(&workdir, base_prompt),
            workdir,
            max_turns: DEFAULT_MAX_TURNS,
            keep_recent_messages: DEFAULT_KEEP_RECENT_MESSAGES,
            max_tool_output_bytes: DEFAULT_MAX_TOOL_OUTPUT_BYTES,
            model_attempts: DEFAULT_MODEL_ATTEMPTS,
        }
    }
}

/// Percentage of the context window at which the conversation is compacted.
pub const COMPACT_AT_PERCENT: u64 = 80;
/// Default for [`LoopConfig::keep_recent_messages`].
pub const DEFAULT_KEEP_RECENT_MESSAGES: usize = 6;
/// Default for [`LoopConfig::max_tool_output_bytes`].
pub const DEFAULT_MAX_TOOL_OUTPUT_BYTES: usize = 64 * 1024;
/// Default for [`LoopConfig::model_attempts`].
pub const DEFAULT_MODEL_ATTEMPTS: u32 = 3;
/// First line of the message that replaces compacted turns.
pub const COMPACTION_PREFIX: &str =
    "[Summary of the earlier part of this run, written to save context]";

const SUMMARY_PROMPT: &str = "You compress the history of a coding agent's run so it can keep \
    working with less context. Write a concise but complete summary of the conversation you are \
    given: what was asked, what was done (files changed, commands run and their results), what \
    was learned, decisions made, and what remains to do. Keep exact file paths, names and \
    error messages. Do not call tools; answer with the summary only.";

/// The context window assumed for a model id (tokens): 200k for Claude,
/// 400k for GPT-5, 128k otherwise.
pub fn context_window_for(model: &str) -> u64 {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    if name.contains("claude") {
        200_000
    } else if name.starts_with("gpt-5") {
        400_000
    } else if name.starts_with("gpt-4.1") {
        1_000_000
    } else {
        128_000
    }
}

/// Rough token count of a conversation (4 bytes a token), for deciding when
/// to compact before the provider reports real usage.
pub fn estimate_tokens(messages: &[ChatMessage]) -> u64 {
    let bytes: usize = messages
        .iter()
        .map(|m| {
            m.content.as_ref().map_or(0, |c| c.text().len())
                + m.tool_calls.as_ref().map_or(0, |calls| {
                    calls
                        .iter()
                        .map(|c| c.function.name.len() + c.function.arguments.len() + 16)
                        .sum()
                })
                + 8
        })
        .sum();
    (bytes / 4) as u64
}

/// The default system prompt, followed by the run's `base_prompt` if any.
pub fn system_prompt(workdir: &Path, base_prompt: Option<&str>) -> String {
    let mut prompt = format!(
        "You are Hangar's coding agent, working autonomously in the workspace at {}.\n\
         Use the tools to inspect and change files and to run commands; work in small, \
         verifiable steps and check your work (build, tests) when you can. Nobody answers \
         questions while you work: make reasonable assumptions and state them.\n\
         When the task is done, reply without calling a tool, with a concise summary of what \
         you did and anything left open.",
        workdir.display()
    );
    if let Some(extra) = base_prompt.map(str::trim).filter(|p| !p.is_empty()) {
        prompt.push_str("\n\n");
        prompt.push_str(extra);
    }
    prompt
}

/// The agent loop: call the model, run the tools it asks for, repeat until it
/// answers without tool calls.
pub struct Agent {
    provider: Arc<dyn ModelProvider>,
    tools: ToolRegistry,
    config: LoopConfig,
    redactor: Arc<Redactor>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("tools", &self.tools)
            .field("config", &self.config)
            .field("redactor", &self.redactor)
            .finish()
    }
}

/// Why one model call produced no turn.
enum CallError {
    /// The provider refused or failed before streaming (it already retried).
    Start(LlmError),
    /// The stream broke after it had started.
    MidStream(LlmError),
}

impl CallError {
    fn into_inner(self) -> LlmError {
        match self {
            CallError::Start(e) | CallError::MidStream(e) => e,
        }
    }
}

/// Where the conversation's size stands.
#[derive(Debug, Default, Clone, Copy)]
struct ContextGauge {
    /// Tokens the provider last reported for the whole conversation.
    reported: u64,
    /// Messages the conversation had at that report.
    at_len: usize,
}

impl ContextGauge {
    fn tokens(&self, messages: &[ChatMessage]) -> u64 {
        if self.reported == 0 {
            return estimate_tokens(messages);
        }
        let since = messages.get(self.at_len..).unwrap_or_default();
        self.reported + estimate_tokens(since)
    }
}

impl Agent {
    /// An agent using `provider` and `tools`.
    pub fn new(provider: Arc<dyn ModelProvider>, tools: ToolRegistry, config: LoopConfig) -> Self {
        Agent {
            provider,
            tools,
            config,
            redactor: Arc::default(),
        }
    }

    /// Redacts these secrets from every event and tool output (C6).
    pub fn with_redactor(mut self, redactor: Arc<Redactor>) -> Self {
        self.redactor = redactor;
        self
    }

    /// The loop's configuration.
    pub fn config(&self) -> &LoopConfig {
        &self.config
    }

    /// Works on `prompt` until the model gives a final answer, the run fails or
    /// `cancel` fires. Every step is reported to `sink` (secrets redacted),
    /// ending with a `status` event carrying the outcome. Messages arriving on
    /// `followups` become user messages at the next turn boundary.
    ///
    /// `Err` only when the sink fails; everything else is an outcome.
    pub async fn run(
        &self,
        prompt: &str,
        sink: &dyn EventSink,
        followups: &mut mpsc::Receiver<Followup>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, AgentError> {
        self.continue_conversation(Vec::new(), prompt, sink, followups, cancel)
            .await
    }

    /// Like [`Agent::run`], after an earlier conversation: `history` (user,
    /// assistant and tool messages, without the system prompt) comes before
    /// `prompt`, which is the new user message (a follow-up on an ended run).
    pub async fn continue_conversation(
        &self,
        history: Vec<ChatMessage>,
        prompt: &str,
        sink: &dyn EventSink,
        followups: &mut mpsc::Receiver<Followup>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, AgentError> {
        let sink = RedactingSink::new(sink, self.redactor.clone());
        let outcome = self
            .converse(history, prompt, &sink, followups, cancel)
            .await?;
        tracing::info!(state = ?outcome.state(), "agent run finished");
        sink.emit(EventBody::Status {
            state: Some(outcome.state()),
            message: outcome.message().to_owned(),
            failure_reason: None,
        })
        .await?;
        Ok(outcome)
    }

    async fn converse(
        &self,
        history: Vec<ChatMessage>,
        prompt: &str,
        sink: &dyn EventSink,
        followups: &mut mpsc::Receiver<Followup>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, AgentError> {
        let mut messages = vec![ChatMessage::text(Role::System, &self.config.system_prompt)];
        messages.extend(history);
        messages.push(ChatMessage::text(Role::User, prompt));
        sink.emit(EventBody::UserMessage {
            text: prompt.to_owned(),
        })
        .await?;
        let specs = self.tools.specs();
        let mut gauge = ContextGauge::default();
        // The run's trace (TRACEPARENT from the worker): a span for the
        // agent, one per turn, and under each its model call and tool calls.
        let run_span = TraceParent::from_env().map(|parent| {
            trace::start(
                "agent.run",
                &parent,
                vec![KeyValue::new(
                    "gen_ai.request.model",
                    self.config.model.clone(),
                )],
            )
        });
        for turn_no in 1..=self.config.max_turns {
            let turn_span = run_span.as_ref().map(|s| {
                trace::start(
                    "agent.turn",
                    &s.context(),
                    vec![KeyValue::new("hangar.turn", i64::from(turn_no))],
                )
            });
            let turn_ctx = turn_span.as_ref().map(trace::Span::context);
            if turn_no > 1 {
                take_followups(followups, &mut messages, sink).await?;
            }
            if cancel.is_cancelled() {
                return Ok(RunOutcome::Cancelled);
            }
            let threshold = self
                .config
                .context_window
                .saturating_mul(COMPACT_AT_PERCENT)
                / 100;
            if turn_no > 1 && gauge.tokens(&messages) >= threshold {
                if !self.compact(&mut messages, sink, cancel).await? {
                    return Ok(RunOutcome::Cancelled);
                }
                gauge = ContextGauge::default();
            }
            tracing::debug!(
                turn = turn_no,
                messages = messages.len(),
                "calling the model"
            );
            let called = self
                .traced_model_call(&messages, &specs, turn_no, turn_ctx, cancel)
                .await;
            let turn = match called {
                Ok(Some(turn)) => turn,
                Ok(None) => return Ok(RunOutcome::Cancelled),
                Err(e) => {
                    let message = format!("model call failed: {e}");
                    tracing::warn!(turn = turn_no, error = %e, "model call failed");
                    sink.emit(EventBody::Error {
                        message: message.clone(),
                    })
                    .await?;
                    return Ok(RunOutcome::Failed { message });
                }
            };
            self.report_turn(&turn, sink).await?;
            messages.push(turn.assistant_message());
            if let Some(usage) = turn.usage {
                gauge = ContextGauge {
                    reported: usage.prompt_tokens + usage.completion_tokens,
                    at_len: messages.len(),
                };
            }

            if turn.calls.is_empty() {
                // Someone steered while the model was finishing: keep going.
                if take_followups(followups, &mut messages, sink).await? > 0 {
                    continue;
                }
                return Ok(RunOutcome::Succeeded { message: turn.text });
            }

            if let Some(failed) = self
                .run_tools(&turn, turn_ctx, &mut messages, sink, cancel)
                .await?
            {
                return Ok(failed);
            }
            if cancel.is_cancelled() {
                return Ok(RunOutcome::Cancelled);
            }
        }
        Ok(RunOutcome::Failed {
            message: format!(
                "no final answer after {} model calls",
                self.config.max_turns
            ),
        })
    }

    /// One model call of turn `turn_no`, under an `llm.call` span of the turn.
    /// `Ok(None)` when cancelled.
    async fn traced_model_call(
        &self,
        messages: &[ChatMessage],
        specs: &[ToolSpec],
        turn_no: u32,
        turn_ctx: Option<TraceParent>,
        cancel: &CancellationToken,
    ) -> Result<Option<Turn>, LlmError> {
        let mut span = turn_ctx.map(|c| {
            trace::start(
                "llm.call",
                &c,
                vec![KeyValue::new(
                    "gen_ai.request.model",
                    self.config.model.clone(),
                )],
            )
        });
        let called = self
            .call_model_retrying(messages, specs, turn_no, cancel)
            .await;
        if let Some(span) = &mut span {
            match &called {
                Ok(Some(turn)) => {
                    if let Some(u) = turn.usage {
                        span.set("gen_ai.usage.input_tokens", u.prompt_tokens as i64);
                        span.set("gen_ai.usage.output_tokens", u.completion_tokens as i64);
                    }
                    span.set("hangar.tool_calls", turn.calls.len() as i64);
                }
                Ok(None) => span.set("hangar.cancelled", true),
                Err(e) => span.fail(e.to_string()),
            }
        }
        called
    }

    /// Runs the tool calls of `turn` concurrently (each under a `tool.call`
    /// span), reports their results and adds them to `messages`.
    /// `Some(outcome)` when a tool failed in a way that ends the run.
    async fn run_tools(
        &self,
        turn: &Turn,
        turn_ctx: Option<TraceParent>,
        messages: &mut Vec<ChatMessage>,
        sink: &dyn EventSink,
        cancel: &CancellationToken,
    ) -> Result<Option<RunOutcome>, AgentError> {
        let contexts: Vec<ToolContext> = turn
            .calls
            .iter()
            .map(|call| ToolContext {
                workdir: self.config.workdir.clone(),
                cancel: cancel.clone(),
                call_id: call.id.clone(),
                redactor: self.redactor.clone(),
            })
            .collect();
        let outputs = futures::future::join_all(turn.calls.iter().zip(&contexts).map(
            |(call, ctx)| async move {
                let mut span = turn_ctx.map(|c| {
                    trace::start(
                        "tool.call",
                        &c,
                        vec![KeyValue::new("gen_ai.tool.name", call.name.clone())],
                    )
                });
                let out = self.tools.dispatch(&call.name, &call.arguments, ctx).await;
                if let Some(span) = &mut span {
                    match &out {
                        Ok(o) if o.is_error => span.fail("the tool reported an error"),
                        Ok(_) => {}
                        Err(e) => span.fail(e.to_string()),
                    }
                }
                out
            },
        ))
        .await;
        let mut fatal = None;
        for ((call, ctx), output) in turn.calls.iter().zip(&contexts).zip(outputs) {
            let output = output.unwrap_or_else(|e| {
                let output = ToolOutput::error(e.to_string());
                fatal.get_or_insert(e);
                output
            });
            let text = cap_tool_output(
                self.redactor.redact(&output.text).into_owned(),
                self.config.max_tool_output_bytes,
            );
            sink.emit(EventBody::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                output: text.clone(),
                is_error: output.is_error,
            })
            .await?;
            if call.name == ARTIFACT_TOOL
                && !output.is_error
                && let Ok(args) = parse_arguments(&call.arguments)
                && let Ok(event) = ReportArtifactTool::event(args, ctx)
            {
                sink.emit(event).await?;
            }
            messages.push(ChatMessage::tool_result(&call.id, text));
        }
        let Some(e) = fatal else {
            return Ok(None);
        };
        let message = e.to_string();
        sink.emit(EventBody::Error {
            message: message.clone(),
        })
        .await?;
        Ok(Some(RunOutcome::Failed { message }))
    }

    /// Replaces the older part of the conversation (after the system prompt
    /// and the task, before the recent turns) with a model-written summary.
    /// `false` when cancelled.
    async fn compact(
        &self,
        messages: &mut Vec<ChatMessage>,
        sink: &dyn EventSink,
        cancel: &CancellationToken,
    ) -> Result<bool, AgentError> {
        const FIXED: usize = 2; // system prompt + task
        let mut start = messages
            .len()
            .saturating_sub(self.config.keep_recent_messages.max(1));
        // Never separate tool results from the call that asked for them.
        while start > FIXED && messages[start].role == Role::Tool {
            start -= 1;
        }
        if start <= FIXED {
            tracing::debug!("context is over budget but nothing old enough to compact");
            return Ok(true);
        }
        let old = &messages[FIXED..start];
        let task = messages[1]
            .content
            .as_ref()
            .map(|c| c.text())
            .unwrap_or_default();
        let mut transcript = String::new();
        for m in old {
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool result",
            };
            if let Some(content) = &m.content {
                transcript.push_str(&format!("[{role}]\n{}\n\n", content.text()));
            }
            for call in m.tool_calls.iter().flatten() {
                transcript.push_str(&format!(
                    "[tool call] {}({})\n\n",
                    call.function.name, call.function.arguments
                ));
            }
        }
        let summary_request = vec![
            ChatMessage::text(Role::System, SUMMARY_PROMPT),
            ChatMessage::text(
                Role::User,
                format!("The task:\n{task}\n\nThe conversation so far:\n\n{transcript}"),
            ),
        ];
        let summary = match self
            .call_model_retrying(&summary_request, &[], 0, cancel)
            .await
        {
            Ok(Some(turn)) => {
                if let Some(usage) = turn.usage {
                    sink.emit(EventBody::Usage {
                        model: self.config.model.clone(),
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: usage.completion_tokens,
                    })
                    .await?;
                }
                turn.text
            }
            Ok(None) => return Ok(false),
            Err(e) => {
                tracing::warn!(error = %e, "summarising the conversation failed; dropping old turns");
                String::new()
            }
        };
        let summary = if summary.trim().is_empty() {
            "(The earlier turns were dropped to save context; no summary is available. Re-read \
             files you need.)"
                .to_owned()
        } else {
            summary
        };
        let replaced = start - FIXED;
        messages.splice(
            FIXED..start,
            [ChatMessage::text(
                Role::User,
                format!("{COMPACTION_PREFIX}\n{summary}"),
            )],
        );
        tracing::info!(
            replaced,
            remaining = messages.len(),
            "conversation compacted"
        );
        sink.emit(EventBody::Status {
            state: None,
            message: format!(
                "context compacted: {replaced} earlier messages replaced by a summary"
            ),
            failure_reason: None,
        })
        .await?;
        Ok(true)
    }

    /// [`Agent::call_model`], retried when the stream breaks mid-answer
    /// (the provider itself retries failures before the first chunk).
    async fn call_model_retrying(
        &self,
        messages: &[ChatMessage],
        specs: &[ToolSpec],
        turn_no: u32,
        cancel: &CancellationToken,
    ) -> Result<Option<Turn>, LlmError> {
        let mut attempt = 1;
        loop {
            match self.call_model(messages, specs, turn_no, cancel).await {
                Ok(turn) => return Ok(turn),
                Err(CallError::MidStream(e))
                    if e.is_retryable() && attempt < self.config.model_attempts.max(1) =>
                {
                    tracing::warn!(turn = turn_no, attempt, error = %e, "model stream broke; retrying the call");
                    let delay = std::time::Duration::from_millis(200 * u64::from(attempt));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return Ok(None),
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e.into_inner()),
            }
        }
    }

    /// One streamed model call; `None` when cancelled.
    async fn call_model(
        &self,
        messages: &[ChatMessage],
        specs: &[ToolSpec],
        turn_no: u32,
        cancel: &CancellationToken,
    ) -> Result<Option<Turn>, CallError> {
        let request = ChatRequest {
            model: self.config.model.clone(),
            messages: messages.to_vec(),
            tools: (!specs.is_empty()).then(|| specs.to_vec()),
            tool_choice: None,
            stream: Some(true),
            stream_options: Some(serde_json::json!({"include_usage": true})),
            temperature: None,
            max_tokens: None,
            max_completion_tokens: None,
            extra: Default::default(),
        };
        let mut stream = tokio::select! {
            stream = self.provider.chat_stream(request) => stream.map_err(CallError::Start)?,
            () = cancel.cancelled() => return Ok(None),
        };
        let mut acc = TurnAccumulator::default();
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(None),
                item = stream.next() => match item {
                    Some(chunk) => acc.push(chunk.map_err(CallError::MidStream)?),
                    None => break,
                },
            }
        }
        Ok(Some(acc.finish(turn_no)))
    }

    async fn report_turn(&self, turn: &Turn, sink: &dyn EventSink) -> Result<(), AgentError> {
        if let Some(usage) = turn.usage {
            sink.emit(EventBody::Usage {
                model: self.config.model.clone(),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            })
            .await?;
        }
        if !turn.reasoning.is_empty() {
            sink.emit(EventBody::Reasoning {
                text: turn.reasoning.clone(),
            })
            .await?;
        }
        if !turn.text.is_empty() {
            sink.emit(EventBody::AssistantMessage {
                text: turn.text.clone(),
            })
            .await?;
        }
        for call in &turn.calls {
            let arguments = parse_arguments(&call.arguments)
                .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
            sink.emit(EventBody::ToolCall {
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments,
            })
            .await?;
        }
        Ok(())
    }
}

/// Cuts `text` to about `max` bytes, keeping its beginning and end, with a note.
pub fn cap_tool_output(text: String, max: usize) -> String {
    if text.len() <= max || max == 0 {
        return text;
    }
    let half = max / 2;
    let mut head_end = half;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - half;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    format!(
        "{}\n[… {} bytes of tool output omitted to save context …]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

/// Moves queued follow-ups into the conversation; returns how many.
async fn take_followups(
    followups: &mut mpsc::Receiver<Followup>,
    messages: &mut Vec<ChatMessage>,
    sink: &dyn EventSink,
) -> Result<usize, AgentError> {
    let mut taken = 0;
    while let Ok(followup) = followups.try_recv() {
        tracing::info!(from = %followup.from, "follow-up joins the conversation");
        sink.emit(EventBody::UserMessage {
            text: followup.message.clone(),
        })
        .await?;
        messages.push(ChatMessage::text(Role::User, followup.message));
        taken += 1;
    }
    Ok(taken)
}

#[cfg(test)]
mod tests;
