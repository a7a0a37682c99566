//! Metering that cannot be skipped: every gateway call is recorded on its
//! run (run tokens), or on its caller (API keys and dashboard sessions),
//! however the response ends: completed, failed, or dropped by a client
//! that closed the stream early.
//!
//! A [`Meter`] watches the chunks of one response. When the response ends
//! normally the handler awaits [`Meter::finish`]; when it is dropped before
//! that (the client went away, or the provider stream broke), `Drop` records
//! what was seen on a task of [`super::GatewayBudgets::tasks`], which the
//! server waits for at shutdown.
//!
//! **The estimate.** Providers report usage in a last chunk. When that chunk
//! never came (the stream was cut or dropped first), usage is estimated at
//! about four characters per token: prompt tokens from the size of the
//! request body (`⌈bytes / 4⌉`, which counts the JSON framing too, so it
//! errs high), completion tokens from the characters streamed so far
//! (content, reasoning, tool names and arguments: `⌈chars / 4⌉`).

use crate::AppState;
use hangar_protocol::llm::{ChatChunk, Usage};
use hangar_protocol::{RunId, RunState, Timestamp};
use hangar_store::{Outcome, Transition, UsageSubject};
use std::sync::{Arc, Mutex};

/// Who pays for a gateway call.
#[derive(Debug, Clone, PartialEq)]
pub enum Payer {
    /// The run whose token made the call.
    Run {
        /// The run's team.
        team_id: i64,
        /// The run.
        run_id: RunId,
    },
    /// A caller without a run: an API key or a dashboard user.
    Caller {
        /// The caller's team.
        team_id: i64,
        /// The key or user.
        subject: UsageSubject,
    },
}

impl Payer {
    /// The name of this payer's rate bucket.
    pub fn bucket(&self) -> String {
        match self {
            Payer::Run { run_id, .. } => format!("run:{run_id}"),
            Payer::Caller { subject, .. } => subject.stored(),
        }
    }
}

/// `⌈chars / 4⌉` tokens.
pub fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
}

/// What one response showed so far.
#[derive(Debug, Default)]
struct Seen {
    usage: Option<Usage>,
    completion_chars: usize,
}

impl Seen {
    fn observe(&mut self, chunk: &ChatChunk) {
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        for choice in &chunk.choices {
            let delta = &choice.delta;
            let text = |s: &Option<String>| s.as_deref().map_or(0, |s| s.chars().count());
            self.completion_chars += text(&delta.content) + text(&delta.reasoning_content);
            for call in delta.tool_calls.iter().flatten() {
                if let Some(f) = &call.function {
                    self.completion_chars += text(&f.name) + text(&f.arguments);
                }
            }
        }
    }
}

/// Meters one gateway response; see the module docs.
pub struct Meter {
    app: AppState,
    payer: Payer,
    /// `provider/model`, for the price.
    model: String,
    prompt_estimate: u64,
    seen: Arc<Mutex<Seen>>,
    done: bool,
}

impl Meter {
    /// A meter for a call of `payer` to `model` whose request body had
    /// `request_bytes` bytes.
    pub fn new(app: AppState, payer: Payer, model: String, request_bytes: usize) -> Self {
        Meter {
            app,
            payer,
            model,
            prompt_estimate: estimate_tokens(request_bytes),
            seen: Arc::default(),
            done: false,
        }
    }

    /// Takes note of a chunk on its way to the client.
    pub fn observe(&self, chunk: &ChatChunk) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(chunk);
    }

    /// A handle that observes chunks from elsewhere (a stream adapter)
    /// into this meter.
    pub fn observer(&self) -> impl Fn(&ChatChunk) + Send + Sync + 'static {
        let seen = self.seen.clone();
        move |chunk| {
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(chunk)
        }
    }

    /// The provider's usage, or the estimate when it sent none.
    fn usage(&self) -> Usage {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.usage.unwrap_or_else(|| {
            let completion = estimate_tokens(seen.completion_chars);
            Usage {
                prompt_tokens: self.prompt_estimate,
                completion_tokens: completion,
                total_tokens: self.prompt_estimate + completion,
            }
        })
    }

    /// Records nothing: the provider answered with an error before any
    /// chunk, so it used (and bills) no tokens.
    pub fn discard(mut self) {
        self.done = true;
    }

    /// Records the usage now (the response ended); once.
    pub async fn finish(mut self) {
        self.done = true;
        let usage = self.usage();
        record(&self.app, &self.payer, &self.model, usage).await;
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let usage = self.usage();
        let (app, payer, model) = (self.app.clone(), self.payer.clone(), self.model.clone());
        tracing::debug!(payer = ?payer, prompt_tokens = usage.prompt_tokens, completion_tokens = usage.completion_tokens, "gateway response dropped before its end; metering what was seen");
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let tasks = self.app.llm.budgets.tasks.clone();
                tasks.spawn_on(
                    async move { record(&app, &payer, &model, usage).await },
                    &handle,
                );
            }
            // Responses are dropped on the server's runtime; nothing else drops them.
            Err(_) => {
                tracing::warn!(payer = ?payer, "no runtime to meter a dropped gateway response")
            }
        }
    }
}

