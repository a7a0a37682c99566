//! **(extension)** API keys and worker tokens of the REST API (`/api-keys`,
//! `/worker-tokens`): the credentials a team hands out.

use crate::{Timestamp, WorkerId};
use serde::{Deserialize, Serialize};

/// **(extension)** `POST /api-keys` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// Name to recognise the key by.
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: String,
    /// Optional expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A team key that belongs to no user (admins only): it acts as an
    /// admin, and is what an `oz-agent-worker` (which knows no worker
    /// tokens) connects with. Default: a personal key of the caller.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub team: bool,
}

/// **(extension)** An API key; `key` is present only in the creation response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ApiKeyItem {
    /// Key id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Visible prefix, e.g. `hk_AbCd`.
    pub prefix: String,
    /// The full key, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Revocation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

/// **(extension)** `POST /worker-tokens` body: exactly one of `worker_id`
/// and `pool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWorkerTokenRequest {
    /// Name to recognise the token by (default: its binding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub name: Option<String>,
    /// The one worker id (`--worker-id`) the token may connect as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub worker_id: Option<WorkerId>,
    /// A prefix: the token may connect as any worker id starting with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Optional expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// **(extension)** A worker token; `token` is present only in the creation response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WorkerTokenItem {
    /// Token id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Visible prefix, e.g. `hw_AbCd1234`.
    pub prefix: String,
    /// The full token, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The worker id it is bound to (or `pool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub worker_id: Option<WorkerId>,
    /// The worker id prefix it is bound to (or `worker_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Public id of the user who created it (none for a team key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Revocation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
    /// Last time a worker connected with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
}

/// **(extension)** `GET /worker-tokens` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListWorkerTokensResponse {
    /// The team's worker tokens, oldest first (never their secrets).
    pub worker_tokens: Vec<WorkerTokenItem>,
}
