//! Oz Agent API resources around runs: the normalised conversation
//! (`GET /agent/runs/{id}/conversation`), artifacts (`RunItem.artifacts`,
//! `GET /agent/artifacts/{uid}`), lifecycle events (`/agent/events`), agent
//! identities (`/agent/identities`) and the agent (skill) list (`/agent`).
//! Names and shapes follow the Oz spec.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// `GET /agent/runs/{id}/conversation` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ConversationResponse {
    /// Conversation id (the run id).
    pub conversation_id: String,
    /// Root steps: one per execution of the run.
    pub steps: Vec<ConversationStep>,
}

/// A step of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ConversationStep {
    /// Step id (the execution id).
    pub id: String,
    /// The instruction of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Summary of the work (the final status message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Earliest message time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>, format = DateTime))]
    pub started_at: Option<Timestamp>,
    /// Latest message time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>, format = DateTime))]
    pub completed_at: Option<Timestamp>,
    /// Messages in order.
    pub messages: Vec<ConversationMessage>,
    /// Nested steps (none in Hangar yet).
    #[cfg_attr(feature = "utoipa", schema(no_recursion))]
    pub steps: Vec<ConversationStep>,
}

/// Role of a normalised message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConversationMessageRole {
    /// A person.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// The platform (status, errors, artifacts).
    System,
}

/// A normalised message: consecutive transcript events of one role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ConversationMessage {
    /// Transcript events grouped here (`{execution_id}:{seq}`).
    #[serde(default)]
    pub message_ids: Vec<String>,
    /// Role.
    pub role: ConversationMessageRole,
    /// Time of the first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>, format = DateTime))]
    pub timestamp: Option<Timestamp>,
    /// Content blocks.
    pub content: Vec<ConversationContentBlock>,
}

/// One block of a message, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConversationContentBlock {
    /// Text.
    Text(TextContentBlock),
    /// A tool call.
    Action(ActionContentBlock),
    /// A tool's result.
    ActionResult(ActionResultContentBlock),
    /// Another exposed event (status, artifact, error).
    Event(EventContentBlock),
}

/// Text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TextContentBlock {
    /// Transcript event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Text.
    pub text: String,
}

/// Category of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActionCategory {
    /// Shell commands.
    Command,
    /// Reading and editing files.
    Files,
    /// Searching.
    Search,
    /// MCP and other integrations.
    Integration,
    /// Documents and artifacts.
    Documents,
    /// Computer use.
    Computer,
    /// Review.
    Review,
    /// Skills.
    Skill,
}

/// State of an action result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Still running.
    Running,
    /// Done.
    Completed,
    /// Failed.
    Failed,
    /// Refused.
    Denied,
}

/// A tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ActionContentBlock {
    /// Transcript event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Call id.
    pub id: String,
    /// Category.
    pub category: ActionCategory,
    /// Tool name.
    pub name: String,
    /// Arguments (an object).
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub input: serde_json::Value,
}

/// A tool's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ActionResultContentBlock {
    /// Transcript event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The call it answers.
    pub action_id: String,
    /// Category.
    pub category: ActionCategory,
    /// Tool name.
    pub name: String,
    /// State.
    pub state: ActionState,
    /// `{output}`: what the model was given.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub output: serde_json::Value,
}

/// Another event (`status`, `artifact`, `error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct EventContentBlock {
    /// Transcript event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Event name.
    pub name: String,
    /// Its data.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// An artifact in `RunItem.artifacts`, tagged by `artifact_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "artifact_type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ArtifactItem {
    /// A plan.
    Plan(PlanArtifact),
    /// A pull request.
    PullRequest(PullRequestArtifact),
    /// A file.
    File(FileArtifact),
}

/// A plan artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PlanArtifact {
    /// When it was reported.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Data.
    pub data: PlanArtifactData,
}

/// Plan data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PlanArtifactData {
    /// Artifact uid for `GET /agent/artifacts/{uid}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_uid: Option<String>,
    /// Document uid (the artifact uid).
    pub document_uid: String,
    /// URL, when the agent gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Title (or workspace path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A pull request artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PullRequestArtifact {
    /// When it was reported.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Data.
    pub data: PullRequestArtifactData,
}

/// Pull request data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PullRequestArtifactData {
    /// URL of the pull request.
    pub url: String,
    /// Branch (empty when the agent did not report one).
    pub branch: String,
}

/// A file artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FileArtifact {
    /// When it was reported.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Data.
    pub data: FileArtifactData,
}

