//! Follow-ups: a message for a run's agent. A running run's agent gets it
//! at its next turn boundary (stored first, delivered exactly once by the
//! replica holding its session); an ended cloud run is reopened and
//! dispatched again, preferring the worker of its last execution.

use super::{MAX_PROMPT_BYTES, Runs};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::sessions::sharing::{Access, require_access};
use hangar_protocol::{RunExecutionLocation, RunState, Timestamp};
use hangar_store::RunRecord;

/// How long a follow-up on a just-ended run waits for its last execution to
/// wind down before answering 409.
const REOPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Runs<'_> {
    /// Sends a follow-up as `principal` (edit access required). A running run's
    /// agent gets it at its next turn; an ended run is reopened (`QUEUED`, the
    /// message recorded) and dispatched again, preferring the worker of its last
    /// execution, whose agent continues the conversation with the message.
    pub async fn followup(
        &self,
        principal: &Principal,
        run: &RunRecord,
        message: &str,
    ) -> ApiResult<serde_json::Value> {
        let app = self.app;
        let (team_id, user_id) = principal.require_api_key()?;
        let message = message.trim();
        if message.is_empty() {
            return Err(ApiError::BadRequest("`message` must not be empty".into()));
        }
        if message.len() > MAX_PROMPT_BYTES {
            return Err(ApiError::BadRequest(format!(
                "`message` is longer than {MAX_PROMPT_BYTES} bytes"
            )));
        }
        require_access(app, principal, run, Access::Edit).await?;
        let from = user_id
            .map(|u| format!("user:{u}"))
            .unwrap_or_else(|| format!("team:{team_id}"));
        let run_id = run.id.as_str();
        if run.state.is_terminal() {
            return self.reopen(run, message, from).await;
        }
        // Only a started execution keeps its follow-ups: one not yet started may
        // still go back to the queue.
        let execution = match &run.current_execution_id {
            Some(execution) if run.state == RunState::InProgress => execution,
            _ => {
                return Err(ApiError::Conflict(format!(
                    "run {run_id} is {} and its agent has not started yet; retry once it is INPROGRESS",
                    run.state
                )));
            }
        };
        // Stored before it is acknowledged; the replica holding the agent's
        // session delivers it, exactly once, even if the agent reconnects.
        let followup = hangar_store::NewFollowup {
            message: message.to_owned(),
            sender: from,
            at: Timestamp::now().unix_millis(),
        };
        let stored = match app.store.add_followup(&run.id, execution, &followup).await {
            Ok(stored) => stored,
            Err(hangar_store::StoreError::Conflict(_)) => {
                return Err(ApiError::Conflict(format!(
                    "run {run_id}'s execution is ending; retry the follow-up in a few seconds to continue the run"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        crate::sessions::hub::deliver_followups(app, &run.id).await;
        Ok(serde_json::json!({
            "run_id": run_id,
            "delivered": true,
            "followup_id": stored.id,
            "state": run.state,
        }))
    }

    /// Reopens an ended run for a follow-up and hands it to the dispatcher.
    async fn reopen(
        &self,
        run: &RunRecord,
        message: &str,
        from: String,
    ) -> ApiResult<serde_json::Value> {
        let app = self.app;
        let run_id = run.id.as_str();
        if run.execution_location == RunExecutionLocation::Local {
            return Err(ApiError::InvalidState(format!(
                "run {run_id} ran on someone's machine (`hangar agent run`) and has ended; \
             follow-ups can only continue cloud runs — start a new run"
            )));
        }
        let previous_worker = match &run.current_execution_id {
            Some(exec) => Some(app.store.execution(exec).await?.worker_id),
            None => None,
        };
        let followup = hangar_store::NewFollowup {
            message: message.to_owned(),
            sender: from,
            at: Timestamp::now().unix_millis(),
        };
        let deadline = tokio::time::Instant::now() + REOPEN_WAIT;
        let reopened = loop {
            match app.store.reopen_run(run.team_id, &run.id, &followup).await {
                Ok(r) => break r,
                Err(hangar_store::StoreError::NotFound) => {
                    return Err(ApiError::run_not_found(run_id));
                }
                Err(hangar_store::StoreError::Conflict(m)) => {
                    // The agent reported its outcome; its worker has not yet
                    // reported the end of the execution. Give it a moment.
                    let current = app.store.run_any_team(&run.id).await?;
                    if !current.state.is_terminal() || tokio::time::Instant::now() >= deadline {
                        return Err(ApiError::Conflict(format!(
                            "{m}; retry the follow-up in a few seconds"
                        )));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(worker) =
            previous_worker.filter(|w| w.as_str() != hangar_store::LOCAL_WORKER_ID)
        {
            app.dispatcher.prefer_worker(&reopened.id, worker);
        }
        app.dispatcher.submit(reopened.clone());
        tracing::info!(run_id, from = %run.state, "ended run reopened by a follow-up");
        Ok(serde_json::json!({
            "run_id": run_id,
            "delivered": false,
            "reopened": true,
            "state": reopened.state,
        }))
    }
}
