//! Run resources of the REST API (`/api/v1/agent/runs`), shaped after the Oz Agent API.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// State of a run. Names and meanings come from the Oz API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    /// Waiting for a worker.
    Queued,
    /// Being prepared.
    Pending,
    /// A worker accepted the assignment.
    Claimed,
    /// The sandbox is ready and the agent is working.
    #[serde(rename = "INPROGRESS")]
    InProgress,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully because of the task (agent failure, setup failure, …).
    Failed,
    /// Waiting for a person.
    Blocked,
    /// Finished because of the platform (infrastructure, lost worker, …).
    Error,
    /// Cancelled by a user.
    Cancelled,
}

impl RunState {
    /// Every state, in lifecycle order.
    pub const ALL: [RunState; 9] = [
        RunState::Queued,
        RunState::Pending,
        RunState::Claimed,
        RunState::InProgress,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Blocked,
        RunState::Error,
        RunState::Cancelled,
    ];

    /// Terminal states never reopen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Error | RunState::Cancelled
        )
    }

    /// The wire name, e.g. `INPROGRESS`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "QUEUED",
            RunState::Pending => "PENDING",
            RunState::Claimed => "CLAIMED",
            RunState::InProgress => "INPROGRESS",
            RunState::Succeeded => "SUCCEEDED",
            RunState::Failed => "FAILED",
            RunState::Blocked => "BLOCKED",
            RunState::Error => "ERROR",
            RunState::Cancelled => "CANCELLED",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What created a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunSourceType {
    /// Linear integration.
    Linear,
    /// REST API.
    Api,
    /// Slack integration.
    Slack,
    /// An unmanaged local `agent run`.
    Local,
    /// A schedule.
    ScheduledAgent,
    /// The dashboard.
    WebApp,
    /// A GitHub Action (`action.yml`).
    GithubAction,
    /// A GitHub webhook: a comment or label on an issue or pull request
    /// (the newer Oz value).
    GithubWebhook,
    /// Cloud mode.
    CloudMode,
    /// The CLI.
    Cli,
    /// **(extension)** A generic signed webhook (`/integrations/webhook/…`).
    Webhook,
}

impl RunSourceType {
    /// Every source, in the order lists show them.
    pub const ALL: [RunSourceType; 11] = [
        RunSourceType::Api,
        RunSourceType::Cli,
        RunSourceType::WebApp,
        RunSourceType::ScheduledAgent,
        RunSourceType::Local,
        RunSourceType::Slack,
        RunSourceType::Linear,
        RunSourceType::GithubAction,
        RunSourceType::GithubWebhook,
        RunSourceType::CloudMode,
        RunSourceType::Webhook,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunSourceType::Linear => "LINEAR",
            RunSourceType::Api => "API",
            RunSourceType::Slack => "SLACK",
            RunSourceType::Local => "LOCAL",
            RunSourceType::ScheduledAgent => "SCHEDULED_AGENT",
            RunSourceType::WebApp => "WEB_APP",
            RunSourceType::GithubAction => "GITHUB_ACTION",
            RunSourceType::GithubWebhook => "GITHUB_WEBHOOK",
            RunSourceType::CloudMode => "CLOUD_MODE",
            RunSourceType::Cli => "CLI",
            RunSourceType::Webhook => "WEBHOOK",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// Where a run executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunExecutionLocation {
    /// On the caller's machine (unmanaged `agent run`).
    Local,
    /// On a managed worker.
    Remote,
}

impl RunExecutionLocation {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunExecutionLocation::Local => "LOCAL",
            RunExecutionLocation::Remote => "REMOTE",
        }
    }
}

/// MCP server configuration: exactly one of `command` or `url` (or a `warp_id` reference).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = MCPServerConfig))]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Reference to a shared server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warp_id: Option<String>,
    /// Stdio transport: command to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Stdio transport: arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Streamable HTTP transport: server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Environment for the server process (`${VAR}` expands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// HTTP headers for the HTTP transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// Execution harness.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Harness {
    /// `oz` (built-in, default), `claude`, `codex`, `opencode`, `gemini`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Model for a third-party harness (its own default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Reasoning effort for harnesses that support it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_level: Option<String>,
}

/// Secrets for third-party harnesses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HarnessAuthSecrets {
    /// Secret name for the Claude Code harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_auth_secret_name: Option<String>,
    /// Secret name for the Codex harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codex_auth_secret_name: Option<String>,
}

/// Whose credentials the platform mints tokens for (`credential_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CredentialStrategy {
    /// The run's creator.
    Creator,
    /// The run's execution principal (the default).
    Executor,
}

