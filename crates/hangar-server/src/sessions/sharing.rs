//! Who may watch and steer a run's session.
//!
//! Owns: [`Access`] (view or edit), [`session_access`] (the one decision every
//! session route makes: SSE/WebSocket events, transcript, conversation,
//! follow-ups, cancel), public links ([`public_link`], [`issue_public_token`]),
//! and [`ShareHub`], which tells open streams that a run's grants changed so
//! they re-check and close within 2 s (scenario C2). Grants are managed by
//! `api::shares` and stored by `hangar_store::ShareStore`.
//!
//! The rules, in order (first match wins):
//!
//! 1. a caller of another team: the run does not exist for it (404);
//! 2. the run's own run token: edit;
//! 3. a team API key that belongs to no user (automation): edit;
//! 4. the run's creator: edit;
//! 5. a user with role `admin`: edit;
//! 6. otherwise the best of: the run's team grant, the caller's user grant,
//!    and `view` when the run has no creator user (schedules, integrations,
//!    team keys: such runs belong to the whole team);
//! 7. nothing: 403, telling the caller to ask for a share.
//!
//! Plain run metadata (`GET /agent/runs`, `GET /agent/runs/{id}`) stays
//! visible to the whole team, as in the Oz API; only the session (transcript,
//! conversation, events, follow-ups, cancel) is guarded.
//!
//! Public links give `view` on one run to anyone holding the token, on the
//! `/public/sessions/{token}` routes only. The token (`hs_` + 32 random bytes)
//! is shown once; the store keeps its SHA-256.

use crate::AppState;
use crate::auth::{Principal, hash_secret};
use crate::error::{ApiError, ApiResult};
use hangar_protocol::RunId;
use hangar_protocol::share::SHARE_TOKEN_PREFIX;
use hangar_store::{Grantee, RunRecord, ShareRecord, StoreError};
use rand::RngCore;
use tokio::sync::broadcast;

/// Grant changes buffered per subscriber; a subscriber that lags re-checks anyway.
const SHARE_CHANGES_BUFFER: usize = 1024;

/// What a caller may do with a run's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Watch the transcript.
    View,
    /// Watch, send follow-ups, cancel.
    Edit,
}

impl Access {
    /// The access a stored role (`view`, `edit`) gives.
    pub fn from_role(role: &str) -> Access {
        if role == "edit" {
            Access::Edit
        } else {
            Access::View
        }
    }
}

/// The caller's access to `run`'s session; `NotFound` when the caller may not
/// even know the run exists (another team, another run's token), `Forbidden`
/// when it may see the run but not its session.
pub async fn session_access(
    state: &AppState,
    who: &Principal,
    run: &RunRecord,
) -> ApiResult<Access> {
    if !who.can_read_run(run.team_id, &run.id) {
        return Err(ApiError::run_not_found(run.id.as_str()));
    }
    match who {
        // `can_read_run` checked that the token is this run's.
        Principal::RunToken { .. } => Ok(Access::Edit),
        Principal::ApiKey { user_id: None, .. } => Ok(Access::Edit),
        Principal::ApiKey {
            user_id: Some(user_id),
            ..
        }
        | Principal::WebSession { user_id, .. } => user_access(state, *user_id, run).await,
    }
}

/// Rules 4–7 for a user of the run's team.
async fn user_access(state: &AppState, user_id: i64, run: &RunRecord) -> ApiResult<Access> {
    if run.creator_user_id == Some(user_id) {
        return Ok(Access::Edit);
    }
    match state.store.user(user_id).await {
        Ok(user) if user.role == "admin" => return Ok(Access::Edit),
        Ok(_) | Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let grants = state.store.list_shares(run.team_id, &run.id).await?;
    let granted = grants
        .iter()
        .filter(|g| match &g.grantee {
            Grantee::Team => true,
            Grantee::User { user_id: u, .. } => *u == user_id,
            Grantee::Public { .. } => false,
        })
        .map(|g| Access::from_role(&g.role))
        .max();
    let team_default = run.creator_user_id.is_none().then_some(Access::View);
    granted.max(team_default).ok_or_else(|| {
        ApiError::Forbidden(format!(
            "run {} was started by another member of your team and is not shared with you; \
             ask its creator or an admin to share it (`hangar run share {} --with YOUR_EMAIL`)",
            run.id, run.id
        ))
    })
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

/// A fresh public link token and its hash (the hash is what is stored).
pub fn issue_public_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{SHARE_TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_secret(&token);
    (token, hash)
}

/// Resolves a public link token to its grant and run; `NotFound` for an
/// unknown, malformed or revoked token (all look the same).
pub async fn public_link(state: &AppState, token: &str) -> ApiResult<(ShareRecord, RunRecord)> {
    let not_found = || {
        ApiError::NotFound(
            "this share link does not exist or was revoked; ask the run's owner for a new one"
                .to_owned(),
        )
    };
    let well_formed = token
        .strip_prefix(SHARE_TOKEN_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(not_found());
    }
    let Some(share) = state.store.share_by_token_hash(&hash_secret(token)).await? else {
        return Err(not_found());
    };
    let run = match state.store.run(share.team_id, &share.run_id).await {
        Ok(run) => run,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    Ok((share, run))
}

/// Grant changes, so open streams re-check their access.
pub struct ShareHub {
    changes: broadcast::Sender<RunId>,
}

impl Default for ShareHub {
    fn default() -> Self {
        ShareHub {
            changes: broadcast::channel(SHARE_CHANGES_BUFFER).0,
        }
    }
}

impl ShareHub {
    /// Subscribes to grant changes of every run (filter by run id; on
    /// `Lagged`, re-check).
    pub fn subscribe(&self) -> broadcast::Receiver<RunId> {
        self.changes.subscribe()
    }

    /// Announces that `run`'s grants changed (a revocation, a deleted link).
    /// Other replicas learn it from the store's `SHARES_CHANNEL` signal.
    pub fn changed(&self, run: &RunId) {
        let _ = self.changes.send(run.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_tokens_are_prefixed_random_and_hashed() {
        let (a, ha) = issue_public_token();
        let (b, hb) = issue_public_token();
        assert!(a.starts_with(SHARE_TOKEN_PREFIX));
        assert_eq!(a.len(), SHARE_TOKEN_PREFIX.len() + 64);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(ha, hash_secret(&a));
    }

    #[test]
    fn roles_map_to_access() {
        assert_eq!(Access::from_role("edit"), Access::Edit);
        assert_eq!(Access::from_role("view"), Access::View);
        assert!(Access::Edit > Access::View);
    }
}
