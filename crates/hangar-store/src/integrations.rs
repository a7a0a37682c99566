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

/// The columns an [`IntegrationThread`] is decoded from.
pub(crate) const THREAD_COLUMNS: &str = "run_id, integration_id, team_id, thread_key, reply_to, \
    status_ref, reported, lease_until, created_at";

/// A run an integration started from a thread (a Slack thread, a Linear
/// issue, a GitHub issue or pull request), and where its replies go.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationThread {
    /// The run.
    pub run_id: String,
    /// The integration that started it.
    pub integration_id: String,
    /// Team of both.
    pub team_id: i64,
    /// The thread, as the integration names it (`C123:1700000000.0001`,
    /// `acme/web#12`, a Linear issue id): a later mention there finds the run.
    pub thread_key: String,
    /// Where replies go (the provider's address of the thread, JSON).
    pub reply_to: String,
    /// The provider's id of the status message edited as the run
    /// progresses (`None` until it is posted).
    pub status_ref: Option<String>,
    /// The run state last reported in the thread (`None`: nothing yet).
    pub reported: Option<String>,
    /// Until when (ms) a replica holds it to post a reply.
    pub lease_until: i64,
    /// Created (ms).
    pub created_at: i64,
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
    /// Records the thread a run was started from (lease 0, nothing reported).
    async fn add_integration_thread(&self, thread: &IntegrationThread) -> StoreResult<()>;
    /// The latest run started from a thread; `None` when none was.
    async fn thread_run(
        &self,
        integration_id: &str,
        thread_key: &str,
    ) -> StoreResult<Option<IntegrationThread>>;
    /// Threads with something to report: their run's state is not the one
    /// last reported, and no replica holds them (lease before `now`); with
    /// that state. At most `limit`, oldest first. Only threads whose run was
    /// not reported ended are looked at, unless `all` (a run reopened from
    /// outside its thread is found then).
    async fn due_integration_threads(
        &self,
        now: i64,
        all: bool,
        limit: i64,
    ) -> StoreResult<Vec<(IntegrationThread, String)>>;
    /// Follows a thread again whose run was reported ended (a follow-up
    /// from the thread reopened it): its next state is reported at once.
    async fn reopen_integration_thread(&self, run_id: &str) -> StoreResult<()>;
    /// Takes a thread to post its reply until `lease_until`, if its lease is
    /// still `seen_lease` (compare and set): `true` for the one replica that
    /// gets it.
    async fn take_integration_thread(
        &self,
        run_id: &str,
        seen_lease: i64,
        lease_until: i64,
    ) -> StoreResult<bool>;
    /// Records what was reported (the state, and the status message's id
    /// once posted) and frees the lease.
    async fn record_integration_reply(
        &self,
        run_id: &str,
        reported: &str,
        status_ref: Option<&str>,
    ) -> StoreResult<()>;
}
