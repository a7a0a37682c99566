//! **(extension)** `/secrets`: values are write-only, encrypted at rest, and
//! injected into tasks of environments that name them.

use crate::AppState;
use crate::api::environments::{reserved_env_name, valid_env_name};
use crate::api::parse_json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::Timestamp;
use hangar_protocol::environment::{CreateSecretRequest, SecretItem, UpdateSecretRequest};
use hangar_store::{SecretRecord, StoreError};

/// Largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

fn check_name(name: &str) -> ApiResult<()> {
    if !valid_env_name(name) {
        return Err(ApiError::BadRequest(format!(
            "secret name `{name}` is invalid: it becomes an environment variable, so use letters, digits and `_`, not starting with a digit"
        )));
    }
    if reserved_env_name(name) {
        return Err(ApiError::BadRequest(format!(
            "secret name `{name}` is reserved by Hangar"
        )));
    }
    Ok(())
}

fn check_value(value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::BadRequest("`value` must not be empty".into()));
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`value` is larger than {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(())
}

fn item(r: &SecretRecord) -> SecretItem {
    SecretItem {
        name: r.name.clone(),
        created_at: Timestamp::from_unix_millis(r.created_at),
        updated_at: Timestamp::from_unix_millis(r.updated_at),
    }
}

fn seal(
    app: &AppState,
    team: i64,
    name: &str,
    value: &str,
    created: i64,
) -> ApiResult<SecretRecord> {
    let (nonce, ciphertext) = app
        .secrets
        .seal(team, name, value)
        .ok_or_else(|| ApiError::Internal("could not encrypt the secret".into()))?;
    Ok(SecretRecord {
        team_id: team,
        name: name.to_owned(),
        nonce,
        ciphertext,
        created_at: created,
        updated_at: Timestamp::now().unix_millis(),
    })
}

/// `POST /secrets`.
#[utoipa::path(post, path = "/secrets", tag = "hangar", request_body = hangar_protocol::environment::CreateSecretRequest, responses((status = 200, description = "Created (value never returned)", body = hangar_protocol::environment::SecretItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<SecretItem>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "create team secrets").await?;
    let req: CreateSecretRequest = parse_json(&body)?;
    check_name(&req.name)?;
    check_value(req.value.expose())?;
    let record = seal(
        &app,
        team,
        &req.name,
        req.value.expose(),
        Timestamp::now().unix_millis(),
    )?;
    app.store.create_secret(record.clone()).await?;
    tracing::info!(name = %req.name, "secret created");
    Ok(Json(item(&record)))
}

/// `GET /secrets`: names and times only.
#[utoipa::path(get, path = "/secrets", tag = "hangar", responses((status = 200, description = "`{secrets}` without values", body = Object), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let items: Vec<SecretItem> = app
        .store
        .list_secrets(team)
        .await?
        .iter()
        .map(item)
        .collect();
    Ok(Json(serde_json::json!({ "secrets": items })))
}

/// `PUT /secrets/{name}`: replaces the value.
#[utoipa::path(put, path = "/secrets/{name}", tag = "hangar", params(("name" = String, Path, description = "Secret name")), request_body = hangar_protocol::environment::UpdateSecretRequest, responses((status = 200, description = "Updated", body = hangar_protocol::environment::SecretItem), crate::error::ProblemResponses))]
pub async fn update(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<SecretItem>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "change team secrets").await?;
    let req: UpdateSecretRequest = parse_json(&body)?;
    check_value(req.value.expose())?;
    let existing = app
        .store
        .secret(team, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("secret `{name}` does not exist")))?;
    let record = seal(&app, team, &name, req.value.expose(), existing.created_at)?;
    app.store.update_secret(record.clone()).await?;
    Ok(Json(item(&record)))
}

/// `DELETE /secrets/{name}`.
#[utoipa::path(delete, path = "/secrets/{name}", tag = "hangar", params(("name" = String, Path, description = "Secret name")), responses((status = 200, description = "Deleted", body = Object), crate::error::ProblemResponses))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "delete team secrets").await?;
    app.store
        .delete_secret(team, &name)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(format!("secret `{name}` does not exist")),
            other => other.into(),
        })?;
    Ok(Json(serde_json::json!({ "name": name, "deleted": true })))
}
