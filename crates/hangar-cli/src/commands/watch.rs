//! `hangar run watch ID` and `hangar agent run-cloud --follow`: a run's
//! session, live, from `GET /api/v1/agent/runs/{id}/events` (SSE).
//!
//! Pretty output uses the same renderer as `hangar agent run` (streamed text,
//! tool calls with their status and collapsed output, a spinner while the
//! model thinks on a terminal), then the final state and usage. `ndjson`
//! prints every stream event as one line `{"id", "event", "data"}`; `json`
//! prints a summary at the end; `text` prints the final answer. A dropped
//! connection resumes with `Last-Event-ID`. The exit status is the run's:
//! 0 only for SUCCEEDED.

use crate::commands::agent::local::Printer;
use crate::output::OutputFormat;
use anyhow::{Result, bail};
use hangar_client::{Client, ClientError};
use hangar_protocol::session::EventBody;
use hangar_protocol::{RunState, TranscriptEvent};
use std::process::ExitCode;
use std::time::Duration;

/// Reconnect attempts in a row before giving up.
const MAX_RECONNECTS: u32 = 30;

/// What the stream showed, for the summary.
#[derive(Debug, Default)]
struct Seen {
    prompt_tokens: u64,
    completion_tokens: u64,
    last_answer: String,
    events: u64,
}

/// Watches `run_id` until its stream ends; the exit status follows the run.
pub async fn watch(client: &Client, run_id: &str, format: OutputFormat) -> Result<ExitCode> {
    watch_after(client, run_id, None, format).await
}

/// The id of the last event committed so far for a run (`None` when none),
/// so a watcher can start after what the user has already seen.
pub async fn last_event_id(client: &Client, run_id: &str) -> Result<Option<String>> {
    let mut stream = client.run_events(run_id, None, false).await?;
    let mut last = None;
    while let Some(event) = stream.next().await? {
        if event.event == "session" && event.id.is_some() {
            last = event.id;
        }
    }
    Ok(last)
}

/// Like [`watch`], starting after the event `after` (`None`: from the start).
pub async fn watch_after(
    client: &Client,
    run_id: &str,
    after: Option<String>,
    format: OutputFormat,
) -> Result<ExitCode> {
    let printer = Printer::new(format);
    let mut seen = Seen::default();
    let mut last_id: Option<String> = after;
    let mut failures = 0u32;
    let end = loop {
        let mut stream = match client.run_events(run_id, last_id.as_deref(), true).await {
            Ok(s) => s,
            Err(e) if retryable(&e) && failures < MAX_RECONNECTS => {
                failures += 1;
                tracing::debug!(error = %e, "cannot open the session stream; retrying");
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match read(&mut stream, &printer, format, &mut seen, &mut last_id).await {
            Ok(Some(end)) => break end,
            Ok(None) => {}
            Err(e) if failures < MAX_RECONNECTS => {
                tracing::debug!(error = %e, "session stream dropped; resuming");
            }
            Err(e) => return Err(e.into()),
        }
        failures += 1;
        if failures > MAX_RECONNECTS {
            bail!("the session stream of run {run_id} keeps dropping; try again later");
        }
        tokio::time::sleep(backoff(failures)).await;
    };
    printer.clear_spinner();
    let state = match end {
        End::State(state) => state,
        End::Revoked(detail) => {
            eprintln!("stream closed: {detail}");
            return Ok(ExitCode::from(1));
        }
    };
    summary(run_id, state, &seen, format);
    Ok(exit_code(state))
}

fn retryable(e: &ClientError) -> bool {
    e.status().is_none_or(|s| s >= 500)
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250 * u64::from(failures.min(8)))
}

/// How the stream ended.
enum End {
    /// `end`: the run's state.
    State(RunState),
    /// `revoked`.
    Revoked(String),
}

/// Reads one connection; `Ok(None)` when it closed without `end`.
async fn read(
    stream: &mut hangar_client::SseStream,
    printer: &Printer,
    format: OutputFormat,
    seen: &mut Seen,
    last_id: &mut Option<String>,
) -> Result<Option<End>, ClientError> {
    while let Some(event) = stream.next().await? {
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
        if format == OutputFormat::Ndjson {
            println!(
                "{}",
                serde_json::json!({"id": event.id, "event": event.event, "data": data})
            );
        }
        match event.event.as_str() {
            "session" => {
                if let Some(id) = event.id {
                    *last_id = Some(id);
                }
                if let Ok(e) = serde_json::from_value::<TranscriptEvent>(data) {
                    show(&e.event.body, printer, format, seen);
                }
            }
            "run_state" if format == OutputFormat::Pretty && data["state"] == "QUEUED" => {
                printer.clear_spinner();
                println!("· waiting for a worker…");
            }
            "end" => {
                let state = data["state"]
                    .as_str()
                    .and_then(RunState::parse)
                    .unwrap_or(RunState::Error);
                return Ok(Some(End::State(state)));
            }
            "revoked" => {
                let detail = data["detail"].as_str().unwrap_or("access revoked");
                return Ok(Some(End::Revoked(detail.to_owned())));
            }
            _ => {}
        }
    }
    Ok(None)
}

fn show(body: &EventBody, printer: &Printer, format: OutputFormat, seen: &mut Seen) {
    seen.events += 1;
    match body {
        EventBody::Usage {
            prompt_tokens,
            completion_tokens,
            ..
        } => {
            seen.prompt_tokens += prompt_tokens;
            seen.completion_tokens += completion_tokens;
        }
        EventBody::AssistantMessage { text } => seen.last_answer.clone_from(text),
        _ => {}
    }
    if format == OutputFormat::Pretty {
        printer.pretty(body);
    }
}

fn summary(run_id: &str, state: RunState, seen: &Seen, format: OutputFormat) {
    match format {
        OutputFormat::Pretty => println!(
            "Run {run_id}: {state} · {} prompt + {} completion tokens",
            seen.prompt_tokens, seen.completion_tokens
        ),
        OutputFormat::Text => println!("{}", seen.last_answer),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "run_id": run_id,
                "state": state,
                "success": state == RunState::Succeeded,
                "result": seen.last_answer,
                "usage": {"prompt_tokens": seen.prompt_tokens, "completion_tokens": seen.completion_tokens},
                "events": seen.events,
            }))
            .unwrap_or_default()
        ),
        OutputFormat::Ndjson => {}
    }
}

/// 0 only for SUCCEEDED; 130 for CANCELLED (like an interrupted command); 1 otherwise.
pub fn exit_code(state: RunState) -> ExitCode {
    match state {
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Cancelled => ExitCode::from(130),
        _ => ExitCode::from(1),
    }
}