/// File data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FileArtifactData {
    /// Artifact uid.
    pub artifact_uid: String,
    /// Workspace-relative path (or the URL).
    pub filepath: String,
    /// Last path component.
    pub filename: String,
    /// Title the agent gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type (guessed from the extension).
    pub mime_type: String,
}

/// `GET /agent/artifacts/{uid}` answer, tagged by `artifact_type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "artifact_type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ArtifactResponse {
    /// A plan.
    Plan(PlanArtifactResponse),
    /// A file with a download URL.
    File(FileArtifactResponse),
}

/// A plan artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PlanArtifactResponse {
    /// Artifact uid.
    pub artifact_uid: String,
    /// When it was reported.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Data.
    pub data: PlanArtifactResponseData,
}

/// Plan content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PlanArtifactResponseData {
    /// Document uid (the artifact uid).
    pub document_uid: String,
    /// Notebook uid (the artifact uid).
    pub notebook_uid: String,
    /// URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Content: what the agent reported (title, path, URL), as markdown.
    pub content: String,
    /// `text/markdown`.
    pub content_type: String,
}

/// A file artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FileArtifactResponse {
    /// Artifact uid.
    pub artifact_uid: String,
    /// When it was reported.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Data.
    pub data: FileArtifactResponseData,
}

/// File download data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FileArtifactResponseData {
    /// Where to download it (the URL the agent reported).
    pub download_url: String,
    /// Until when the URL is valid (Hangar's do not expire: a day from now).
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub expires_at: Timestamp,
    /// MIME type.
    pub content_type: String,
    /// Path or URL.
    pub filepath: String,
    /// Last path component.
    pub filename: String,
    /// Title the agent gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One lifecycle event of `GET /agent/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AgentEvent {
    /// `run_queued`, `run_claimed`, `run_in_progress`, `run_succeeded`,
    /// `run_failed`, `run_errored`, `run_blocked`, `run_cancelled`,
    /// `lease_expired` (`ref_id`: the worker that lost it), …
    pub event_type: String,
    /// Run.
    pub run_id: String,
    /// Event-specific reference.
    pub ref_id: Option<String>,
    /// Execution current at the time.
    pub execution_id: Option<String>,
    /// When.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub occurred_at: Timestamp,
    /// Sequence number, strictly increasing per team: the next poll's `since`.
    pub sequence: i64,
}

/// Event types a client may report with `POST /agent/events/{run_id}`.
pub const REPORTABLE_EVENT_TYPES: [&str; 6] = [
    "run_in_progress",
    "run_succeeded",
    "run_failed",
    "run_errored",
    "run_blocked",
    "run_cancelled",
];

/// `POST /agent/events/{run_id}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportAgentEventRequest {
    /// One of [`REPORTABLE_EVENT_TYPES`].
    #[cfg_attr(
        feature = "utoipa",
        schema(pattern = "^run_(in_progress|succeeded|failed|errored|blocked|cancelled)$")
    )]
    pub event_type: String,
    /// Client-assigned execution id for correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// Event-specific reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<String>,
}

/// `POST /agent/events/{run_id}` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ReportAgentEventResponse {
    /// The event's sequence number.
    pub sequence: i64,
}

/// An agent identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AgentResponse {
    /// Uid.
    pub uid: String,
    /// Name.
    pub name: String,
    /// Usable for runs.
    pub available: bool,
    /// Creation.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
}

/// `GET /agent/identities` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListAgentIdentitiesResponse {
    /// Identities of the caller's team.
    pub agents: Vec<AgentResponse>,
}

/// `GET /agent` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListAgentsResponse {
    /// Agents (skills).
    pub agents: Vec<AgentListItem>,
}

/// An agent (skill) and its variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AgentListItem {
    /// Name.
    pub name: String,
    /// Variants.
    pub variants: Vec<AgentListVariant>,
}

/// A skill variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AgentListVariant {
    /// `owner/repo:path`.
    pub id: String,
    /// Description.
    pub description: String,
    /// Base prompt.
    pub base_prompt: String,
    /// Where it comes from.
    pub source: AgentListSource,
    /// Environments offering it.
    pub environments: Vec<AgentListEnvironment>,
    /// Last run of this skill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>, format = DateTime))]
    pub last_run_timestamp: Option<Timestamp>,
}

/// Skill source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AgentListSource {
    /// Repository owner.
    pub owner: String,
    /// Repository name.
    pub name: String,
    /// Path of the skill file.
    pub skill_path: String,
}

/// An environment offering a skill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AgentListEnvironment {
    /// Environment id.
    pub uid: String,
    /// Name.
    pub name: String,
}
