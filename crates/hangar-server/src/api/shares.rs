//! **(extension)** `/api/v1/agent/runs/{id}/shares`: grant, list and revoke
//! access to a run's session; `/api/v1/public/sessions/{token}`: what a public
//! link shows, without any credential.
//!
//! The access rules themselves live in [`crate::sessions::sharing`]. Every change calls
//! [`crate::sessions::sharing::ShareHub::changed`] (and, on PostgreSQL, the store
//! signals the other replicas), so a revocation closes the streams it allowed.

use crate::AppState;
use crate::api::{QueryResult, parse_json};
use crate::auth::{Principal, authenticate};
use crate::error::{ApiError, ApiResult};
use crate::sessions::sharing::{Access, issue_public_token, public_link, require_access};
use crate::sessions::viewers;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hangar_protocol::share::{
    ListSharesResponse, PublicSession, ShareItem, ShareRole, validate_email,
};
use hangar_protocol::{RunId, Timestamp};
use hangar_store::{Grantee, NewShare, ShareRecord, StoreError};
use serde::Deserialize;

/// `POST …/shares` body, read loosely so mistakes get a precise message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    grantee: String,
    #[serde(default)]
    role: Option<String>,
}

/// The API shape of a stored grant (`url` only when just created).
fn share_item(s: &ShareRecord, url: Option<String>) -> ShareItem {
    let grantee = match &s.grantee {
        Grantee::Team => "team".to_owned(),
        Grantee::User {
            email: Some(email), ..
        } => format!("user:{email}"),
        Grantee::User { user_id, .. } => format!("user:#{user_id}"),
        Grantee::Public { .. } => "public".to_owned(),
    };
    ShareItem {
        id: s.id.clone(),
        grantee,
        role: ShareRole::parse(&s.role).unwrap_or(ShareRole::View),
        created_at: Timestamp::from_unix_millis(s.created_at),
        url,
    }
}

/// Authenticates a caller that manages grants: API keys and dashboard users,
/// never run tokens (an agent must not publish its own session).
async fn manager(app: &AppState, headers: &HeaderMap) -> ApiResult<Principal> {
    let principal = authenticate(app.store.as_ref(), headers).await?;
    principal.require_api_key()?;
    Ok(principal)
}

fn parse_role(raw: Option<&str>) -> ApiResult<ShareRole> {
    match raw {
        None => Ok(ShareRole::View),
        Some(r) => ShareRole::parse(r).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`role` `{r}` is unknown; use `view` (watch the session) or `edit` (also send follow-ups and cancel)"
            ))
        }),
    }
}

/// Resolves `grantee` to whom the grant is for; `Public` gets a fresh token.
async fn resolve_grantee(
    app: &AppState,
    team_id: i64,
    grantee: &str,
    role: ShareRole,
) -> ApiResult<(Grantee, Option<String>)> {
    let grantee = grantee.trim();
    match grantee {
        "team" => Ok((Grantee::Team, None)),
        "public" => {
            if role == ShareRole::Edit {
                return Err(ApiError::BadRequest(
                    "public links are view-only: use `\"role\": \"view\"`, or give edit access to \
                     the team (`\"grantee\": \"team\"`) or a user (`\"grantee\": \"user:EMAIL\"`)"
                        .to_owned(),
                ));
            }
            let (token, token_hash) = issue_public_token();
            Ok((Grantee::Public { token_hash }, Some(token)))
        }
        other => {
            let email = other.strip_prefix("user:").unwrap_or(other).trim();
            if !other.starts_with("user:") && !other.contains('@') {
                return Err(ApiError::BadRequest(format!(
                    "`grantee` `{other}` is unknown; use `team`, `user:EMAIL` or `public`"
                )));
            }
            validate_email(email).map_err(|e| ApiError::BadRequest(format!("`grantee`: {e}")))?;
            let user = app.store.user_by_email(team_id, email).await?;
            let Some(user) = user else {
                return Err(ApiError::BadRequest(format!(
                    "no user with email `{email}` in your team; check the address, or share with \
                     the whole team (`team`) or a public link (`public`)"
                )));
            };
            Ok((
                Grantee::User {
                    user_id: user.id,
                    email: user.email,
                },
                None,
            ))
        }
    }
}

/// `POST /agent/runs/{id}/shares` → 201 with the grant (and, for a public
/// link, its URL: shown only here).
#[utoipa::path(post, path = "/agent/runs/{runId}/shares", tag = "hangar", params(("runId" = String, Path, description = "The run")), request_body = hangar_protocol::share::CreateShareRequest, responses((status = 201, description = "Share created", body = hangar_protocol::share::ShareItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ShareItem>)> {
    let principal = manager(&app, &headers).await?;
    let run = app.runs().visible(&principal, &run_id).await?;
    require_access(&app, &principal, &run, Access::Edit)
        .await
        .map_err(only_editors_share)?;
    let req: CreateBody = parse_json(&body)?;
    let role = parse_role(req.role.as_deref())?;
    let (grantee, token) = resolve_grantee(&app, run.team_id, &req.grantee, role).await?;
    let (_, user_id) = principal.require_api_key()?;
    let stored = app
        .store
        .create_share(NewShare {
            id: RunId::generate().0,
            team_id: run.team_id,
            run_id: run.id.clone(),
            grantee,
            role: role.as_str().to_owned(),
            created_by: user_id,
            created_at: Timestamp::now().unix_millis(),
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::run_not_found(&run_id),
            other => other.into(),
        })?;
    // A changed role may lower someone's access: open streams re-check.
    app.sessions.shares.changed(&run.id);
    let url = token.map(|t| format!("{}/s/{t}", app.public_url.trim_end_matches('/')));
    tracing::info!(run_id = %run.id, share_id = %stored.id, grantee = stored.grantee.kind(), role = %stored.role, "session shared");
    Ok((StatusCode::CREATED, Json(share_item(&stored, url))))
}

