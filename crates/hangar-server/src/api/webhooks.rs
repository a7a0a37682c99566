//! **(extension)** `/webhooks`: outbound webhook subscriptions of the team
//! and their delivery logs (see [`crate::webhooks`]). Admins create and
//! delete them, send a delivery again and send a test (`ping`); any key of
//! the team reads them.
//! The signing secret is shown once, in the answer to its creation.

use crate::AppState;
use crate::api::{QueryResult, parse_json, read_query};
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::webhooks::{check_target_host, check_url, sealed_name};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::webhook::{
    CreateWebhookRequest, ListWebhookDeliveriesResponse, ListWebhooksResponse, WebhookCreated,
    WebhookDeliveryItem, WebhookItem,
};
use hangar_protocol::{SecretString, Timestamp};
use hangar_store::{StoreError, WebhookDeliveryRecord, WebhookRecord};
use rand::RngCore;

/// Most subscriptions per team.
pub const MAX_WEBHOOKS: usize = 50;
/// Most event types per subscription.
pub const MAX_EVENT_TYPES: usize = 32;

fn item(r: &WebhookRecord) -> WebhookItem {
    WebhookItem {
        id: r.id.clone(),
        url: r.url.clone(),
        event_types: serde_json::from_str(&r.event_types).unwrap_or_default(),
        created_at: Timestamp::from_unix_millis(r.created_at),
    }
}

fn delivery(d: &WebhookDeliveryRecord) -> WebhookDeliveryItem {
    WebhookDeliveryItem {
        id: d.id.clone(),
        event_type: d.event_type.clone(),
        sequence: d.sequence,
        state: d.state.clone(),
        attempts: d.attempts,
        response_code: d.last_status,
        error: d.last_error.clone(),
        next_attempt_at: (d.state == "pending")
            .then(|| Timestamp::from_unix_millis(d.next_attempt_at)),
        created_at: Timestamp::from_unix_millis(d.created_at),
        updated_at: Timestamp::from_unix_millis(d.updated_at),
    }
}

fn not_found(id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(format!("webhook `{id}` does not exist")),
        other => other.into(),
    }
}

fn check_event_types(types: &[String]) -> ApiResult<()> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(ApiError::BadRequest(format!(
            "`event_types` takes at most {MAX_EVENT_TYPES} entries"
        )));
    }
    for t in types {
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "`event_types` entry `{t}` is not a lifecycle event type (`run_queued`, \
                 `run_succeeded`, `run_failed`, … as in `/agent/events`)"
            )));
        }
    }
    Ok(())
}

/// `POST /webhooks`: the answer holds the signing secret, this once.
#[utoipa::path(post, path = "/webhooks", tag = "hangar", request_body = hangar_protocol::webhook::CreateWebhookRequest, responses((status = 200, description = "Created; `secret` is shown only here", body = hangar_protocol::webhook::WebhookCreated), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookCreated>> {
    let who = authenticate(app.store.as_ref(), &headers).await?;
    let (team, user) = who.require_api_key()?;
    crate::auth::roles::require_admin(&app, &who, "create webhooks").await?;
    let req: CreateWebhookRequest = parse_json(&body)?;
    let url = check_url(req.url.trim()).map_err(ApiError::BadRequest)?;
    check_target_host(&url, app.config.webhooks.allow_internal_targets)
        .map_err(ApiError::BadRequest)?;
    check_event_types(&req.event_types)?;
    if app.store.list_webhooks(team).await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::Conflict(format!(
            "the team has {MAX_WEBHOOKS} webhooks already; delete one first"
        )));
    }
    let id = hangar_protocol::RunId::generate().0;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = SecretString::new(format!("whsec_{}", hex::encode(raw)));
    let (nonce, ciphertext) = app
        .secrets
        .seal(team, &sealed_name(&id), secret.expose())
        .ok_or_else(|| ApiError::Internal("could not encrypt the webhook secret".into()))?;
    let record = app
        .store
        .create_webhook(WebhookRecord {
            id,
            team_id: team,
            url: url.to_string(),
            event_types: serde_json::to_string(&req.event_types)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            secret_nonce: nonce,
            secret_ciphertext: ciphertext,
            cursor: 0,
            created_by: user,
            created_at: Timestamp::now().unix_millis(),
        })
        .await?;
    tracing::info!(webhook_id = %record.id, team_id = team, "webhook created");
    Ok(Json(WebhookCreated {
        webhook: item(&record),
        secret,
    }))
}

