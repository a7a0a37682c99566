//! `GET /agent/models`: the models of the configured providers, in the Oz shape.

use crate::AppState;
use crate::auth::authenticate;
use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use hangar_llm::ProviderKind;

fn provider_label(app: &AppState, provider: &str) -> &'static str {
    let kind = app
        .config
        .providers
        .get(provider)
        .map(|p| (p.kind, p.base_url.clone()));
    match (provider, kind) {
        (_, Some((ProviderKind::Anthropic, _))) | ("anthropic", None) => "ANTHROPIC",
        (_, Some((ProviderKind::Openai, None))) | ("openai", None) => "OPENAI",
        (_, Some((ProviderKind::Openai, Some(url)))) if url.contains("api.openai.com") => "OPENAI",
        _ => "UNKNOWN",
    }
}

/// Lists models: every advertised model of every provider, plus the default.
#[utoipa::path(get, path = "/agent/models", tag = "agent", operation_id = "listModels", responses((status = 200, description = "Models of the configured providers", body = Object), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let mut entries = app.llm.providers.models();
    if let Some(default) = &app.llm.default_model
        && !entries.iter().any(|e| &e.id == default)
        && let Some((provider, _)) = default.split_once('/')
    {
        entries.insert(
            0,
            hangar_protocol::llm::ModelEntry {
                id: default.clone(),
                provider: provider.to_owned(),
            },
        );
    }
    let models: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "display_name": e.id.split_once('/').map(|(_, m)| m).unwrap_or(&e.id),
                "provider": provider_label(&app, &e.provider),
                "vision_supported": false,
                "description": format!("via provider `{}`", e.provider),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "default_model_id": app.llm.default_model.clone().unwrap_or_default(),
        "models": models,
    })))
}
