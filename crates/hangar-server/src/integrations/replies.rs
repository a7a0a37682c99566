//! Replies in the thread a run was started from: a status message posted
//! at once with the run's link and edited as the run moves on (queued,
//! working, done), then the result (the agent's last message and the pull
//! requests it opened) when the run ends. A follow-up that reopens the run
//! is reported the same way.
//!
//! The store drives it, so a restart or a crashed replica loses no reply:
//! [`run`] (one task per replica) looks for threads whose run's state is
//! not the one last reported, takes each with a lease (one replica posts),
//! posts, and records the state reported. A provider that fails keeps the
//! lease until it expires ([`REPLY_LEASE`]); the next pass tries again.
//! Each pass reads only the threads still open (their run not reported
//! ended; a partial index), and every [`ALL_EVERY`] all of them, for a run
//! reopened from elsewhere; a follow-up from the thread reopens its thread
//! at once.

use super::provider::{ProviderApi, ReplyTo, api_for, clip};
use crate::AppState;
use hangar_protocol::agent::ArtifactItem;
use hangar_protocol::session::EventBody;
use hangar_protocol::{RunId, RunState, Timestamp};
use hangar_store::{IntegrationThread, RunRecord, StoreError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a replica holds a thread while it posts (and a failed reply
/// waits before it is tried again).
pub const REPLY_LEASE: Duration = Duration::from_secs(30);
/// Threads looked at per pass.
const BATCH: i64 = 50;
/// Longest result posted, in bytes (Slack cuts messages at 40,000 characters;
/// GitHub comments at 65,536).
const MAX_RESULT_BYTES: usize = 3000;

fn wake() -> &'static Notify {
    static WAKE: std::sync::OnceLock<Notify> = std::sync::OnceLock::new();
    WAKE.get_or_init(Notify::new)
}

/// Asks this process's reply loop to look now (a run was just started or
/// followed up), rather than at its next poll.
pub fn nudge() {
    wake().notify_one();
}

/// The phase a status message shows; states of one phase are not reported twice.
fn phase(state: &str) -> &'static str {
    match RunState::parse(state) {
        Some(RunState::Queued | RunState::Pending | RunState::Claimed) => "queued",
        Some(RunState::InProgress) => "working",
        Some(RunState::Blocked) => "blocked",
        Some(RunState::Succeeded) => "succeeded",
        Some(RunState::Failed | RunState::Error) => "failed",
        Some(RunState::Cancelled) => "cancelled",
        None => "unknown",
    }
}

/// `: <why>` from the run's status message, or nothing.
fn why(run: &RunRecord) -> String {
    run.status_message
        .as_deref()
        .map(|m| format!(": {}", clip(m, 300)))
        .unwrap_or_default()
}

/// The status message for a run in `state`.
fn status_text(api: &dyn ProviderApi, run: &RunRecord, state: &str, url: &str) -> String {
    let link = api.link(url, &run.title);
    let why = why(run);
    match phase(state) {
        "queued" => format!("⏳ Queued: {link}"),
        "working" => format!("🛠️ Working on it: {link}"),
        "blocked" => format!("✋ Waiting for input{why}: {link}"),
        "succeeded" => format!("✅ Done: {link}"),
        "failed" => format!("❌ Failed{why}: {link}"),
        "cancelled" => format!("🚫 Cancelled: {link}"),
        _ => format!("{state}: {link}"),
    }
}

/// The result posted when a run ends: its last message and its pull requests.
async fn result_text(
    app: &AppState,
    api: &dyn ProviderApi,
    run: &RunRecord,
    url: &str,
) -> Result<String, StoreError> {
    let summary = app
        .store
        .run_events_of_kind(&run.id, "assistant_message")
        .await?
        .into_iter()
        .rev()
        .find_map(|(_, e)| match e.body {
            EventBody::AssistantMessage { text } if !text.trim().is_empty() => Some(text),
            _ => None,
        });
    let pulls: Vec<String> = app
        .store
        .run_events_of_kind(&run.id, "artifact")
        .await?
        .iter()
        .filter_map(|(exec, e)| crate::api::conversation::artifact_item(exec, e))
        .filter_map(|a| match a {
            ArtifactItem::PullRequest(pr) => Some(pr.data.url),
            _ => None,
        })
        .collect();
    let mut text = match phase(run.state.as_str()) {
        "succeeded" => String::from("✅ Finished."),
        "failed" => format!("❌ The run failed{}.", why(run)),
        _ => String::from("🚫 The run was cancelled."),
    };
    if let Some(summary) = summary {
        text.push_str("\n\n");
        text.push_str(&clip(summary.trim(), MAX_RESULT_BYTES));
    }
    for pr in &pulls {
        text.push_str(&format!("\n\nPull request: {pr}"));
    }
    text.push_str(&format!("\n\n{}", api.link(url, "Transcript and details")));
    Ok(text)
}

