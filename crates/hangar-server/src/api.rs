//! REST routes under `/api/v1`, one module per resource.

pub mod agent;
pub mod environments;
pub mod events;
pub mod health;
pub mod keys;
pub mod mcp;
pub mod models;
pub mod run_options;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod shares;
pub mod users;
pub mod whoami;
pub mod worker_tokens;
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
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports an enum given a number or a bool as a syntax
        // error; when the body is valid JSON it is the field's value that is wrong.
        if inner.is_syntax()
            && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
            && !field.is_empty()
            && field != "."
        {
            return ApiError::BadRequest(format!(
                "body field \"{field}\": invalid type, expected a string naming one of the allowed values"
            ));
        }
        json_error(&field, inner)
    })?;
    // Trailing data after the value is a syntax error too.
    de.end().map_err(|e| json_error("", e))?;
    Ok(parsed)
}

/// A body error naming the field (`config.model_id`) when the JSON is valid but a value is not.
fn json_error(field: &str, e: serde_json::Error) -> ApiError {
    let what = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            "the body is not valid JSON".to_owned()
        }
        serde_json::error::Category::Data if field.is_empty() || field == "." => {
            "the body has an invalid field".to_owned()
        }
        serde_json::error::Category::Data => format!("body field \"{field}\""),
        serde_json::error::Category::Io => "the body could not be read".to_owned(),
    };
    ApiError::BadRequest(format!("{what}: {e}"))
}

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/agent/runs", post(runs::create).get(runs::list))
        .route("/agent/run", post(runs::create_legacy))
        .route("/agent/runs/local", post(runs::create_local))
        .route("/agent/runs/{run_id}", get(runs::get_one))
        .route("/agent/runs/{run_id}/cancel", post(runs::cancel))
        .route("/agent/runs/{run_id}/followups", post(runs::followup))
        .route(
            "/agent/runs/{run_id}/shares",
            post(shares::create).get(shares::list),
        )
        .route(
            "/agent/runs/{run_id}/shares/{share_id}",
            axum::routing::delete(shares::delete),
        )
        .route("/public/sessions/{token}", get(shares::public_session))
        .route(
            "/public/sessions/{token}/events",
            get(shares::public_events),
        )
        .route("/agent/models", get(models::list))
        .route("/mcp-servers", get(mcp::list))
        .route("/mcp-servers/{server}", get(mcp::get_one))
        .route("/agent/runs/{run_id}/transcript", get(runs::transcript))
        .route("/agent/runs/{run_id}/environment", get(runs::environment))
        .route(
            "/agent/runs/{run_id}/conversation",
            get(agent::conversation),
        )
        .route("/agent/artifacts/{artifact_uid}", get(agent::artifact))
        .route("/agent/identities", get(agent::identities))
        .route("/agent", get(agent::list_agents))
        .route("/agent/events", get(agent::poll))
        .route(
            "/agent/events/{run_id}",
            get(agent::run_events).post(agent::report),
        )
        .route("/agent/runs/{run_id}/events", get(events::sse))
        .route("/agent/runs/{run_id}/events/ws", get(events::websocket))
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
        .route("/teams", get(users::list_teams))
        .route("/users", post(users::create).get(users::list))
        .route(
            "/users/{user_id}",
            get(users::get_one)
                .patch(users::update)
                .delete(users::delete),
        )
        .route("/workers", get(workers::list))
        .route(
            "/worker-tokens",
            post(worker_tokens::create).get(worker_tokens::list),
        )
        .route(
            "/worker-tokens/{token_id}/expire",
            post(worker_tokens::expire),
        )
        .route("/openapi.json", get(crate::openapi::openapi_json))
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
        .route("/llm/usage", get(crate::llm_gateway::usage))
        .route("/selfhosted/worker/ws", get(crate::gateway::worker_socket))
}
