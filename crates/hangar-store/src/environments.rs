//! Environments, encrypted secrets, and the environment snapshot stored with each run.
//!
//! The store never sees a secret in clear: the server encrypts values
//! (AES-256-GCM under its master key) before they get here.

use crate::StoreResult;
use async_trait::async_trait;
use hangar_protocol::RunId;

/// An environment as stored: its configuration is a JSON document
/// (`hangar_protocol::environment::EnvironmentRequest`).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentRecord {
    /// Id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Unique name within the team.
    pub name: String,
    /// Configuration (JSON).
    pub spec: String,
    /// Creation (ms).
    pub created_at: i64,
    /// Last update (ms).
    pub updated_at: i64,
}

/// An encrypted secret.
#[derive(Clone, PartialEq)]
pub struct SecretRecord {
    /// Team.
    pub team_id: i64,
    /// Name.
    pub name: String,
    /// AES-GCM nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext with tag.
    pub ciphertext: Vec<u8>,
    /// Creation (ms).
    pub created_at: i64,
    /// Last update (ms).
    pub updated_at: i64,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("team_id", &self.team_id)
            .field("name", &self.name)
            .finish()
    }
}

/// Environments and the per-run snapshot of the one a run uses.
#[async_trait]
pub trait EnvironmentStore: Send + Sync {
    /// Creates an environment; `Conflict` when the team already has that name.
    async fn create_environment(&self, env: EnvironmentRecord) -> StoreResult<EnvironmentRecord>;
    /// An environment of a team, by id or by name.
    async fn environment(&self, team_id: i64, id_or_name: &str) -> StoreResult<EnvironmentRecord>;
    /// Every environment of a team, by name.
    async fn list_environments(&self, team_id: i64) -> StoreResult<Vec<EnvironmentRecord>>;
    /// Replaces name and configuration; `NotFound`, or `Conflict` on a name clash.
    async fn update_environment(&self, env: EnvironmentRecord) -> StoreResult<EnvironmentRecord>;
    /// Deletes an environment of a team.
    async fn delete_environment(&self, team_id: i64, id: &str) -> StoreResult<()>;
    /// Stores the environment snapshot (JSON) a run was created with.
    async fn save_run_environment(&self, run: &RunId, spec: &str) -> StoreResult<()>;
    /// The environment snapshot of a run, if it has one.
    async fn run_environment(&self, run: &RunId) -> StoreResult<Option<String>>;
}

/// Encrypted team secrets.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Creates a secret; `Conflict` when the name exists.
    async fn create_secret(&self, secret: SecretRecord) -> StoreResult<()>;
    /// Replaces a secret's value; `NotFound` when it does not exist.
    async fn update_secret(&self, secret: SecretRecord) -> StoreResult<()>;
    /// A secret of a team.
    async fn secret(&self, team_id: i64, name: &str) -> StoreResult<Option<SecretRecord>>;
    /// A team's secrets (with ciphertext; the API shows names only).
    async fn list_secrets(&self, team_id: i64) -> StoreResult<Vec<SecretRecord>>;
    /// Deletes a secret; `NotFound` when it does not exist.
    async fn delete_secret(&self, team_id: i64, name: &str) -> StoreResult<()>;
}
