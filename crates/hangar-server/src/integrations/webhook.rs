//! `POST /integrations/<kind>/<id>/events`: the route providers call (it
//! hands Slack, Linear and GitHub events to their modules), and the generic
//! signed webhook (`kind = webhook`).
//!
//! Order matters, and every step before the run is a 4xx that creates
//! nothing: the integration must exist with that kind (404); the signature
//! over the raw body must match and its timestamp be fresh (401, before the
//! body is parsed); the delivery must be new (409: its delivery id and its
//! signature are claimed in the store, so a replay is refused after a
//! restart and on every replica); then the body must be a JSON object the
//! template can read (400). A delivery that cannot start a run is released,
//! so its sender may retry it.

use super::signature::{self, DELIVERY_HEADER, SignatureError};
use super::{SIGNATURE_WINDOW, kind_of, open_secret, template};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::runs::create::Requester;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hangar_protocol::integration::{
    IntegrationKind, IntegrationSettings, RunTrigger, WebhookAccepted,
};
use hangar_protocol::{RunAgentRequest, Timestamp};
use hangar_store::{IntegrationRecord, StoreError};

/// Longest delivery id kept, in bytes.
const MAX_DELIVERY_ID: usize = 200;

/// The prompt when an integration has no `prompt_template`.
pub const DEFAULT_PROMPT_TEMPLATE: &str =
    "A webhook delivered this JSON payload; act on it.\n\n```json\n{{.}}\n```";

/// `POST /integrations/{kind}/{id}/events`.
pub async fn events(
    State(app): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound(format!("no {kind} integration `{id}`"));
    let kind = IntegrationKind::parse(&kind).ok_or_else(not_found)?;
    let record = match app.store.integration_by_id(&id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if kind_of(&record)? != kind {
        return Err(not_found());
    }
    match kind {
        IntegrationKind::Webhook => generic(&app, &record, &headers, &body)
            .await
            .map(IntoResponse::into_response),
        IntegrationKind::Slack => super::slack::events(&app, &record, &headers, &body).await,
        IntegrationKind::Linear => super::linear::events(&app, &record, &headers, &body).await,
        IntegrationKind::Github => super::github::events(&app, &record, &headers, &body).await,
    }
}

fn unauthenticated(e: SignatureError) -> ApiError {
    ApiError::Unauthenticated(format!("webhook refused: {e}"))
}

/// A generic signed webhook: verify, claim, render, create the run.
async fn generic(
    app: &AppState,
    record: &IntegrationRecord,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<(StatusCode, Json<WebhookAccepted>)> {
    let secret = open_secret(app, record)?;
    let now = Timestamp::now().unix_millis();
    let signature = signature::verify_hangar(
        secret.expose().as_bytes(),
        headers,
        body,
        now.div_euclid(1000),
        SIGNATURE_WINDOW,
    )
    .map_err(unauthenticated)?;
    let delivery_id = headers
        .get(DELIVERY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.chars().take(MAX_DELIVERY_ID).collect::<String>());
    let mut keys = vec![format!("sig:{signature}")];
    if let Some(d) = &delivery_id {
        keys.push(format!("id:{d}"));
    }
    if !app.store.claim_delivery(&record.id, &keys, now).await? {
        tracing::info!(integration_id = %record.id, delivery_id = delivery_id.as_deref().unwrap_or("-"), "webhook delivery replayed; refused");
        return Err(ApiError::Conflict(format!(
            "delivery {} was already received; a replay starts no run",
            delivery_id.as_deref().unwrap_or("with this signature")
        )));
    }
    match start_run(app, record, body, delivery_id).await {
        Ok(accepted) => Ok((StatusCode::ACCEPTED, Json(accepted))),
        Err(e) => {
            // Nothing started: the sender may deliver it again.
            if let Err(release) = app.store.release_delivery(&record.id, &keys).await {
                tracing::warn!(integration_id = %record.id, error = %release, "could not release a failed webhook delivery");
            }
            Err(e)
        }
    }
}

/// Reads the payload and starts the run it asks for.
async fn start_run(
    app: &AppState,
    record: &IntegrationRecord,
    body: &Bytes,
    delivery_id: Option<String>,
) -> ApiResult<WebhookAccepted> {
    let payload: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the webhook body is not valid JSON: {e}")))?;
    if !payload.is_object() {
        return Err(ApiError::BadRequest(
            "the webhook body must be a JSON object".into(),
        ));
    }
    let settings: IntegrationSettings = serde_json::from_str(&record.settings).map_err(|e| {
        ApiError::Internal(format!(
            "integration {} settings do not decode: {e}",
            record.id
        ))
    })?;
    let req = run_request(&settings, &payload)?;
    let field = |path: &Option<String>| {
        path.as_deref()
            .and_then(|p| template::lookup(&payload, p))
            .map(template::text)
            .map(|t| t.chars().take(512).collect::<String>())
    };
    let trigger = RunTrigger {
        kind: IntegrationKind::Webhook,
        integration_id: record.id.clone(),
        delivery_id,
        actor: field(&settings.actor_field),
        url: field(&settings.link_field),
    };
    let created = app
        .runs()
        .create(
            Requester {
                team_id: record.team_id,
                user_id: None,
                source: None,
                trigger: Some(&trigger),
            },
            &req,
        )
        .await?;
    tracing::info!(integration_id = %record.id, run_id = %created.run.id, "webhook started a run");
    Ok(WebhookAccepted {
        run_url: format!("{}/runs/{}", app.public_url, created.run.id),
        run_id: created.run.id.0,
    })
}

/// The run a payload asks for: the prompt prefix and the rendered prompt
/// template, the rendered title, and the integration's run configuration.
pub fn run_request(
    settings: &IntegrationSettings,
    payload: &serde_json::Value,
) -> ApiResult<RunAgentRequest> {
    let bad = |what: &str, e: template::TemplateError| {
        ApiError::BadRequest(format!(
            "the integration's {what} cannot use this payload: {e}"
        ))
    };
    let template = settings
        .prompt_template
        .as_deref()
        .unwrap_or(DEFAULT_PROMPT_TEMPLATE);
    let mut prompt = template::render(template, payload).map_err(|e| bad("prompt_template", e))?;
    if let Some(prefix) = settings.prompt_prefix.as_deref().filter(|p| !p.is_empty()) {
        prompt = format!("{prefix}\n\n{prompt}");
    }
    let title = settings
        .title_template
        .as_deref()
        .map(|t| template::render(t, payload).map_err(|e| bad("title_template", e)))
        .transpose()?
        .map(|t| t.chars().take(200).collect::<String>());
    Ok(RunAgentRequest {
        prompt: Some(prompt),
        title,
        config: settings.agent_config.clone(),
        ..RunAgentRequest::default()
    })
}
