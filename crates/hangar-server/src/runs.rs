//! The run service: the one place where the rules of a run's life are kept.
//!
//! Every trigger goes through [`Runs`] (`app.runs()`): the REST API
//! (`api::runs`), the viewers' WebSocket (`sessions::viewers`), the
//! dashboard, and the scheduler (through [`create::resolve_model`] and the
//! dispatcher), so a run is created, cancelled and continued the same way
//! whoever asks.
//!
//! - [`create`]: a request becomes a stored run: validated (prompt,
//!   attachments, limits, worker host, title), its model and environment
//!   resolved, its source recorded, then handed to dispatch. Unmanaged runs
//!   (`hangar agent run`, `execution_location: LOCAL`) get their only
//!   execution and run token at once.
//! - [`cancel`]: a queued or running run ends `CANCELLED`; its worker and
//!   agent are told.
//! - [`followup`]: a message for a running run's agent, or a reopened ended
//!   run.
//! - [`options`]: Hangar's run options (`config.hangar`: metadata, mode,
//!   parent and conversation links) and their limits.

pub mod cancel;
pub mod create;
pub mod followup;
pub mod options;

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use hangar_protocol::RunId;
use hangar_store::RunRecord;

/// Longest accepted prompt (and follow-up message), in bytes.
pub const MAX_PROMPT_BYTES: usize = 256 * 1024;
/// Most attachments per run.
pub const MAX_ATTACHMENTS: usize = 5;
/// Header a first-party client sets to record where a run came from (`CLI`, `WEB_APP`, …).
pub const SOURCE_HEADER: &str = "x-hangar-source";

/// The run service over the server's state (see the module docs).
#[derive(Clone, Copy)]
pub struct Runs<'a> {
    app: &'a AppState,
}

impl AppState {
    /// The run service.
    pub fn runs(&self) -> Runs<'_> {
        Runs { app: self }
    }
}

impl Runs<'_> {
    /// The run `run_id` as `principal` may see it: another team's run, or a
    /// run token's other runs, do not exist for it (404).
    pub async fn visible(&self, principal: &Principal, run_id: &str) -> ApiResult<RunRecord> {
        let id = RunId(run_id.to_owned());
        let run = self
            .app
            .store
            .run(principal.team_id(), &id)
            .await
            .map_err(|e| match e {
                hangar_store::StoreError::NotFound => ApiError::run_not_found(run_id),
                other => other.into(),
            })?;
        if !principal.can_read_run(run.team_id, &run.id) {
            return Err(ApiError::run_not_found(run_id));
        }
        Ok(run)
    }

    /// `Some("none")` when a worker reported running one of the run's
    /// executions without its sandbox (a `sandbox_none` lifecycle event, see
    /// the worker socket).
    pub async fn sandbox(&self, run: &RunRecord) -> ApiResult<Option<String>> {
        let events = self
            .app
            .store
            .lifecycle_events(
                run.team_id,
                &hangar_store::LifecycleQuery {
                    run_ids: vec![run.id.0.clone()],
                    since: 0,
                    limit: 10_000,
                },
            )
            .await?;
        Ok(events
            .iter()
            .any(|e| e.event_type == crate::dispatch::worker_socket::SANDBOX_NONE_EVENT)
            .then(|| "none".to_owned()))
    }
}
