//! **(extension)** Outbound webhooks (`/api/v1/webhooks`): a team's
//! subscriptions to run lifecycle events (the event types of
//! `/agent/events`), each delivery signed with the subscription's secret
//! and logged.

use crate::{SecretString, Timestamp};
use serde::{Deserialize, Serialize};

/// `POST /webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are posted (http or https; no loopback, link-local,
    /// private or metadata address unless the server allows it).
    pub url: String,
    /// Lifecycle event types to send (`run_queued`, `run_succeeded`, …);
    /// every type when empty or absent.
    #[serde(default)]
    pub event_types: Vec<String>,
}

/// A subscription (never its secret, except once in [`WebhookCreated`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookItem {
    /// Id.
    pub id: String,
    /// Target URL.
    pub url: String,
    /// Event types sent (all when empty).
    pub event_types: Vec<String>,
    /// Created.
    pub created_at: Timestamp,
}

/// The answer to `POST /webhooks`: the subscription and its signing
/// secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookCreated {
    /// The subscription.
    #[serde(flatten)]
    pub webhook: WebhookItem,
    /// The secret deliveries are signed with (`X-Hangar-Signature`); shown once.
    #[serde(serialize_with = "crate::secret::expose")]
    pub secret: SecretString,
}

/// `GET /webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListWebhooksResponse {
    /// The team's subscriptions, oldest first.
    pub webhooks: Vec<WebhookItem>,
}

/// One delivery in a subscription's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookDeliveryItem {
    /// Id (the `X-Hangar-Delivery` header).
    pub id: String,
    /// Lifecycle event type.
    pub event_type: String,
    /// The event's lifecycle sequence.
    pub sequence: i64,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The last answer's HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<i64>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt is due (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// Enqueued.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListWebhookDeliveriesResponse {
    /// Newest first.
    pub deliveries: Vec<WebhookDeliveryItem>,
}