/// Stores `usage` of a call to `model` on its payer, then ends a run that
/// went over its budget.
pub async fn record(app: &AppState, payer: &Payer, model: &str, usage: Usage) {
    // Cost from the provider's `prices:` or the built-in list prices; 0 when unpriced.
    let cost = app.llm.providers.cost(model, &usage).unwrap_or(0.0);
    let (prompt, completion) = (usage.prompt_tokens, usage.completion_tokens);
    crate::metrics::get().llm_call(model, prompt, completion, cost);
    match payer {
        Payer::Run { team_id, run_id } => {
            if let Err(e) = app.store.add_usage(run_id, prompt, completion, cost).await {
                tracing::warn!(error = %e, run_id = %run_id, "could not record token usage");
                return;
            }
            match app.store.run_any_team(run_id).await {
                Ok(run) => {
                    enforce(app, *team_id, &run).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, run_id = %run_id, "cannot read the run to check its budget")
                }
            }
        }
        Payer::Caller { team_id, subject } => {
            let at = Timestamp::now().unix_millis();
            if let Err(e) = app
                .store
                .add_caller_usage(*team_id, subject, prompt, completion, cost, at)
                .await
            {
                tracing::warn!(error = %e, subject = %subject.stored(), "could not record token usage");
            }
        }
    }
}

/// When `run` used its budget: ends it (if it still runs) and says why.
pub async fn enforce(
    app: &AppState,
    team_id: i64,
    run: &hangar_store::RunRecord,
) -> Option<String> {
    let limits = app.llm.budgets.limits(app.store.as_ref(), team_id).await;
    let why = limits.exceeded(
        run.prompt_tokens.saturating_add(run.completion_tokens),
        run.inference_cost,
    )?;
    if !run.state.is_terminal() {
        stop_run(app, team_id, run, &why).await;
    }
    Some(why)
}

/// The error code of runs ended over their budget.
const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// Whether the gateway ended `run` over its budget (its execution, if still
/// live, must stop).
pub fn ended_over_budget(run: &hangar_store::RunRecord) -> bool {
    run.state == RunState::Failed && run.error_code.as_deref() == Some(BUDGET_EXCEEDED)
}

/// Ends a run that used its budget `FAILED` (`budget_exceeded`, a user
/// error in the Oz error catalogue) with `why` as its status message, and
/// stops its execution the way a cancel does: the worker gets a task
/// cancellation and the agent a `cancel`, through whichever replica holds
/// their connections. The execution ends when the
/// worker reports; its report cannot change the run's state any more.
async fn stop_run(app: &AppState, team_id: i64, run: &hangar_store::RunRecord, why: &str) {
    let Some(exec_id) = &run.current_execution_id else {
        return;
    };
    let outcome = Outcome {
        state: RunState::Failed,
        message: why.to_owned(),
        error_code: Some(BUDGET_EXCEEDED.to_owned()),
    };
    match app.store.report_outcome(&run.id, exec_id, &outcome).await {
        Ok(Transition::Applied) => {
            tracing::info!(run_id = %run.id, reason = why, "run over its gateway budget: ended FAILED");
            crate::metrics::run_ended(app.store.as_ref(), &run.id).await;
        }
        Ok(_) => return, // ended meanwhile, or a newer execution runs
        Err(e) => {
            tracing::warn!(error = %e, run_id = %run.id, "cannot end the run that went over its budget");
            return;
        }
    }
    // The worker or agent may be connected to another replica.
    if let Some(notifier) = &app.runtime.notifier
        && let Err(e) = notifier.notify_cancel(&run.id, exec_id).await
    {
        tracing::warn!(error = %e, run_id = %run.id, "cannot signal the other replicas to stop the run");
    }
    match app.store.execution(exec_id).await {
        Ok(exec) if exec.ended_at.is_none() => {
            app.dispatcher.send_cancellation(team_id, &exec);
            app.sessions.hub.cancel(&run.id);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, run_id = %run.id, "cannot read the execution to stop it")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_protocol::llm::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};

    #[test]
    fn seen_counts_streamed_characters_and_keeps_the_last_usage() {
        let mut seen = Seen::default();
        let chunk = |delta: Delta, usage: Option<Usage>| ChatChunk {
            id: String::new(),
            object: String::new(),
            created: 0,
            model: String::new(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: None,
            }],
            usage,
        };
        seen.observe(&chunk(
            Delta {
                content: Some("héllo".into()),
                reasoning_content: Some("abc".into()),
                ..Delta::default()
            },
            None,
        ));
        seen.observe(&chunk(
            Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: 0,
                    id: None,
                    kind: None,
                    function: Some(FunctionCallDelta {
                        name: Some("sh".into()),
                        arguments: Some("{}".into()),
                    }),
                }]),
                ..Delta::default()
            },
            None,
        ));
        assert_eq!(seen.completion_chars, 12);
        assert_eq!(seen.usage, None);
        assert_eq!(estimate_tokens(12), 3);
        assert_eq!(estimate_tokens(13), 4);
        assert_eq!(estimate_tokens(0), 0);
        let usage = Usage {
            prompt_tokens: 5,
            completion_tokens: 6,
            total_tokens: 11,
        };
        seen.observe(&chunk(Delta::default(), Some(usage)));
        assert_eq!(seen.usage, Some(usage));
    }
}
