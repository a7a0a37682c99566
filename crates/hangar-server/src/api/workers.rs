//! `GET /api/v1/workers`: the team's connected workers.

use crate::AppState;
use crate::auth::authenticate;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

/// Lists connected workers.
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    Ok(Json(
        serde_json::json!({ "workers": app.dispatcher.workers(team) }),
    ))
}
