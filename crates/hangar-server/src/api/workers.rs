//! `GET /api/v1/workers`: the team's workers connected to any replica, from
//! the shared registry (see [`crate::dispatch::presence`]).

use crate::AppState;
use crate::auth::authenticate;
use crate::dispatch::presence::ListWorkersResponse;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;

/// Lists the team's connected workers; with `?all=true` also those that
/// disconnected or were lost (not heard from within the lost timeout).
#[utoipa::path(get, path = "/workers", tag = "workers",
    params(("all" = Option<bool>, Query, description = "Include disconnected and lost workers")),
    responses((status = 200, description = "Workers of the caller's team on every replica", body = ListWorkersResponse),
        crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<ListWorkersResponse>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let mut all = false;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("all", "true") => all = true,
            ("all", "false") => all = false,
            ("all", other) => {
                return Err(ApiError::BadRequest(format!(
                    "`all` must be true or false, got `{other}`"
                )));
            }
            (other, _) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}`; only `all` is supported"
                )));
            }
        }
    }
    let mut workers = crate::dispatch::presence::list(&app, team).await?;
    if !all {
        workers.retain(|w| w.status == "connected");
    }
    Ok(Json(ListWorkersResponse { workers }))
}
