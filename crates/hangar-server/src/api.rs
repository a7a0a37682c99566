//! REST routes under `/api/v1`, one module per resource.

pub mod environments;
pub mod health;
pub mod keys;
pub mod models;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod whoami;
pub mod workers;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

/// Parses a JSON body with an error that says what is wrong and where.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the body is not valid JSON"
            }
            serde_json::error::Category::Data => "the body has an invalid field",
            serde_json::error::Category::Io => "the body could not be read",
        };
        ApiError::BadRequest(format!("{what}: {e}"))
    })
}

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agent/runs", post(runs::create).get(runs::list))
        .route("/agent/run", post(runs::create))
        .route("/agent/runs/local", post(runs::create_local))
        .route("/agent/runs/{run_id}", get(runs::get_one))
        .route("/agent/runs/{run_id}/cancel", post(runs::cancel))
        .route("/agent/runs/{run_id}/followups", post(runs::followup))
        .route("/agent/models", get(models::list))
        .route("/agent/runs/{run_id}/transcript", get(runs::transcript))
        .route(
            "/agent/runs/{run_id}/session",
            get(crate::sessions::session_socket),
        )
        .route(
            "/agent/schedules",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/agent/schedules/{schedule_id}",
            get(schedules::get_one)
                .put(schedules::replace)
                .delete(schedules::delete),
        )
        .route(
            "/agent/schedules/{schedule_id}/pause",
            post(schedules::pause),
        )
        .route(
            "/agent/schedules/{schedule_id}/resume",
            post(schedules::resume),
        )
        .route("/api-keys", post(keys::create).get(keys::list))
        .route("/api-keys/{key_id}/expire", post(keys::expire))
        .route("/workers", get(workers::list))
        .route("/whoami", get(whoami::whoami))
        .route("/agent/environments", get(environments::oz_list))
        .route(
            "/environments",
            post(environments::create).get(environments::list),
        )
        .route(
            "/environments/{env_id}",
            get(environments::get_one)
                .put(environments::update)
                .delete(environments::delete),
        )
        .route("/secrets", post(secrets::create).get(secrets::list))
        .route(
            "/secrets/{name}",
            axum::routing::put(secrets::update).delete(secrets::delete),
        )
        .route(
            "/llm/chat/completions",
            post(crate::llm_gateway::chat_completions),
        )
        .route("/llm/models", get(crate::llm_gateway::models))
        .route("/selfhosted/worker/ws", get(crate::gateway::worker_socket))
}