fn only_editors_share(e: ApiError) -> ApiError {
    match e {
        ApiError::Forbidden(_) => ApiError::Forbidden(
            "only callers with edit access to this run can manage its shares; ask its creator"
                .to_owned(),
        ),
        other => other,
    }
}

/// `GET /agent/runs/{id}/shares`: the grants (public links without their
/// token). Anyone who can view the session may list who else can.
#[utoipa::path(get, path = "/agent/runs/{runId}/shares", tag = "hangar", params(("runId" = String, Path, description = "The run")), responses((status = 200, description = "Shares of the run", body = hangar_protocol::share::ListSharesResponse), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> ApiResult<Json<ListSharesResponse>> {
    let principal = manager(&app, &headers).await?;
    let run = app.runs().visible(&principal, &run_id).await?;
    require_access(&app, &principal, &run, Access::View).await?;
    let shares = app.store.list_shares(run.team_id, &run.id).await?;
    Ok(Json(ListSharesResponse {
        shares: shares.iter().map(|s| share_item(s, None)).collect(),
    }))
}

/// `DELETE /agent/runs/{id}/shares/{share_id}` → 204; the streams the grant
/// allowed close within 2 s.
#[utoipa::path(delete, path = "/agent/runs/{runId}/shares/{share_id}", tag = "hangar", params(("runId" = String, Path, description = "The run"), ("share_id" = String, Path, description = "The share")), responses((status = 204, description = "Revoked"), crate::error::ProblemResponses))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((run_id, share_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let principal = manager(&app, &headers).await?;
    let run = app.runs().visible(&principal, &run_id).await?;
    require_access(&app, &principal, &run, Access::Edit)
        .await
        .map_err(only_editors_share)?;
    app.store
        .delete_share(run.team_id, &run.id, &share_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound(format!(
                "run {run_id} has no share `{share_id}`; list them with `hangar run shares {run_id}`"
            )),
            other => other.into(),
        })?;
    app.sessions.shares.changed(&run.id);
    tracing::info!(run_id = %run.id, %share_id, "session share revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /public/sessions/{token}`: the run a public link shows, with nothing
/// beyond title, state and times (no prompt, no configuration).
#[utoipa::path(get, path = "/public/sessions/{token}", tag = "hangar", security(()), params(("token" = String, Path, description = "Public link token")), responses((status = 200, description = "A publicly shared session", body = hangar_protocol::share::PublicSession), crate::error::ProblemResponses))]
pub async fn public_session(
    State(app): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Json<PublicSession>> {
    let (_, run) = public_link(&app, &token).await?;
    Ok(Json(PublicSession {
        run_id: run.id.0.clone(),
        title: run.title.clone(),
        state: run.state,
        created_at: Timestamp::from_unix_millis(run.created_at),
        updated_at: Timestamp::from_unix_millis(run.updated_at),
        started_at: run.started_at.map(Timestamp::from_unix_millis),
        role: ShareRole::View,
        events_url: format!("/api/v1/public/sessions/{token}/events"),
    }))
}

/// `GET /public/sessions/{token}/events`: the run's session as Server-Sent
/// Events, exactly as `/agent/runs/{id}/events` serves it to a viewer (same
/// `follow`, `after` and `Last-Event-ID`); the stream closes with `revoked`
/// within 2 s of the link's revocation.
#[utoipa::path(get, path = "/public/sessions/{token}/events", tag = "hangar", security(()), params(("token" = String, Path, description = "Public link token"), ("follow" = Option<bool>, Query, description = "false: replay and end"), ("after" = Option<String>, Query, description = "Resume after this event id (or send `Last-Event-ID`)")), responses((status = 200, description = "Server-Sent Events: a publicly shared live session", content_type = "text/event-stream"), crate::error::ProblemResponses))]
pub async fn public_events(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    query: QueryResult<viewers::StreamParams>,
    extensions: axum::http::Extensions,
) -> ApiResult<Response> {
    let (_, run) = public_link(&app, &token).await?;
    let query = viewers::parse_query(query, &headers)?;
    let addr = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    let keys = [
        (
            format!("link:{}", hex::encode(crate::auth::hash_secret(&token))),
            crate::rate_limit::PUBLIC_STREAMS_PER_LINK,
        ),
        (
            format!("addr:{addr}"),
            crate::rate_limit::PUBLIC_STREAMS_PER_ADDRESS,
        ),
    ];
    let Some(slot) = app.sessions.public_streams.acquire(&keys) else {
        crate::metrics::get().rate_limited("public_stream");
        let mut resp = ApiError::TooManyRequests(format!(
            "too many open streams of this public link or from your address (at most {} per \
             link and {} per address); close one and retry",
            crate::rate_limit::PUBLIC_STREAMS_PER_LINK,
            crate::rate_limit::PUBLIC_STREAMS_PER_ADDRESS
        ))
        .into_response();
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        return Ok(resp);
    };
    Ok(viewers::event_stream_holding(
        app,
        run,
        viewers::AccessCheck::PublicLink(token),
        query.after,
        query.follow,
        Some(slot),
    ))
}
