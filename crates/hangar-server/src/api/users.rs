//! **(extension)** `/api/v1/teams` and `/api/v1/users`: the caller's team and
//! its users.
//!
//! Any user credential of the team may read; only admins may create, change
//! or delete users (403 otherwise). Passwords are write-only and hashed with
//! argon2id before they reach the store. An admin cannot delete their own
//! account, and a team always keeps one active admin (409).

use crate::AppState;
use crate::api::parse_json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::web::auth as web_auth;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hangar_protocol::Timestamp;
use hangar_protocol::account::{
    CreateUserRequest, ListTeamsResponse, ListUsersResponse, TeamItem, UpdateUserRequest, UserItem,
    UserRole,
};
use hangar_store::{NewUser, StoreError, UserRecord, UserUpdate};

/// The API shape of a stored user.
pub fn user_item(u: &UserRecord) -> UserItem {
    UserItem {
        id: u.uid.clone(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        role: UserRole::parse(&u.role).unwrap_or(UserRole::Member),
        disabled: u.disabled,
    }
}

fn not_found(user_id: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(format!(
            "user `{user_id}` does not exist in your team; list users with `hangar user list`"
        )),
        other => other.into(),
    }
}

/// The caller's team and, for user credentials, their user id.
async fn caller(app: &AppState, headers: &HeaderMap) -> ApiResult<(i64, Option<i64>)> {
    authenticate(app.store.as_ref(), headers)
        .await?
        .require_api_key()
}

/// Requires the caller to be an active admin of their team; returns them.
async fn require_admin(app: &AppState, team: i64, user: Option<i64>) -> ApiResult<UserRecord> {
    let denied = || {
        ApiError::Forbidden(
            "only team admins can manage users; ask an admin, or use an admin's personal API key"
                .to_owned(),
        )
    };
    let user = app
        .store
        .user(user.ok_or_else(denied)?)
        .await
        .map_err(|_| denied())?;
    if user.team_id != team || user.role != "admin" || user.disabled {
        return Err(denied());
    }
    Ok(user)
}

/// The caller's team's user `user_id` (404 otherwise), then the caller as an
/// admin (403 otherwise): another team's user is as invisible as a missing one.
async fn target_and_admin(
    app: &AppState,
    headers: &HeaderMap,
    user_id: &str,
) -> ApiResult<(UserRecord, UserRecord)> {
    let (team, caller_id) = caller(app, headers).await?;
    let target = app
        .store
        .user_by_uid(team, user_id)
        .await
        .map_err(not_found(user_id))?;
    let admin = require_admin(app, team, caller_id).await?;
    Ok((target, admin))
}

fn check_email(email: &str) -> ApiResult<String> {
    let email = email.trim();
    hangar_protocol::share::validate_email(email)
        .map_err(|_| ApiError::BadRequest(format!("`{email}` is not an email address")))?;
    Ok(email.to_owned())
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "`display_name` must be 1 to 100 characters".to_owned(),
        ));
    }
    Ok(name.to_owned())
}

/// `GET /teams`: the caller's team.
#[utoipa::path(get, path = "/teams", tag = "hangar", responses((status = 200, description = "Teams of the caller", body = hangar_protocol::account::ListTeamsResponse), crate::error::ProblemResponses))]
pub async fn list_teams(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ListTeamsResponse>> {
    let (team, _) = caller(&app, &headers).await?;
    let record = app.store.team(team).await?;
    let users = app.store.list_users(team).await?;
    Ok(Json(ListTeamsResponse {
        teams: vec![TeamItem {
            id: record.uid,
            name: record.name,
            user_count: users.len() as u64,
        }],
    }))
}

/// `GET /users`.
#[utoipa::path(get, path = "/users", tag = "hangar", responses((status = 200, description = "Users of the team", body = hangar_protocol::account::ListUsersResponse), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ListUsersResponse>> {
    let (team, _) = caller(&app, &headers).await?;
    let users = app.store.list_users(team).await?;
    Ok(Json(ListUsersResponse {
        users: users.iter().map(user_item).collect(),
    }))
}

/// `GET /users/{user_id}`.
#[utoipa::path(get, path = "/users/{user_id}", tag = "hangar", params(("user_id" = String, Path, description = "The user")), responses((status = 200, description = "The user", body = hangar_protocol::account::UserItem), crate::error::ProblemResponses))]
pub async fn get_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult<Json<UserItem>> {
    let (team, _) = caller(&app, &headers).await?;
    let user = app
        .store
        .user_by_uid(team, &user_id)
        .await
        .map_err(not_found(&user_id))?;
    Ok(Json(user_item(&user)))
}

