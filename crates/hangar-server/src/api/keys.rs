//! `/api/v1/api-keys`: create (the secret is returned once), list, expire.

use crate::AppState;
use crate::api::parse_json;
use crate::auth::roles::Role;
use crate::auth::{authenticate, issue_api_key};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::{ApiKeyItem, CreateApiKeyRequest, Timestamp};
use hangar_store::ApiKeyRecord;

fn item(r: &ApiKeyRecord, key: Option<String>) -> ApiKeyItem {
    ApiKeyItem {
        id: r.id.clone(),
        name: r.name.clone(),
        prefix: r.prefix.clone(),
        key,
        created_at: Timestamp::from_unix_millis(r.created_at),
        expires_at: r.expires_at.map(Timestamp::from_unix_millis),
        revoked_at: r.revoked_at.map(Timestamp::from_unix_millis),
    }
}

/// Creates a key.
#[utoipa::path(post, path = "/api-keys", tag = "hangar", request_body = hangar_protocol::CreateApiKeyRequest, responses((status = 200, description = "The key, with its secret shown once", body = hangar_protocol::ApiKeyItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<ApiKeyItem>> {
    let who = authenticate(app.store.as_ref(), &headers).await?;
    let (team, user) = who.require_api_key()?;
    let req: CreateApiKeyRequest = parse_json(&body)?;
    // A team key belongs to no user and acts as an admin: only an admin may
    // make one (it is also what an `oz-agent-worker` connects with).
    let user = if req.team {
        crate::auth::roles::require_admin(&app, &who, "create team keys").await?;
        None
    } else {
        user
    };
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "`name` must be 1 to 100 characters".into(),
        ));
    }
    let now = Timestamp::now();
    if let Some(exp) = req.expires_at
        && exp <= now
    {
        return Err(ApiError::BadRequest(
            "`expires_at` must be in the future".into(),
        ));
    }
    let (record, secret) = issue_api_key(
        app.store.as_ref(),
        team,
        user,
        name,
        req.expires_at.map(|t| t.unix_millis()),
    )
    .await?;
    tracing::info!(key_id = %record.id, name, team_key = req.team, "API key created");
    Ok(Json(item(&record, Some(secret))))
}

/// Lists keys (never their secrets).
#[utoipa::path(get, path = "/api-keys", tag = "hangar", responses((status = 200, description = "`{api_keys}`", body = Object), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let who = authenticate(app.store.as_ref(), &headers).await?;
    let (team, user) = who.require_api_key()?;
    // Admins see the team's keys; members their own.
    let all = crate::auth::roles::role(&app, &who).await? == Role::Admin;
    let keys: Vec<ApiKeyItem> = app
        .store
        .list_api_keys(team)
        .await?
        .iter()
        .filter(|r| all || r.user_id == user)
        .map(|r| item(r, None))
        .collect();
    Ok(Json(serde_json::json!({ "api_keys": keys })))
}

/// Expires (revokes) a key immediately.
#[utoipa::path(post, path = "/api-keys/{key_id}/expire", tag = "hangar", params(("key_id" = String, Path, description = "The key")), responses((status = 200, description = "Expired", body = Object), crate::error::ProblemResponses))]
pub async fn expire(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let who = authenticate(app.store.as_ref(), &headers).await?;
    let (team, _) = who.require_api_key()?;
    let missing = || ApiError::NotFound(format!("API key `{key_id}` does not exist"));
    let key = app
        .store
        .list_api_keys(team)
        .await?
        .into_iter()
        .find(|k| k.id == key_id)
        .ok_or_else(missing)?;
    crate::auth::roles::require_owner_or_admin(&app, &who, key.user_id, "expire this API key")
        .await?;
    app.store
        .revoke_api_key(team, &key_id, Timestamp::now().unix_millis())
        .await
        .map_err(|e| match e {
            hangar_store::StoreError::NotFound => missing(),
            other => other.into(),
        })?;
    Ok(Json(serde_json::json!({ "id": key_id, "revoked": true })))
}
