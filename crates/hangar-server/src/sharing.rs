//! Who may watch and steer a run's session.
//!
//! Owns: [`Access`] (view or edit), [`session_access`] (the one decision every
//! session route makes: SSE/WebSocket events, transcript, conversation,
//! follow-ups, cancel), and [`ShareHub`], which tells open streams that a
//! run's grants changed so they re-check and close within 2 s (scenario C2).
//!
//! SKELETON: grants are not stored yet; every caller of the run's team gets
//! `Edit`. The sharing work replaces the body of [`session_access`] with the
//! real rules and calls [`ShareHub::changed`] on every revocation.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use hangar_protocol::RunId;
use hangar_store::RunRecord;
use tokio::sync::broadcast;

/// What a caller may do with a run's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Watch the transcript.
    View,
    /// Watch, send follow-ups, cancel.
    Edit,
}

/// The caller's access to `run`'s session; `NotFound` when the caller may not
/// even know the run exists (another team), `Forbidden` when it may see the
/// run but not its session.
pub async fn session_access(
    _state: &AppState,
    who: &Principal,
    run: &RunRecord,
) -> ApiResult<Access> {
    if !who.can_read_run(run.team_id, &run.id) {
        return Err(ApiError::NotFound(format!("run {} not found", run.id)));
    }
    Ok(Access::Edit)
}

/// Requires at least `needed` on `run`'s session.
pub async fn require_access(
    state: &AppState,
    who: &Principal,
    run: &RunRecord,
    needed: Access,
) -> ApiResult<Access> {
    let access = session_access(state, who, run).await?;
    if access < needed {
        return Err(ApiError::Forbidden(format!(
            "you can view run {} but not steer it; ask its creator for edit access",
            run.id
        )));
    }
    Ok(access)
}

/// Grant changes, so open streams re-check their access.
pub struct ShareHub {
    changes: broadcast::Sender<RunId>,
}

impl Default for ShareHub {
    fn default() -> Self {
        ShareHub {
            changes: broadcast::channel(1024).0,
        }
    }
}

impl ShareHub {
    /// Subscribes to grant changes of every run (filter by run id).
    pub fn subscribe(&self) -> broadcast::Receiver<RunId> {
        self.changes.subscribe()
    }

    /// Announces that `run`'s grants changed (a revocation, a deleted link).
    pub fn changed(&self, run: &RunId) {
        let _ = self.changes.send(run.clone());
    }
}
