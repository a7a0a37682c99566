//! Environments and secrets of the REST API: **(extension)** `/environments`
//! and `/secrets`, plus the Oz `/agent/environments` listing.

use crate::SecretString;
use crate::worker::NetworkPolicy;
use crate::{Scope, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A repository an environment clones into the workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRepo {
    /// Clone URL.
    pub url: String,
    /// Branch, tag or commit.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Name of a team secret holding an HTTPS token for the clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Directory under the workspace (default: the repository name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Create or replace an environment (`POST /environments`, `PUT /environments/{id}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRequest {
    /// Unique name within the team.
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")
    )]
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Image tasks run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// Repositories cloned in order.
    #[serde(default)]
    pub repos: Vec<EnvironmentRepo>,
    /// Setup commands run in order before the agent starts (none blank).
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Vec<NonBlankText>, inline))]
    pub setup_commands: Vec<String>,
    /// Plain environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Team secrets injected as environment variables of the same name.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Egress policy.
    #[serde(default)]
    pub network_policy: NetworkPolicy,
}

/// A stored environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct EnvironmentItem {
    /// Id.
    pub id: String,
    /// Configuration.
    #[serde(flatten)]
    pub spec: EnvironmentRequest,
    /// Creation.
    pub created_at: Timestamp,
    /// Last update.
    pub updated_at: Timestamp,
}

/// `GET /environments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct EnvironmentList {
    /// Environments, by name.
    pub environments: Vec<EnvironmentItem>,
}

/// A GitHub repository in the Oz environment shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct GitHubRepo {
    /// Owner.
    pub owner: String,
    /// Name.
    pub repo: String,
}

/// `CloudEnvironmentConfig` of the Oz API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CloudEnvironmentConfig {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// GitHub repositories (only those with a github.com URL).
    #[serde(default)]
    pub github_repos: Vec<GitHubRepo>,
    /// Setup commands.
    #[serde(default)]
    pub setup_commands: Vec<String>,
}

/// `CloudEnvironment` of the Oz API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CloudEnvironment {
    /// Id.
    pub uid: String,
    /// Configuration.
    pub config: CloudEnvironmentConfig,
    /// Last update.
    pub last_updated: Timestamp,
    /// Whether the latest task failed in setup.
    pub setup_failed: bool,
    /// Ownership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// `GET /agent/environments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListEnvironmentsResponse {
    /// Environments.
    pub environments: Vec<CloudEnvironment>,
}

/// Create a secret (`POST /secrets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    /// Name; also the environment variable it is injected as.
    #[cfg_attr(feature = "utoipa", schema(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Value (write-only).
    #[serde(serialize_with = "crate::secret::expose")]
    #[cfg_attr(
        feature = "utoipa",
        schema(value_type = String, format = Password, write_only, min_length = 1)
    )]
    pub value: SecretString,
}

/// Replace a secret's value (`PUT /secrets/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateSecretRequest {
    /// New value.
    #[serde(serialize_with = "crate::secret::expose")]
    #[cfg_attr(
        feature = "utoipa",
        schema(value_type = String, format = Password, write_only, min_length = 1)
    )]
    pub value: SecretString,
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SecretItem {
    /// Name.
    pub name: String,
    /// Creation.
    pub created_at: Timestamp,
    /// Last update.
    pub updated_at: Timestamp,
}

/// In the OpenAPI document: text with something other than whitespace in it.
#[cfg(feature = "utoipa")]
pub struct NonBlankText;

#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for NonBlankText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .pattern(Some(r"\S"))
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for NonBlankText {}
