//! Team roles: what an admin may do that a member may not.
//!
//! The rules (README, "Who may do what", lists every route; the test
//! `c9_every_route_follows_the_roles_table` checks each one against it):
//!
//! - an admin (a user with role `admin`, or a team key that belongs to no user:
//!   automation issued by the operator) may do everything in the team;
//! - a member manages their own API keys, runs, shares and schedules, and may
//!   use the team's environments, secrets (by name) and schedules;
//! - team secrets, environments (setup commands, network policy, the secrets
//!   they expose), other users' keys, schedules and users need an admin.
//!
//! - worker tokens (`hw_…`) are created, listed and expired by admins; they
//!   are no principal at all ([`crate::auth::authenticate`] refuses them) and
//!   only connect workers ([`crate::auth::authenticate_worker`]).
//!
//! Run sessions follow [`crate::sessions::sharing`]; run tokens never reach these checks
//! (`Principal::require_api_key` refuses them first).

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use hangar_store::StoreError;

/// A caller's role in its team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May do everything in the team.
    Admin,
    /// Manages their own objects.
    Member,
}

/// The caller's role. A disabled or deleted user is a member: their
/// credentials are refused elsewhere, and never gain rights here.
pub async fn role(app: &AppState, who: &Principal) -> ApiResult<Role> {
    let user_id = match who {
        Principal::ApiKey { user_id: None, .. } => return Ok(Role::Admin),
        Principal::ApiKey {
            user_id: Some(user_id),
            ..
        }
        | Principal::WebSession { user_id, .. } => *user_id,
        Principal::RunToken { .. } => return Ok(Role::Member),
    };
    match app.store.user(user_id).await {
        Ok(user) if user.team_id == who.team_id() && user.role == "admin" && !user.disabled => {
            Ok(Role::Admin)
        }
        Ok(_) | Err(StoreError::NotFound) => Ok(Role::Member),
        Err(e) => Err(e.into()),
    }
}

/// Requires an admin; `action` completes "only team admins can …".
pub async fn require_admin(app: &AppState, who: &Principal, action: &str) -> ApiResult<()> {
    match role(app, who).await? {
        Role::Admin => Ok(()),
        Role::Member => Err(ApiError::Forbidden(format!(
            "only team admins can {action}; ask an admin, or use an admin's API key"
        ))),
    }
}

/// Requires the object's owner (`owner`, a user id) or an admin.
pub async fn require_owner_or_admin(
    app: &AppState,
    who: &Principal,
    owner: Option<i64>,
    action: &str,
) -> ApiResult<()> {
    let caller = match who {
        Principal::ApiKey { user_id, .. } => *user_id,
        Principal::WebSession { user_id, .. } => Some(*user_id),
        Principal::RunToken { .. } => None,
    };
    if caller.is_some() && caller == owner {
        return Ok(());
    }
    match role(app, who).await? {
        Role::Admin => Ok(()),
        Role::Member => Err(ApiError::Forbidden(format!(
            "only its creator or a team admin can {action}; ask them, or an admin"
        ))),
    }
}

/// Authenticates a user credential that must be an admin's; answers its team.
pub async fn admin_team(
    app: &AppState,
    headers: &axum::http::HeaderMap,
    action: &str,
) -> ApiResult<i64> {
    let who = crate::auth::authenticate(app.store.as_ref(), headers).await?;
    let (team, _) = who.require_api_key()?;
    require_admin(app, &who, action).await?;
    Ok(team)
}
