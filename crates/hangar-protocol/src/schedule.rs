//! Scheduled agents (`/api/v1/agent/schedules`), shaped after the Oz Agent API:
//! a named cron expression plus the prompt and configuration of the runs it
//! creates.

use crate::{AgentConfig, Metadata, RunCreatorInfo, RunMode, Scope, Timestamp};
use serde::{Deserialize, Serialize};

/// The schedule that triggered a run (`RunItem.schedule`, `ScheduleInfo` in the Oz API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ScheduleInfo {
    /// Schedule id.
    pub schedule_id: String,
    /// Name of the schedule when the run was created.
    pub schedule_name: String,
    /// Cron expression when the run was created.
    pub cron_schedule: String,
}

/// Scheduler-derived history of a schedule (`ScheduledAgentHistoryItem`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ScheduledAgentHistoryItem {
    /// When the schedule last created a run.
    #[serde(default)]
    pub last_ran: Option<Timestamp>,
    /// The next slot, when the schedule is enabled.
    #[serde(default)]
    pub next_run: Option<Timestamp>,
}

/// A schedule as returned by the API (`ScheduledAgentItem`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ScheduledAgentItem {
    /// Schedule id.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// 5-field cron expression (minute hour day-of-month month day-of-week).
    pub cron_schedule: String,
    /// Whether the schedule creates runs.
    pub enabled: bool,
    /// Prompt of the runs it creates.
    pub prompt: String,
    /// Why the last attempt to create a run failed, if it did.
    #[serde(default)]
    pub last_spawn_error: Option<String>,
    /// Configuration of the runs it creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<AgentConfig>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<RunCreatorInfo>,
    /// Who changed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<RunCreatorInfo>,
    /// Last and next run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<ScheduledAgentHistoryItem>,
    /// Ownership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// **(extension)** IANA time zone the cron expression is evaluated in (UTC when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Metadata every run it creates carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// **(extension)** Query mode of the runs it creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
}

/// `POST /agent/schedules` body (`CreateScheduledAgentRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateScheduledAgentRequest {
    /// Human-readable name.
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: String,
    /// 5-field cron expression (minute hour day-of-month month day-of-week).
    #[cfg_attr(feature = "utoipa", schema(pattern = r"^\s*\S+(\s+\S+){4}\s*$"))]
    pub cron_schedule: String,
    /// Prompt; required unless `agent_config.skill_spec` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Active immediately (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Configuration of the runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<AgentConfig>,
    /// Team-owned schedule (default true; personal schedules are not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<bool>,
    /// **(extension)** IANA time zone for the cron expression (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Metadata every run it creates carries (same rules as a run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Query mode of the runs it creates (`normal` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
    /// Agent identity to run as (Hangar has none: rejected when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_uid: Option<String>,
}

/// `PUT /agent/schedules/{id}` body: a full replace (`UpdateScheduledAgentRequest`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateScheduledAgentRequest {
    /// Human-readable name.
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: String,
    /// 5-field cron expression (minute hour day-of-month month day-of-week).
    #[cfg_attr(feature = "utoipa", schema(pattern = r"^\s*\S+(\s+\S+){4}\s*$"))]
    pub cron_schedule: String,
    /// Whether the schedule creates runs.
    pub enabled: bool,
    /// Prompt; required unless `agent_config.skill_spec` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Configuration of the runs (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<AgentConfig>,
    /// **(extension)** IANA time zone for the cron expression (absent = UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Metadata every run it creates carries (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Query mode of the runs it creates (absent = `normal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
    /// Agent identity to run as (Hangar has none: rejected when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_uid: Option<String>,
}

/// `GET /agent/schedules` response, sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListScheduledAgentsResponse {
    /// The team's schedules.
    pub schedules: Vec<ScheduledAgentItem>,
}

/// `DELETE /agent/schedules/{id}` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct DeleteScheduledAgentResponse {
    /// Whether the schedule was deleted.
    pub success: bool,
}
