//! Cancelling a run: the store ends it `CANCELLED`, then its worker and
//! agent are told (on this replica; the store's notification tells the
//! others, see [`crate::replicas`]).

use super::Runs;
use crate::error::{ApiError, ApiResult};
use hangar_protocol::{RunId, Timestamp};

impl Runs<'_> {
    /// Cancels a queued or running run of `team_id` and tells its worker and
    /// agent (callers check access first). Answers the run id.
    pub async fn cancel(&self, team_id: i64, id: &RunId) -> ApiResult<String> {
        let app = self.app;
        let run_id = id.0.clone();
        let before = app
            .store
            .cancel_run(
                team_id,
                id,
                "Cancelled by user request.",
                Timestamp::now().unix_millis(),
            )
            .await
            .map_err(|e| match e {
                hangar_store::StoreError::NotFound => ApiError::run_not_found(&run_id),
                hangar_store::StoreError::Conflict(m) => ApiError::BadRequest(format!(
                    "{m}; only queued or running runs can be cancelled"
                )),
                other => other.into(),
            })?;
        let mut running = false;
        if let Some(exec_id) = &before.current_execution_id {
            let exec = app.store.execution(exec_id).await?;
            let key = (team_id, exec.worker_id.clone());
            if exec.ended_at.is_some() {
                // Assigned but never claimed: nothing runs, free the slot.
                app.dispatcher.release(&key, &exec.id);
            } else {
                app.dispatcher.send_cancellation(team_id, &exec);
                app.sessions.hub.cancel(id);
                running = true;
            }
        }
        if !running {
            // Nothing will report an end: the trace ends here.
            crate::metrics::run_ended(app.store.as_ref(), id).await;
        }
        tracing::info!(run_id = %id, from = %before.state, "run cancelled");
        Ok(run_id)
    }
}
