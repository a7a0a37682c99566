//! `/api/v1/worker-tokens`: worker credentials (admins only). Create (the
//! secret is returned once), list (never a secret), expire. A worker token
//! can only connect a worker, as the worker id or under the pool (id
//! prefix) it is bound to; every other route refuses it.

use crate::AppState;
use crate::api::parse_json;
use crate::auth::{authenticate, issue_worker_token};
use crate::dispatch::worker_socket::{RESERVED_WORKER_PREFIX, WORKER_ID_RULE, validate_worker_id};
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::{
    CreateWorkerTokenRequest, ListWorkerTokensResponse, Timestamp, WorkerTokenItem,
};
use hangar_store::{WorkerBinding, WorkerTokenRecord};
use std::collections::HashMap;

/// Authenticates an admin; answers the team and the calling user.
async fn admin(app: &AppState, headers: &HeaderMap, action: &str) -> ApiResult<(i64, Option<i64>)> {
    let who = authenticate(app.store.as_ref(), headers).await?;
    let caller = who.require_api_key()?;
    crate::auth::roles::require_admin(app, &who, action).await?;
    Ok(caller)
}

/// Public ids of the users who created `records`.
async fn creators(app: &AppState, records: &[WorkerTokenRecord]) -> HashMap<i64, String> {
    let mut uids = HashMap::new();
    for id in records.iter().filter_map(|r| r.created_by) {
        if uids.contains_key(&id) {
            continue;
        }
        if let Ok(user) = app.store.user(id).await {
            uids.insert(id, user.uid);
        }
    }
    uids
}

fn item(
    r: &WorkerTokenRecord,
    token: Option<String>,
    uids: &HashMap<i64, String>,
) -> WorkerTokenItem {
    let (worker_id, pool) = match &r.binding {
        WorkerBinding::Worker(id) => (Some(id.clone()), None),
        WorkerBinding::Pool(prefix) => (None, Some(prefix.clone())),
    };
    WorkerTokenItem {
        id: r.id.clone(),
        name: r.name.clone(),
        prefix: r.prefix.clone(),
        token,
        worker_id,
        pool,
        created_by: r.created_by.and_then(|u| uids.get(&u).cloned()),
        created_at: Timestamp::from_unix_millis(r.created_at),
        expires_at: r.expires_at.map(Timestamp::from_unix_millis),
        revoked_at: r.revoked_at.map(Timestamp::from_unix_millis),
        last_used_at: r.last_used_at.map(Timestamp::from_unix_millis),
    }
}

/// The binding a request asks for: exactly one of `worker_id` and `pool`.
fn binding(req: &CreateWorkerTokenRequest) -> ApiResult<WorkerBinding> {
    let reserved = |what: &str, value: &str| {
        ApiError::BadRequest(format!(
            "`{what}` `{value}` is reserved: ids starting with `{RESERVED_WORKER_PREFIX}` \
             belong to the server"
        ))
    };
    match (&req.worker_id, &req.pool) {
        (Some(id), None) => {
            let id = id.as_str();
            validate_worker_id(id).map_err(|_| {
                ApiError::BadRequest(format!(
                    "`worker_id` `{}` is invalid; {WORKER_ID_RULE}",
                    id.escape_debug()
                ))
            })?;
            if id.starts_with(RESERVED_WORKER_PREFIX) {
                return Err(reserved("worker_id", id));
            }
            Ok(WorkerBinding::Worker(id.into()))
        }
        (None, Some(prefix)) => {
            validate_worker_id(prefix).map_err(|_| {
                ApiError::BadRequest(format!(
                    "`pool` `{}` is invalid: it is a worker id prefix; {WORKER_ID_RULE}",
                    prefix.escape_debug()
                ))
            })?;
            if prefix.starts_with(RESERVED_WORKER_PREFIX) {
                return Err(reserved("pool", prefix));
            }
            Ok(WorkerBinding::Pool(prefix.clone()))
        }
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "give either `worker_id` (one worker) or `pool` (a worker id prefix), not both".into(),
        )),
        (None, None) => Err(ApiError::BadRequest(
            "a worker token is bound to one worker id or a pool: give `worker_id` or `pool`".into(),
        )),
    }
}

/// Creates a worker token.
#[utoipa::path(post, path = "/worker-tokens", tag = "workers", request_body = hangar_protocol::CreateWorkerTokenRequest, responses((status = 200, description = "The token, with its secret shown once", body = hangar_protocol::WorkerTokenItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WorkerTokenItem>> {
    let (team, user) = admin(&app, &headers, "create worker tokens").await?;
    let req: CreateWorkerTokenRequest = parse_json(&body)?;
    let binding = binding(&req)?;
    let name = match req.name.as_deref().map(str::trim) {
        Some(n) if n.is_empty() || n.chars().count() > 100 => {
            return Err(ApiError::BadRequest(
                "`name` must be 1 to 100 characters".into(),
            ));
        }
        Some(n) => n.to_owned(),
        None => match &binding {
            WorkerBinding::Worker(id) => format!("worker {id}"),
            WorkerBinding::Pool(prefix) => format!("pool {prefix}"),
        },
    };
    if let Some(exp) = req.expires_at
        && exp <= Timestamp::now()
    {
        return Err(ApiError::BadRequest(
            "`expires_at` must be in the future".into(),
        ));
    }
    let (record, secret) = issue_worker_token(
        app.store.as_ref(),
        team,
        user,
        &name,
        binding,
        req.expires_at.map(|t| t.unix_millis()),
    )
    .await?;
    tracing::info!(token_id = %record.id, name, binding = %record.binding, "worker token created");
    let uids = creators(&app, std::slice::from_ref(&record)).await;
    Ok(Json(item(&record, Some(secret), &uids)))
}

/// Lists the team's worker tokens (never their secrets).
#[utoipa::path(get, path = "/worker-tokens", tag = "workers", responses((status = 200, description = "The team's worker tokens", body = hangar_protocol::ListWorkerTokensResponse), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ListWorkerTokensResponse>> {
    let (team, _) = admin(&app, &headers, "list worker tokens").await?;
    let records = app.store.list_worker_tokens(team).await?;
    let uids = creators(&app, &records).await;
    Ok(Json(ListWorkerTokensResponse {
        worker_tokens: records.iter().map(|r| item(r, None, &uids)).collect(),
    }))
}

/// Expires (revokes) a worker token now: it can no longer connect, and a
/// worker connected with it is cut off at its replica's next registry
/// refresh ([`crate::dispatch::worker_socket::close_revoked`]).
#[utoipa::path(post, path = "/worker-tokens/{token_id}/expire", tag = "workers", params(("token_id" = String, Path, description = "The worker token")), responses((status = 200, description = "Expired", body = Object), crate::error::ProblemResponses))]
pub async fn expire(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(token_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (team, _) = admin(&app, &headers, "expire worker tokens").await?;
    app.store
        .revoke_worker_token(team, &token_id, Timestamp::now().unix_millis())
        .await
        .map_err(|e| match e {
            hangar_store::StoreError::NotFound => {
                ApiError::NotFound(format!("worker token `{token_id}` does not exist"))
            }
            other => other.into(),
        })?;
    tracing::info!(token_id, "worker token expired");
    Ok(Json(serde_json::json!({ "id": token_id, "revoked": true })))
}