/// Access level of a public session link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PublicAccess {
    /// Read the session.
    Viewer,
    /// Read and interact.
    Editor,
}

/// Sharing of the run's session (`session_sharing`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionSharing {
    /// Anyone-with-link access level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access: Option<PublicAccess>,
}

/// AWS Bedrock inference settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AwsInferenceProvider {
    /// Opt out of Bedrock at this layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// AWS region for STS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// IAM role to assume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

/// Inference provider settings (`inference_providers`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InferenceProviders {
    /// AWS Bedrock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsInferenceProvider>,
}

/// A memory store attached to a run (`memory_stores[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MemoryStoreRef {
    /// `read_write` or `read_only`.
    pub access: String,
    /// How the agent should use the store.
    pub instructions: String,
    /// Store id.
    pub uid: String,
}

/// Query mode of a run (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Do the task.
    #[default]
    Normal,
    /// Plan only.
    Plan,
    /// Orchestrate child runs.
    Orchestrate,
}

impl RunMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Normal => "normal",
            RunMode::Plan => "plan",
            RunMode::Orchestrate => "orchestrate",
        }
    }
}

/// Custom key/value metadata of a run or schedule (`metadata`).
pub type Metadata = BTreeMap<String, String>;

/// A recorded attachment (its content is not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRecord {
    /// File name.
    pub file_name: String,
    /// MIME type.
    pub mime_type: String,
    /// Decoded size in bytes.
    pub bytes: u64,
}

/// Run-level request fields Hangar stores inside a run's (or a schedule's)
/// configuration, so they need no columns of their own. Never part of the API
/// shape: handlers reject it in requests and move its values to the item's
/// own fields (`metadata`, `parent_run_id`, …) in answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    /// Custom metadata (runs inherit their parent's and their schedule's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Query mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
    /// Conversation the request named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Parent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// Every ancestor, the root first and the parent last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ancestors: Option<Vec<String>>,
    /// Interactive run requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// Attachments received with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<AttachmentRecord>>,
    /// The integration that started the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::integration::RunTrigger>,
}

impl RunOptions {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == RunOptions::default()
    }
}

/// Run configuration (`AmbientAgentConfig` in the Oz API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = AmbientAgentConfig))]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Label for grouping and filtering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Model id, `provider/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Extra system instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_prompt: Option<String>,
    /// Environment to run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    /// Skill spec (`owner/repo:path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill_spec: Option<String>,
    /// MCP servers by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<BTreeMap<String, McpServerConfig>>,
    /// Computer use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_use_enabled: Option<bool>,
    /// Minutes to keep the sandbox after completion (1–60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_minutes: Option<i32>,
    /// Self-hosted worker id that must execute the run (exact match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_host: Option<String>,
    /// Harness selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness: Option<Harness>,
    /// Harness secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_auth_secrets: Option<HarnessAuthSecrets>,
    /// Ordered skill specs (mutually exclusive with `skill_spec`, which
    /// answers carry the first of them in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skills: Option<Vec<String>>,
    /// Runner providing the compute (recorded; Hangar routes by `worker_host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<String>,
    /// Whose credentials tokens are minted for (recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_strategy: Option<CredentialStrategy>,
    /// Session sharing (recorded; share runs with `/agent/runs/{id}/shares`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_sharing: Option<SessionSharing>,
    /// Inference providers (recorded; Hangar uses the server's providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_providers: Option<InferenceProviders>,
    /// Memory stores (Hangar has none: only an empty list is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_stores: Option<Vec<MemoryStoreRef>>,
    /// Hangar-internal run-level fields kept with the configuration
    /// ([`RunOptions`]); not accepted from API callers, never shown to them.
    #[serde(rename = "_hangar", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(ignore))]
    pub hangar: Option<RunOptions>,
}

/// A file attached to a run request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    /// File name.
    pub file_name: String,
    /// MIME type.
    pub mime_type: String,
    /// Base64 content.
    pub data: String,
}

/// `POST /agent/runs` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunAgentRequest {
    /// The instruction; required unless a skill is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Skill spec used as the base prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    /// Run configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<AgentConfig>,
    /// Title (derived from the prompt when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Team-owned run (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<bool>,
    /// Agent identity to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_identity_uid: Option<String>,
    /// Conversation to continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Attachments (max 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<AttachmentInput>>,
    /// Parent run in an orchestration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// Interactive run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// Custom key/value metadata, immutable afterwards (at most 20 keys; keys
    /// 1–64 bytes of `[a-zA-Z0-9._-]`, values at most 256 bytes, no NUL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Query mode (`normal` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
    /// User to attribute the run to (Oz: agent keys only; Hangar rejects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// `POST /agent/runs` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RunAgentResponse {
    /// The new run.
    pub run_id: String,
    /// Same as `run_id` (deprecated in the Oz API).
    pub task_id: String,
    /// Its state right after creation.
    pub state: RunState,
    /// Whether no worker had a free slot when the run was created.
    #[serde(default)]
    pub at_capacity: bool,
}

