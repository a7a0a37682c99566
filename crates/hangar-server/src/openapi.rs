//! The OpenAPI document of the REST API, generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types' schemas, served at
//! `GET /api/v1/openapi.json` (no credentials needed: it is the contract).
//!
//! Paths are relative to the server URL `/api/v1`, as in the Oz spec; Oz
//! routes keep the Oz schema names (`RunItem`, `AmbientAgentConfig`,
//! `Error`, …). A snapshot test compares the served document with the
//! committed `tests/snapshots/openapi.json`, and another checks every route
//! of `api.rs` is in it.

use crate::api;
use axum::Json;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`hk_…`), or a run token (`hr_…`) on the routes of its own run; a worker token (`hw_…`) only on the worker socket",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hangar API",
        description = "Hangar's control plane: the Oz Agent API (runs, schedules, environments, \
            models, events, artifacts) plus Hangar's own resources. Errors are RFC 7807 \
            `application/problem+json`. Requests with an API key are rate limited per key and \
            per team (429 with `Retry-After`).",
        license(name = "Apache-2.0")
    ),
    servers((url = "/api/v1", description = "This server")),
    security(("bearerAuth" = [])),
    modifiers(&BearerAuth),
    tags(
        (name = "agent", description = "Oz Agent API: runs and what they produce"),
        (name = "schedules", description = "Oz Agent API: scheduled agents"),
        (name = "hangar", description = "Hangar's own resources"),
        (name = "llm", description = "OpenAI-compatible LLM gateway for agents"),
        (name = "workers", description = "Connected workers"),
        (name = "meta", description = "This document"),
    ),
    paths(
        api::runs::create,
        api::runs::create_legacy,
        api::runs::create_local,
        api::runs::list,
        api::runs::get_one,
        api::runs::cancel,
        api::runs::followup,
        api::runs::transcript,
        api::runs::environment,
        api::agent::conversation,
        api::agent::artifact,
        api::agent::identities,
        api::agent::list_agents,
        api::agent::poll,
        api::agent::run_events,
        api::agent::report,
        api::models::list,
        api::mcp::list,
        api::mcp::get_one,
        api::schedules::create,
        api::schedules::list,
        api::schedules::get_one,
        api::schedules::replace,
        api::schedules::delete,
        api::schedules::pause,
        api::schedules::resume,
        api::environments::oz_list,
        api::environments::create,
        api::environments::list,
        api::environments::get_one,
        api::environments::update,
        api::environments::delete,
        api::secrets::create,
        api::secrets::list,
        api::secrets::update,
        api::secrets::delete,
        api::keys::create,
        api::keys::list,
        api::keys::expire,
        api::workers::list,
        api::worker_tokens::create,
        api::worker_tokens::list,
        api::worker_tokens::expire,
        api::whoami::whoami,
        crate::llm_gateway::chat_completions,
        crate::llm_gateway::models,
        crate::llm_gateway::usage,
        crate::gateway::worker_socket,
        crate::sessions::session_socket,
        api::shares::create,
        api::shares::list,
        api::shares::delete,
        api::shares::public_session,
        api::shares::public_events,
        api::events::sse,
        api::events::websocket,
        api::users::list_teams,
        api::users::list,
        api::users::create,
        api::users::get_one,
        api::users::update,
        api::users::delete,
        openapi_json,
    )
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
            format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}")
        })
    })
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub async fn openapi_json() -> Response {
    let value: serde_json::Value = serde_json::from_str(document()).unwrap_or_default();
    Json(value).into_response()
}
