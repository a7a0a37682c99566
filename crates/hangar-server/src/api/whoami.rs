//! **(extension)** `GET /api/v1/whoami`: who the credential belongs to.

use crate::AppState;
use crate::auth::{Principal, authenticate};
use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

/// Describes the caller's credential, team and user.
#[utoipa::path(get, path = "/whoami", tag = "hangar", responses((status = 200, description = "The caller: team, user, key", body = Object), crate::error::ProblemResponses))]
pub async fn whoami(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let team = app.store.team(principal.team_id()).await?;
    let body = match principal {
        Principal::ApiKey {
            user_id, key_id, ..
        } => {
            let user = match user_id {
                Some(id) => Some(app.store.user(id).await?),
                None => None,
            };
            serde_json::json!({
                "kind": "api_key",
                "key_id": key_id,
                "team": {"id": team.uid, "name": team.name},
                "user": user.map(|u| serde_json::json!({"id": u.uid, "display_name": u.display_name, "role": u.role})),
                "server_url": app.public_url,
            })
        }
        Principal::WebSession { user_id, .. } => {
            let u = app.store.user(user_id).await?;
            serde_json::json!({
                "kind": "web_session",
                "team": {"id": team.uid, "name": team.name},
                "user": {"id": u.uid, "display_name": u.display_name, "role": u.role, "email": u.email},
                "server_url": app.public_url,
            })
        }
        Principal::RunToken {
            run_id,
            execution_id,
            ..
        } => serde_json::json!({
            "kind": "run_token",
            "run_id": run_id,
            "execution_id": execution_id,
            "team": {"id": team.uid, "name": team.name},
            "server_url": app.public_url,
        }),
    };
    Ok(Json(body))
}