/// Status message of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RunStatusMessage {
    /// Human-readable message.
    pub message: String,
    /// Error code for terminal error states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<crate::PlatformErrorCode>,
    /// Whether retrying may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// Resource usage of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RequestUsage {
    /// Inference cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_cost: Option<f64>,
    /// Compute cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_cost: Option<f64>,
}

/// Who created a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RunCreatorInfo {
    /// `user` or `service_account`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Creator id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Ownership scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Scope {
    /// `User` or `Team`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Owner id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A run as returned by `GET /agent/runs/{id}` and in lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RunItem {
    /// Run id.
    pub run_id: String,
    /// Same as `run_id`.
    pub task_id: String,
    /// Title.
    pub title: String,
    /// State.
    pub state: RunState,
    /// Where it executes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_location: Option<RunExecutionLocation>,
    /// Prompt.
    pub prompt: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last update.
    pub updated_at: Timestamp,
    /// When the agent started working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<RunStatusMessage>,
    /// Source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RunSourceType>,
    /// Session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Link to watch the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_link: Option<String>,
    /// Link to what triggered the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_url: Option<String>,
    /// Creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<RunCreatorInfo>,
    /// Usage and cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_usage: Option<RequestUsage>,
    /// Resolved configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<AgentConfig>,
    /// Conversation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Parent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// **(extension)** `none` when a worker ran this run's task without its
    /// backend's sandbox (the direct backend's `sandbox: none`); absent when
    /// every execution was sandboxed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Whether a sandbox is currently live for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_sandbox_running: Option<bool>,
    /// Artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Vec<serde_json::Value>>,
    /// Scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// The schedule that created the run (scheduled runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::ScheduleInfo>,
    /// Custom metadata given at creation (merged with the parent's and the schedule's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Who executes the run (in Hangar, its creator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<RunCreatorInfo>,
    /// Whether this kind of run can be cancelled (false for unmanaged local runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_run_type_cancellable: Option<bool>,
    /// **(extension)** Query mode the run was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
    /// **(extension)** The failure label its worker gave the run's latest
    /// execution (PROTOCOL.md §2), as sent, even one this server does not
    /// know; absent when it did not fail on a worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// **(extension)** The exit code its worker reported for the run's latest
    /// execution (128+signal for a signal death).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// **(extension)** The run's W3C trace id (32 hex digits): every span of
    /// the run (server, worker, agent) is in this trace, and its log lines
    /// carry it as `trace_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// **(extension)** The integration that started the run, who
    /// triggered it and a link back (also in `trigger_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::integration::RunTrigger>,
}

/// Cursor paging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PageInfo {
    /// More results exist.
    pub has_next_page: bool,
    /// Cursor for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /agent/runs` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListRunsResponse {
    /// The page.
    pub runs: Vec<RunItem>,
    /// Paging.
    pub page_info: PageInfo,
}

/// **(extension)** A stored session event as served by `GET /agent/runs/{id}/transcript`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TranscriptResponse {
    /// Run id.
    pub run_id: String,
    /// Events in order (execution, then sequence number).
    pub events: Vec<TranscriptEvent>,
    /// The follow-up that last reopened this run after it ended: the agent of
    /// the next execution continues the conversation with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followup: Option<String>,
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TranscriptEvent {
    /// Execution that produced it.
    pub execution_id: String,
    /// The event as the agent sent it.
    #[serde(flatten)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub event: crate::session::SessionEvent,
}

#[cfg(test)]
mod source_tests {
    use super::RunSourceType;

    #[test]
    fn every_source_is_listed_once_and_round_trips() {
        for s in RunSourceType::ALL {
            assert_eq!(RunSourceType::parse(s.as_str()), Some(s));
            // A new variant does not compile here until it is listed in ALL.
            match s {
                RunSourceType::Linear
                | RunSourceType::Api
                | RunSourceType::Slack
                | RunSourceType::Local
                | RunSourceType::ScheduledAgent
                | RunSourceType::WebApp
                | RunSourceType::GithubAction
                | RunSourceType::GithubWebhook
                | RunSourceType::CloudMode
                | RunSourceType::Cli
                | RunSourceType::Webhook => {}
            }
        }
        let mut names: Vec<&str> = RunSourceType::ALL.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RunSourceType::ALL.len());
    }
}