/// `POST /users` (admins).
#[utoipa::path(post, path = "/users", tag = "hangar", request_body = hangar_protocol::account::CreateUserRequest, responses((status = 201, description = "User created", body = hangar_protocol::account::UserItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<UserItem>)> {
    let (team, caller_id) = caller(&app, &headers).await?;
    let admin = require_admin(&app, team, caller_id).await?;
    let req: CreateUserRequest = parse_json(&body)?;
    let email = check_email(&req.email)?;
    let display_name = match &req.display_name {
        Some(n) => check_name(n)?,
        None => check_name(email.split('@').next().unwrap_or("user"))?,
    };
    let hash = match &req.password {
        Some(pw) => {
            web_auth::validate_password(pw.expose())?;
            Some(web_auth::hash_password(pw.expose()).await?)
        }
        None => None,
    };
    let role = req.role.unwrap_or(UserRole::Member);
    let user = app
        .store
        .create_user(NewUser {
            uid: hangar_protocol::RunId::generate().0,
            team_id: admin.team_id,
            email: Some(email),
            display_name,
            role: role.as_str().to_owned(),
        })
        .await?;
    if let Some(hash) = hash {
        app.store
            .set_password_hash(user.team_id, &user.uid, Some(&hash))
            .await?;
    }
    tracing::info!(user = %user.uid, role = role.as_str(), by = %admin.uid, "user created");
    Ok((StatusCode::CREATED, Json(user_item(&user))))
}

/// `PATCH /users/{user_id}` (admins).
#[utoipa::path(patch, path = "/users/{user_id}", tag = "hangar", params(("user_id" = String, Path, description = "The user")), request_body = hangar_protocol::account::UpdateUserRequest, responses((status = 200, description = "Updated", body = hangar_protocol::account::UserItem), crate::error::ProblemResponses))]
pub async fn update(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<UserItem>> {
    let (_, admin) = target_and_admin(&app, &headers, &user_id).await?;
    let req: UpdateUserRequest = parse_json(&body)?;
    let update = UserUpdate {
        email: req.email.as_deref().map(check_email).transpose()?,
        display_name: req.display_name.as_deref().map(check_name).transpose()?,
        role: req.role.map(|r| r.as_str().to_owned()),
        disabled: req.disabled,
    };
    let hash = match &req.password {
        Some(pw) => {
            web_auth::validate_password(pw.expose())?;
            Some(web_auth::hash_password(pw.expose()).await?)
        }
        None => None,
    };
    let user = app
        .store
        .update_user(admin.team_id, &user_id, update)
        .await
        .map_err(not_found(&user_id))?;
    if let Some(hash) = hash {
        app.store
            .set_password_hash(admin.team_id, &user_id, Some(&hash))
            .await
            .map_err(not_found(&user_id))?;
    }
    if req.disabled == Some(true) {
        // A disabled account keeps no way in: its personal API keys die with
        // its web sessions (the store ends those).
        let now = Timestamp::now().unix_millis();
        for key in app.store.list_api_keys(admin.team_id).await? {
            if key.user_id == Some(user.id) && key.is_active(now) {
                app.store
                    .revoke_api_key(admin.team_id, &key.id, now)
                    .await?;
            }
        }
    }
    tracing::info!(user = %user.uid, by = %admin.uid, password_changed = req.password.is_some(), "user updated");
    Ok(Json(user_item(&user)))
}

/// `DELETE /users/{user_id}` (admins; not themselves, not the last admin).
#[utoipa::path(delete, path = "/users/{user_id}", tag = "hangar", params(("user_id" = String, Path, description = "The user")), responses((status = 204, description = "Deleted"), crate::error::ProblemResponses))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult<StatusCode> {
    let (target, admin) = target_and_admin(&app, &headers, &user_id).await?;
    if target.id == admin.id {
        return Err(ApiError::Conflict(
            "you cannot delete your own account; another admin can".to_owned(),
        ));
    }
    app.store
        .delete_user(admin.team_id, &user_id, Timestamp::now().unix_millis())
        .await
        .map_err(not_found(&user_id))?;
    tracing::info!(user = %user_id, by = %admin.uid, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}
