//! The OpenAPI document of the REST API, generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types' schemas, served at
//! `GET /api/v1/openapi.json` (no credentials needed: it is the contract).
//!
//! Paths are relative to the server URL `/api/v1`, as in the Oz spec; Oz
//! routes keep the Oz schema names (`RunItem`, `AmbientAgentConfig`,
//! `Error`, …). A snapshot test compares the served document with the
//! committed `tests/snapshots/openapi.json`. The paths come from the router
//! itself ([`api::openapi_router`]), so a route cannot go undocumented.

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
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, doc) = api::openapi_router().split_for_parts();
        let mut value = serde_json::to_value(&doc).unwrap_or_default();
        merge_closed_flattens(&mut value);
        require_prompt_or_skill(&mut value);
        only_this_team(&mut value);
        metadata_filters_as_deep_object(&mut value);
        serde_json::to_string_pretty(&value).unwrap_or_else(|e| {
            format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}")
        })
    })
}

/// A run needs a task: a non-blank `prompt`, or a skill (`skill`, or
/// `config.skill_spec`) whose instructions are the task. No field attribute
/// can say "one of these", so `RunAgentRequest` gets the rule as `anyOf`.
fn require_prompt_or_skill(doc: &mut serde_json::Value) {
    let non_blank = || serde_json::json!({"type": "string", "pattern": "\\S"});
    let Some(schema) = doc
        .pointer_mut("/components/schemas/RunAgentRequest")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    schema.insert(
        "anyOf".to_owned(),
        serde_json::json!([
            {"required": ["prompt"], "properties": {"prompt": non_blank()}},
            {"required": ["skill"], "properties": {"skill": non_blank()}},
            {
                "required": ["config"],
                "properties": {"config": {
                    "type": "object",
                    "required": ["skill_spec"],
                    "properties": {"skill_spec": non_blank()}
                }}
            }
        ]),
    );
}

/// `team` on run and schedule requests may only be `true` (or absent):
/// everything belongs to the API key's team. (An API key's own `team` flag
/// is a real choice and keeps both values.)
fn only_this_team(doc: &mut serde_json::Value) {
    for schema in ["RunAgentRequest", "CreateScheduledAgentRequest"] {
        if let Some(team) = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties/team"))
            .and_then(serde_json::Value::as_object_mut)
        {
            team.insert("enum".to_owned(), serde_json::json!([true, null]));
        }
    }
}

/// The runs list's `metadata[KEY]=VALUE` filters are one deep-object query
/// parameter: up to 5 keys of 1-64 letters, digits, `.`, `_` and `-`.
fn metadata_filters_as_deep_object(doc: &mut serde_json::Value) {
    let Some(params) = doc
        .pointer_mut("/paths/~1agent~1runs/get/parameters")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for param in params {
        if param["name"] == "metadata" {
            param["style"] = "deepObject".into();
            param["explode"] = true.into();
            param["schema"] = serde_json::json!({
                "type": "object",
                "maxProperties": crate::runs::options::MAX_METADATA_FILTERS,
                "propertyNames": {"pattern": "^[A-Za-z0-9._-]{1,64}$"},
                "additionalProperties": {"type": "string"}
            });
        }
    }
}

/// A type that flattens a closed one (`#[serde(flatten)]` of a struct with
/// `deny_unknown_fields`, such as `EnvironmentItem` over
/// `EnvironmentRequest`) comes out of utoipa as `allOf: [closed, extra]`,
/// which no value can satisfy: the closed part forbids the extra fields.
/// Such a schema becomes one object with the properties and required
/// fields of both (and no `additionalProperties` limit).
fn merge_closed_flattens(doc: &mut serde_json::Value) {
    use serde_json::{Map, Value};
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let snapshot = schemas.clone();
    let closed = |v: &Value| -> Option<Value> {
        let name = v.get("$ref")?.as_str()?.rsplit('/').next()?;
        let target = snapshot.get(name)?;
        (target.get("additionalProperties") == Some(&Value::Bool(false))).then(|| target.clone())
    };
    for schema in schemas.values_mut() {
        let Some(parts) = schema.get("allOf").and_then(Value::as_array).cloned() else {
            continue;
        };
        if !parts.iter().any(|p| closed(p).is_some()) {
            continue;
        }
        let mut properties = Map::new();
        let mut required: Vec<Value> = Vec::new();
        for part in &parts {
            let part = closed(part).unwrap_or_else(|| part.clone());
            if let Some(props) = part.get("properties").and_then(Value::as_object) {
                properties.extend(props.clone());
            }
            if let Some(req) = part.get("required").and_then(Value::as_array) {
                required.extend(req.iter().cloned());
            }
        }
        let mut merged = Map::new();
        merged.insert("type".into(), Value::from("object"));
        if let Some(d) = schema.get("description") {
            merged.insert("description".into(), d.clone());
        }
        merged.insert("properties".into(), Value::Object(properties));
        merged.insert("required".into(), Value::Array(required));
        *schema = Value::Object(merged);
    }
}

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub async fn openapi_json() -> Response {
    let value: serde_json::Value = serde_json::from_str(document()).unwrap_or_default();
    Json(value).into_response()
}
