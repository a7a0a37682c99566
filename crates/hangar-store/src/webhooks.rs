//! Outbound webhooks: a team's subscriptions to run lifecycle events and
//! the outbox of their deliveries (see the `0017_webhooks` migration).
//!
//! The server turns a team's lifecycle events into deliveries
//! ([`WebhookStore::enqueue_webhook_deliveries`], which moves the
//! subscription's cursor only if no other replica moved it first), then
//! sends the due ones, each taken by one replica at a time
//! ([`WebhookStore::take_webhook_delivery`]), and records every attempt.

use crate::StoreResult;
use async_trait::async_trait;

/// The columns a [`WebhookRecord`] is decoded from.
pub(crate) const WEBHOOK_COLUMNS: &str = "id, team_id, url, event_types, secret_nonce, secret_ciphertext, event_cursor, created_by, created_at";
/// The columns a [`WebhookDeliveryRecord`] is decoded from.
pub(crate) const DELIVERY_COLUMNS: &str = "id, webhook_id, team_id, event_type, sequence, payload, \
    state, attempts, last_status, last_error, next_attempt_at, retry_until, created_at, updated_at";

/// A subscription as stored.
#[derive(Clone, PartialEq)]
pub struct WebhookRecord {
    /// Id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Where deliveries are posted.
    pub url: String,
    /// The event types it wants (JSON array; empty: all).
    pub event_types: String,
    /// AES-GCM nonce of the signing secret.
    pub secret_nonce: Vec<u8>,
    /// The signing secret, sealed.
    pub secret_ciphertext: Vec<u8>,
    /// The last lifecycle sequence of the team already enqueued (on
    /// creation: the team's latest, so only later events are sent).
    pub cursor: i64,
    /// Its creator.
    pub created_by: Option<i64>,
    /// Creation (ms).
    pub created_at: i64,
}

impl std::fmt::Debug for WebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRecord")
            .field("id", &self.id)
            .field("team_id", &self.team_id)
            .field("url", &self.url)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// A delivery to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWebhookDelivery {
    /// Id (also sent as the delivery id).
    pub id: String,
    /// Lifecycle event type.
    pub event_type: String,
    /// Its lifecycle sequence.
    pub sequence: i64,
    /// The JSON body to send.
    pub payload: String,
    /// When it was enqueued (ms); also its first attempt.
    pub created_at: i64,
    /// Until when it is retried (ms).
    pub retry_until: i64,
}

/// A delivery and its log.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDeliveryRecord {
    /// Id.
    pub id: String,
    /// Subscription.
    pub webhook_id: String,
    /// Team.
    pub team_id: i64,
    /// Lifecycle event type.
    pub event_type: String,
    /// Lifecycle sequence.
    pub sequence: i64,
    /// The JSON body.
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The last answer's HTTP status.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (ms).
    pub next_attempt_at: i64,
    /// Until when it is retried (ms).
    pub retry_until: i64,
    /// Enqueued (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
}

/// What one attempt changed.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttempt {
    /// The state after it.
    pub state: String,
    /// The receiver's status, if it answered.
    pub status: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// When the next attempt is due (ms), if pending.
    pub next_attempt_at: i64,
    /// When it happened (ms).
    pub at: i64,
}

/// Outbound webhook subscriptions and their deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Creates a subscription whose cursor is the team's latest lifecycle
    /// sequence (the record's `cursor` is ignored); returns it as stored.
    async fn create_webhook(&self, webhook: WebhookRecord) -> StoreResult<WebhookRecord>;
    /// A subscription of a team; `NotFound`.
    async fn webhook(&self, team_id: i64, id: &str) -> StoreResult<WebhookRecord>;
    /// A team's subscriptions, oldest first.
    async fn list_webhooks(&self, team_id: i64) -> StoreResult<Vec<WebhookRecord>>;
    /// Every subscription of every team (the server's fan-out).
    async fn all_webhooks(&self) -> StoreResult<Vec<WebhookRecord>>;
    /// Deletes a subscription and its deliveries; `NotFound`.
    async fn delete_webhook(&self, team_id: i64, id: &str) -> StoreResult<()>;
    /// Stores deliveries and moves the cursor from `from` to `to`, in one
    /// transaction, only if the cursor is still `from`; `false` (nothing
    /// stored) when another replica moved it first.
    async fn enqueue_webhook_deliveries(
        &self,
        webhook_id: &str,
        from: i64,
        to: i64,
        deliveries: &[NewWebhookDelivery],
    ) -> StoreResult<bool>;
    /// Pending deliveries due at `now`, soonest first.
    async fn due_webhook_deliveries(
        &self,
        now: i64,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDeliveryRecord>>;
    /// Takes a due delivery for one attempt by moving its next attempt to
    /// `lease_until`: `true` for exactly one caller.
    async fn take_webhook_delivery(
        &self,
        id: &str,
        seen_next_attempt_at: i64,
        lease_until: i64,
    ) -> StoreResult<bool>;
    /// Records an attempt (one more of them).
    async fn record_webhook_attempt(&self, id: &str, attempt: &WebhookAttempt) -> StoreResult<()>;
    /// A subscription's deliveries, newest first; `NotFound` for another
    /// team's subscription.
    async fn list_webhook_deliveries(
        &self,
        team_id: i64,
        webhook_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDeliveryRecord>>;
    /// Sends a delivery again: pending, due at `now`, retried until
    /// `retry_until`; `NotFound`.
    async fn redeliver_webhook_delivery(
        &self,
        team_id: i64,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
        retry_until: i64,
    ) -> StoreResult<WebhookDeliveryRecord>;
    /// Enqueues a delivery that is no lifecycle event (a `ping` that tests
    /// the receiver) for a team's subscription, through the same outbox and
    /// log. Its sequence is negative, one below the subscription's lowest
    /// (-1, -2, …), so it never takes a lifecycle event's place (the
    /// `delivery`'s own `sequence` is ignored); `NotFound`.
    async fn enqueue_webhook_ping(
        &self,
        team_id: i64,
        webhook_id: &str,
        delivery: &NewWebhookDelivery,
    ) -> StoreResult<WebhookDeliveryRecord>;
}