/// Reports one thread's run in `state`: edits (or posts) the status
/// message and, when the run ended, posts the result. Returns the status
/// message's id when it was posted now.
async fn report(
    app: &AppState,
    thread: &IntegrationThread,
    state: &str,
) -> Result<Option<String>, String> {
    let record = app
        .store
        .integration_by_id(&thread.integration_id)
        .await
        .map_err(|e| format!("integration: {e}"))?;
    let run = app
        .store
        .run(thread.team_id, &RunId(thread.run_id.clone()))
        .await
        .map_err(|e| format!("run: {e}"))?;
    let to: ReplyTo =
        serde_json::from_str(&thread.reply_to).map_err(|e| format!("thread address: {e}"))?;
    let api = api_for(app, &record, &to).await?;
    let url = format!("{}/runs/{}", app.public_url, run.id);
    let same_phase = thread.reported.as_deref().map(phase) == Some(phase(state));
    let mut posted = None;
    if !same_phase {
        let text = status_text(api.as_ref(), &run, state, &url);
        match &thread.status_ref {
            Some(id) => api.update(&to, id, &text).await?,
            None => posted = Some(api.post(&to, &text).await?),
        }
        let ended = RunState::parse(state).is_some_and(RunState::is_terminal);
        if ended {
            let result = result_text(app, api.as_ref(), &run, &url)
                .await
                .map_err(|e| format!("reading the run's result: {e}"))?;
            api.post(&to, &result).await?;
        }
    }
    Ok(posted)
}

/// One pass: report every thread with something new; the threads whose
/// run was reported ended only when `all`.
async fn pass(app: &AppState, all: bool) -> Result<(), StoreError> {
    let now = Timestamp::now().unix_millis();
    let lease = i64::try_from(REPLY_LEASE.as_millis()).unwrap_or(i64::MAX);
    for (thread, state) in app.store.due_integration_threads(now, all, BATCH).await? {
        if !app
            .store
            .take_integration_thread(&thread.run_id, thread.lease_until, now + lease)
            .await?
        {
            continue;
        }
        match report(app, &thread, &state).await {
            Ok(posted) => {
                app.store
                    .record_integration_reply(&thread.run_id, &state, posted.as_deref())
                    .await?;
            }
            Err(e) => {
                tracing::warn!(
                    integration_id = %thread.integration_id,
                    run_id = %thread.run_id,
                    error = %e,
                    "could not reply in the run's thread; retrying in {}s",
                    REPLY_LEASE.as_secs()
                );
            }
        }
    }
    Ok(())
}

/// How often a pass looks at every thread, not only the open ones: a run
/// reopened from outside its thread (the API, the dashboard) is reported
/// within this.
pub const ALL_EVERY: Duration = Duration::from_secs(60);

/// The reply loop of this replica, until `shutdown`.
pub async fn run(app: AppState, shutdown: CancellationToken) {
    let mut all_at = std::time::Instant::now();
    loop {
        let all = all_at.elapsed() >= ALL_EVERY;
        if all {
            all_at = std::time::Instant::now();
        }
        if let Err(e) = pass(&app, all).await {
            tracing::warn!(error = %e, "integration replies pass failed; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake().notified() => {}
            () = tokio::time::sleep(app.config.webhooks.poll_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_of_one_phase_are_reported_once() {
        assert_eq!(phase("QUEUED"), phase("CLAIMED"));
        assert_eq!(phase("PENDING"), "queued");
        assert_eq!(phase("INPROGRESS"), "working");
        assert_eq!(phase("ERROR"), phase("FAILED"));
        assert_ne!(phase("SUCCEEDED"), phase("INPROGRESS"));
    }
}
