//! **(extension)** Integrations (`/api/v1/integrations`): the objects that
//! let Slack, Linear, GitHub or any system that can POST a signed webhook
//! start runs, and the trigger a run records about where it came from.
//!
//! Credentials are never part of an integration's settings: the signing
//! secret of the provider's webhooks is write-only ([`SecretString`], sealed
//! at rest by the server), and API tokens are named team secrets
//! (`bot_token_secret`, `token_secret`, …).

use crate::{AgentConfig, SecretString, Timestamp};
use serde::{Deserialize, Serialize};

/// What an integration connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum IntegrationKind {
    /// Slack Events API.
    Slack,
    /// Linear webhooks.
    Linear,
    /// GitHub webhooks.
    Github,
    /// A generic signed webhook: any system that can POST JSON.
    Webhook,
}

impl IntegrationKind {
    /// Every kind.
    pub const ALL: [IntegrationKind; 4] = [
        IntegrationKind::Slack,
        IntegrationKind::Linear,
        IntegrationKind::Github,
        IntegrationKind::Webhook,
    ];

    /// The wire name (also the path segment of its webhook URL).
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::Slack => "slack",
            IntegrationKind::Linear => "linear",
            IntegrationKind::Github => "github",
            IntegrationKind::Webhook => "webhook",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<IntegrationKind> {
        IntegrationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for IntegrationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an integration does with what it receives: the runs it starts
/// (their configuration and prompt) and who may trigger them. Fields that
/// do not apply to the integration's kind are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IntegrationSettings {
    /// Configuration of the runs it starts (model, environment, MCP
    /// servers, skill, `worker_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<AgentConfig>,
    /// Text put before every prompt it builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_prefix: Option<String>,
    /// Slack: channel ids that may trigger runs (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Linear: team keys that may trigger runs (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linear_teams: Vec<String>,
    /// GitHub: `owner/name` repositories that may trigger runs (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// Linear, GitHub: the name a comment mentions to ask the agent
    /// (`@hangar`, without the `@`). Default: `hangar` on GitHub; on Linear,
    /// the API key's user (its display name), who is also the assignee that
    /// starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mention: Option<String>,
    /// GitHub: labels that start a run when added to an issue or pull request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The provider's API (GitHub Enterprise, tests); default: its public API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Slack: the team secret holding the bot token (`xoxb-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token_secret: Option<String>,
    /// Linear: the team secret holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
    /// GitHub: the team secret holding a personal access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// GitHub: the GitHub App's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// GitHub: the team secret holding the GitHub App's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_secret: Option<String>,
    /// Webhook: the prompt, with `{{path.to.field}}` replaced by the values
    /// of the JSON payload (`{{.}}` is the whole payload). Default: the
    /// whole payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// Webhook: the run's title, a template like `prompt_template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_template: Option<String>,
    /// Webhook: the payload field naming who triggered the run (`user.email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_field: Option<String>,
    /// Webhook: the payload field holding a link back to what triggered the
    /// run (`issue.url`); recorded as the run's `trigger_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_field: Option<String>,
}

/// `POST /integrations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateIntegrationRequest {
    /// What it connects to.
    pub kind: IntegrationKind,
    /// Unique name within the team.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub settings: IntegrationSettings,
    /// The secret the provider signs its webhooks with (Slack's signing
    /// secret, the Linear, GitHub or generic webhook secret). Write-only.
    #[serde(serialize_with = "crate::secret::expose")]
    pub secret: SecretString,
}

/// `PUT /integrations/{id}`: replaces name and settings; the secret is
/// replaced only when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateIntegrationRequest {
    /// Unique name within the team.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub settings: IntegrationSettings,
    /// A new webhook secret. Write-only; absent keeps the current one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::secret::expose_option"
    )]
    pub secret: Option<SecretString>,
}

/// An integration as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct IntegrationItem {
    /// Id.
    pub id: String,
    /// What it connects to.
    pub kind: IntegrationKind,
    /// Name.
    pub name: String,
    /// What it does.
    pub settings: IntegrationSettings,
    /// The URL to paste into the provider's webhook settings:
    /// `<public_url>/integrations/<kind>/<id>/events`.
    pub webhook_url: String,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
}

/// `GET /integrations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListIntegrationsResponse {
    /// The team's integrations, by name.
    pub integrations: Vec<IntegrationItem>,
}

/// `POST /integrations/{id}/test`: whether the integration's credentials
/// work against its provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct IntegrationTestResult {
    /// Whether the provider accepted them.
    pub ok: bool,
    /// What was checked and what the provider said (`connected as @hangar
    /// in Acme`), or what is wrong and how to fix it.
    pub detail: String,
}

/// The answer to an accepted webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAccepted {
    /// The run it started.
    pub run_id: String,
    /// Where to watch it.
    pub run_url: String,
}

/// **(extension)** What started a run from outside Hangar: the
/// integration, who triggered it there, and a link back to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunTrigger {
    /// The integration's kind.
    pub kind: IntegrationKind,
    /// The integration's id.
    pub integration_id: String,
    /// The provider's delivery id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// Who triggered it, as the provider names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The thread, issue, comment or page that triggered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