/// `GET /webhooks`.
#[utoipa::path(get, path = "/webhooks", tag = "hangar", responses((status = 200, description = "Subscriptions (no secrets)", body = hangar_protocol::webhook::ListWebhooksResponse), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ListWebhooksResponse>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let hooks = app.store.list_webhooks(team).await?;
    Ok(Json(ListWebhooksResponse {
        webhooks: hooks.iter().map(item).collect(),
    }))
}

/// `GET /webhooks/{webhook_id}`.
#[utoipa::path(get, path = "/webhooks/{webhook_id}", tag = "hangar", params(("webhook_id" = String, Path, description = "Id")), responses((status = 200, description = "The subscription", body = hangar_protocol::webhook::WebhookItem), crate::error::ProblemResponses))]
pub async fn get_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookItem>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let hook = app.store.webhook(team, &id).await.map_err(not_found(&id))?;
    Ok(Json(item(&hook)))
}

/// `DELETE /webhooks/{webhook_id}`: no delivery is sent after this.
#[utoipa::path(delete, path = "/webhooks/{webhook_id}", tag = "hangar", params(("webhook_id" = String, Path, description = "Id")), responses((status = 200, description = "Deleted", body = Object), crate::error::ProblemResponses))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "delete webhooks").await?;
    app.store
        .delete_webhook(team, &id)
        .await
        .map_err(not_found(&id))?;
    tracing::info!(webhook_id = %id, team_id = team, "webhook deleted");
    Ok(Json(serde_json::json!({ "id": id, "deleted": true })))
}

/// Query of `GET /webhooks/{webhook_id}/deliveries`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveriesQuery {
    /// 1–500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// `GET /webhooks/{webhook_id}/deliveries`: the delivery log, newest first.
#[utoipa::path(get, path = "/webhooks/{webhook_id}/deliveries", tag = "hangar", params(("webhook_id" = String, Path, description = "Id"), ListDeliveriesQuery), responses((status = 200, description = "Deliveries", body = hangar_protocol::webhook::ListWebhookDeliveriesResponse), crate::error::ProblemResponses))]
pub async fn deliveries(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: QueryResult<ListDeliveriesQuery>,
) -> ApiResult<Json<ListWebhookDeliveriesResponse>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let q = read_query(query, "this route takes `limit`")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be from 1 to 500, got {limit}"
        )));
    }
    let log = app
        .store
        .list_webhook_deliveries(team, &id, limit)
        .await
        .map_err(not_found(&id))?;
    Ok(Json(ListWebhookDeliveriesResponse {
        deliveries: log.iter().map(delivery).collect(),
    }))
}

/// `POST /webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver`: sends
/// a delivery again (same id and body), retried for another window.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", tag = "hangar", params(("webhook_id" = String, Path, description = "Id"), ("delivery_id" = String, Path, description = "Delivery id")), responses((status = 200, description = "Queued again", body = hangar_protocol::webhook::WebhookDeliveryItem), crate::error::ProblemResponses))]
pub async fn redeliver(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Json<WebhookDeliveryItem>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "redeliver webhooks").await?;
    let now = Timestamp::now().unix_millis();
    let window = i64::try_from(app.config.webhooks.retry_window.as_millis()).unwrap_or(i64::MAX);
    let d = app
        .store
        .redeliver_webhook_delivery(team, &id, &delivery_id, now, now.saturating_add(window))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => {
                ApiError::NotFound(format!("webhook `{id}` has no delivery `{delivery_id}`"))
            }
            other => other.into(),
        })?;
    tracing::info!(webhook_id = %id, delivery_id = %delivery_id, "webhook delivery queued again");
    Ok(Json(delivery(&d)))
}

/// `POST /webhooks/{webhook_id}/test`: enqueues a signed `ping` delivery
/// (`X-Hangar-Event: ping`) through the outbox, so it is sent, retried and
/// logged like the lifecycle events; its `sequence` is negative.
#[utoipa::path(post, path = "/webhooks/{webhook_id}/test", tag = "hangar", params(("webhook_id" = String, Path, description = "Id")), responses((status = 200, description = "The test delivery, queued", body = hangar_protocol::webhook::WebhookDeliveryItem), crate::error::ProblemResponses))]
pub async fn send_test(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookDeliveryItem>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "test webhooks").await?;
    let d = crate::webhooks::enqueue_ping(&app, team, &id)
        .await
        .map_err(not_found(&id))?;
    tracing::info!(webhook_id = %id, delivery_id = %d.id, "webhook test delivery queued");
    Ok(Json(delivery(&d)))
}
