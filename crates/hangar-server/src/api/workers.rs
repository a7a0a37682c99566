//! `GET /api/v1/workers`: the team's workers connected to any replica, from
//! the shared registry (see [`crate::dispatch::presence`]).

use crate::AppState;
use crate::api::{QueryResult, read_query};
use crate::auth::authenticate;
use crate::dispatch::presence::ListWorkersResponse;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

/// Query of `GET /workers`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListWorkersQuery {
    /// Include disconnected and lost workers
    #[param(value_type = Option<bool>)]
    pub all: Option<String>,
}

impl ListWorkersQuery {
    /// Whether disconnected and lost workers are listed too.
    fn all(&self) -> ApiResult<bool> {
        match self.all.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "`all` must be true or false, got `{other}`"
            ))),
        }
    }
}

/// Lists the team's connected workers; with `?all=true` also those that
/// disconnected or were lost (not heard from within the lost timeout).
#[utoipa::path(get, path = "/workers", tag = "workers",
    params(ListWorkersQuery),
    responses((status = 200, description = "Workers of the caller's team on every replica", body = ListWorkersResponse),
        crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: QueryResult<ListWorkersQuery>,
) -> ApiResult<Json<ListWorkersResponse>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let all = read_query(query, "only `all` is supported")?.all()?;
    let mut workers = crate::dispatch::presence::list(&app, team).await?;
    if !all {
        workers.retain(|w| w.status == "connected");
    }
    Ok(Json(ListWorkersResponse { workers }))
}
