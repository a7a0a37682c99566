//! Integrations (Slack, Linear, GitHub, generic webhooks) and the webhook
//! deliveries they accepted.
//!
//! The store never sees a webhook secret in clear: the server seals it
//! (AES-256-GCM under its master key) before it gets here.

use crate::StoreResult;
use async_trait::async_trait;

/// The columns an [`IntegrationRecord`] is decoded from.
pub(crate) const INTEGRATION_COLUMNS: &str = "id, team_id, kind, name, settings, secret_nonce, \
    secret_ciphertext, created_by, created_at, updated_at";

/// An integration as stored.
#[derive(Clone, PartialEq)]
pub struct IntegrationRecord {
    /// Id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// `slack`, `linear`, `github` or `webhook`.
    pub kind: String,
    /// Unique name within the team.
    pub name: String,
    /// Settings (JSON, no credentials).
    pub settings: String,
    /// AES-GCM nonce of the webhook secret.
    pub secret_nonce: Vec<u8>,
    /// The webhook secret, sealed.
    pub secret_ciphertext: Vec<u8>,
    /// The user who created it.
    pub created_by: Option<i64>,
    /// Creation (ms).
    pub created_at: i64,
    /// Last update (ms).
    pub updated_at: i64,
}

impl std::fmt::Debug for IntegrationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationRecord")
            .field("id", &self.id)
            .field("team_id", &self.team_id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Integrations and their accepted deliveries.
#[async_trait]
pub trait IntegrationStore: Send + Sync {
    /// Creates an integration; `Conflict` when the team already has that name.
    async fn create_integration(&self, integration: IntegrationRecord) -> StoreResult<()>;
    /// An integration of a team, by id or by name; `NotFound`.
    async fn integration(&self, team_id: i64, id_or_name: &str) -> StoreResult<IntegrationRecord>;
    /// An integration by id, whatever its team (its webhook route, which
    /// the provider calls without credentials); `NotFound`.
    async fn integration_by_id(&self, id: &str) -> StoreResult<IntegrationRecord>;
    /// A team's integrations, by name.
    async fn list_integrations(&self, team_id: i64) -> StoreResult<Vec<IntegrationRecord>>;
    /// Replaces name, settings and sealed secret; `NotFound`, or `Conflict`
    /// on a name clash.
    async fn update_integration(&self, integration: IntegrationRecord) -> StoreResult<()>;
    /// Deletes an integration of a team (and its delivery log); `NotFound`.
    async fn delete_integration(&self, team_id: i64, id: &str) -> StoreResult<()>;
    /// Records a delivery under every one of its `keys`, in one
    /// transaction: `true` when none was recorded before (the delivery is
    /// new), `false` (and nothing recorded) when any was (a replay).
    async fn claim_delivery(
        &self,
        integration_id: &str,
        keys: &[String],
        at: i64,
    ) -> StoreResult<bool>;
    /// Forgets a delivery's keys (it was claimed but could not start a run,
    /// so the provider may send it again).
    async fn release_delivery(&self, integration_id: &str, keys: &[String]) -> StoreResult<()>;
    /// Forgets deliveries received before `before` (older than any replay
    /// the signature's time window accepts); returns how many.
    async fn prune_deliveries(&self, before: i64) -> StoreResult<u64>;
}
