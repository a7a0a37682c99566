//! `/api/v1/agent/schedules`: create, list, get, replace (`PUT`), delete,
//! pause and resume scheduled agents, shaped after the Oz Agent API.

use crate::AppState;
use crate::api::parse_json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::runs::MAX_PROMPT_BYTES;
use crate::runs::create::resolve_model;
use crate::runs::options as run_options;
use crate::schedule::CronSchedule;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hangar_protocol::{
    AgentConfig, CreateScheduledAgentRequest, DeleteScheduledAgentResponse,
    ListScheduledAgentsResponse, Metadata, RunCreatorInfo, RunMode, RunOptions,
    ScheduledAgentHistoryItem, ScheduledAgentItem, Scope, Timestamp, UpdateScheduledAgentRequest,
};
use hangar_store::{NewSchedule, ScheduleRecord, ScheduleUpdate, StoreError};

/// Longest schedule name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

fn creator(user_id: Option<i64>) -> Option<RunCreatorInfo> {
    user_id.map(|uid| RunCreatorInfo {
        kind: Some("user".to_owned()),
        uid: Some(uid.to_string()),
        display_name: None,
        email: None,
    })
}

/// Converts a stored schedule to its API shape.
pub fn schedule_item(s: &ScheduleRecord) -> ScheduledAgentItem {
    let (agent_config, options) = run_options::public_config(s.config.as_ref());
    ScheduledAgentItem {
        id: s.id.clone(),
        name: s.name.clone(),
        cron_schedule: s.cron_schedule.clone(),
        enabled: s.enabled,
        prompt: s.prompt.clone(),
        last_spawn_error: s.last_spawn_error.clone(),
        agent_config,
        created_at: Timestamp::from_unix_millis(s.created_at),
        updated_at: Timestamp::from_unix_millis(s.updated_at),
        created_by: creator(s.created_by),
        updated_by: creator(s.updated_by),
        history: Some(ScheduledAgentHistoryItem {
            last_ran: s.last_ran.map(Timestamp::from_unix_millis),
            next_run: s
                .next_run
                .filter(|_| s.enabled)
                .map(Timestamp::from_unix_millis),
        }),
        scope: Some(Scope {
            kind: "Team".to_owned(),
            uid: Some(s.team_id.to_string()),
        }),
        timezone: s.timezone.clone(),
        metadata: options.metadata,
        mode: options.mode,
    }
}

/// Validates the Oz fields a schedule passes on to its runs (`metadata`,
/// `mode`, `agent_uid`, the newer configuration fields) and records them in
/// its configuration, where the runs it creates inherit them.
fn with_run_options(
    config: Option<AgentConfig>,
    metadata: Option<&Metadata>,
    mode: Option<RunMode>,
    agent_uid: Option<&str>,
) -> ApiResult<Option<AgentConfig>> {
    run_options::reject_identity("agent_uid", agent_uid)?;
    let mode = run_options::check_mode("mode", mode)?;
    if let Some(m) = metadata {
        run_options::validate_metadata("metadata", m)?;
    }
    let mut config = config;
    if let Some(c) = config.as_mut() {
        run_options::check_config("agent_config", c)?;
    }
    let options = RunOptions {
        metadata: metadata.filter(|m| !m.is_empty()).cloned(),
        mode,
        ..RunOptions::default()
    };
    if !options.is_empty() {
        config.get_or_insert_with(AgentConfig::default).hangar = Some(options);
    }
    Ok(config)
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "schedule `{id}` does not exist or is not visible to this team"
    ))
}

fn store_error(id: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => not_found(id),
        other => other.into(),
    }
}

/// A schedule definition that passed validation.
struct Definition {
    name: String,
    cron: CronSchedule,
    cron_schedule: String,
    timezone: Option<String>,
    prompt: String,
    config: Option<AgentConfig>,
}

/// Validates what create and replace share; a bad value is a 400 that names it.
fn validate(
    app: &AppState,
    name: &str,
    cron_schedule: &str,
    timezone: Option<&str>,
    prompt: Option<&str>,
    config: Option<AgentConfig>,
) -> ApiResult<Definition> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::BadRequest("`name` must not be empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`name` must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    let timezone = timezone.map(str::trim).filter(|t| !t.is_empty());
    let cron_schedule = cron_schedule
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cron = CronSchedule::parse(&cron_schedule, timezone)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let prompt = prompt.map(str::trim).unwrap_or("");
    let skill = config.as_ref().and_then(|c| c.skill_spec.as_deref());
    if prompt.is_empty() && skill.is_none() {
        return Err(ApiError::BadRequest(
            "`prompt` is required (or name a skill with `agent_config.skill_spec`)".into(),
        ));
    }
    if prompt.len() > MAX_PROMPT_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`prompt` is {} bytes; the limit is {MAX_PROMPT_BYTES}",
            prompt.len()
        )));
    }
    if let Some(c) = &config {
        if let Some(m) = c.idle_timeout_minutes
            && !(1..=60).contains(&m)
        {
            return Err(ApiError::BadRequest(format!(
                "`agent_config.idle_timeout_minutes` is {m}; it must be between 1 and 60"
            )));
        }
        if let Some(host) = &c.worker_host
            && (host.is_empty()
                || host.len() > 128
                || host.chars().any(|ch| ch.is_whitespace() || ch == '/'))
        {
            return Err(ApiError::BadRequest(format!(
                "`agent_config.worker_host` `{host}` is invalid: it must equal a worker's \
                 `--worker-id` (no spaces or `/`)"
            )));
        }
    }
    // Check the model now so a typo fails here, not at the first slot.
    let mut probe = config.clone().unwrap_or_default();
    resolve_model(
        &app.llm.providers,
        app.llm.default_model.as_deref(),
        &mut probe,
    )
    .map_err(ApiError::BadRequest)?;
    Ok(Definition {
        name: name.to_owned(),
        cron,
        cron_schedule,
        timezone: timezone.map(str::to_owned),
        prompt: prompt.to_owned(),
        config,
    })
}

/// Checks that the schedule's environment exists in the caller's team (as
/// run creation does), and normalises a name to its id.
async fn check_environment(
    app: &AppState,
    team_id: i64,
    mut def: Definition,
) -> ApiResult<Definition> {
    let Some(id) = def.config.as_ref().and_then(|c| c.environment_id.clone()) else {
        return Ok(def);
    };
    let env = crate::api::environments::load(app, team_id, &id)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::BadRequest(format!(
                "`agent_config.environment_id`: environment `{id}` does not exist; list them with `hangar environment list`"
            )),
            other => other,
        })?;
    if let Some(config) = def.config.as_mut() {
        config.environment_id = Some(env.id);
    }
    Ok(def)
}

fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}

/// `POST /agent/schedules` → 201 with the schedule.
#[utoipa::path(post, path = "/agent/schedules", tag = "schedules", operation_id = "createScheduledAgent", request_body = hangar_protocol::CreateScheduledAgentRequest, responses((status = 201, description = "Schedule created", body = hangar_protocol::ScheduledAgentItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ScheduledAgentItem>)> {
    let (team_id, user_id) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let req: CreateScheduledAgentRequest = parse_json(&body)?;
    run_options::reject_personal(req.team)?;
    let config = with_run_options(
        req.agent_config,
        req.metadata.as_ref(),
        req.mode,
        req.agent_uid.as_deref(),
    )?;
    let def = validate(
        &app,
        &req.name,
        &req.cron_schedule,
        req.timezone.as_deref(),
        req.prompt.as_deref(),
        config,
    )?;
    let def = check_environment(&app, team_id, def).await?;
    let enabled = req.enabled.unwrap_or(true);
    let now = now_ms();
    let record = app
        .store
        .create_schedule(NewSchedule {
            id: hangar_protocol::RunId::generate().0,
            team_id,
            name: def.name,
            cron_schedule: def.cron_schedule,
            timezone: def.timezone,
            enabled,
            prompt: def.prompt,
            config: def.config,
            created_by: user_id,
            created_at: now,
            next_run: enabled.then(|| def.cron.next_after(now)).flatten(),
        })
        .await?;
    tracing::info!(schedule_id = %record.id, team_id, cron = %record.cron_schedule, enabled, "schedule created");
    Ok((StatusCode::CREATED, Json(schedule_item(&record))))
}

/// `GET /agent/schedules`: the team's schedules, sorted by name.
#[utoipa::path(get, path = "/agent/schedules", tag = "schedules", operation_id = "listScheduledAgents", responses((status = 200, description = "Schedules by name", body = hangar_protocol::ListScheduledAgentsResponse), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ListScheduledAgentsResponse>> {
    let (team_id, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let schedules = app.store.list_schedules(team_id).await?;
    Ok(Json(ListScheduledAgentsResponse {
        schedules: schedules.iter().map(schedule_item).collect(),
    }))
}

/// `GET /agent/schedules/{id}`.
#[utoipa::path(get, path = "/agent/schedules/{scheduleId}", tag = "schedules", operation_id = "getScheduledAgent", params(("scheduleId" = String, Path, description = "The schedule")), responses((status = 200, description = "The schedule", body = hangar_protocol::ScheduledAgentItem), crate::error::ProblemResponses))]
pub async fn get_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduledAgentItem>> {
    let (team_id, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let record = app
        .store
        .schedule(team_id, &id)
        .await
        .map_err(store_error(&id))?;
    Ok(Json(schedule_item(&record)))
}

/// `PUT /agent/schedules/{id}`: a full replace; `name`, `cron_schedule` and
/// `enabled` are required, an absent `agent_config` or `timezone` clears it.
#[utoipa::path(put, path = "/agent/schedules/{scheduleId}", tag = "schedules", operation_id = "updateScheduledAgent", params(("scheduleId" = String, Path, description = "The schedule")), request_body = hangar_protocol::UpdateScheduledAgentRequest, responses((status = 200, description = "The replaced schedule", body = hangar_protocol::ScheduledAgentItem), crate::error::ProblemResponses))]
pub async fn replace(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ScheduledAgentItem>> {
    // 404 and 403 before 400: a caller fixing a body for a schedule that is
    // gone, or not theirs, should know.
    let (team_id, user_id, _) = owned_schedule(&app, &headers, &id, "change this schedule").await?;
    let req: UpdateScheduledAgentRequest = parse_json(&body)?;
    let config = with_run_options(
        req.agent_config,
        req.metadata.as_ref(),
        req.mode,
        req.agent_uid.as_deref(),
    )?;
    let def = validate(
        &app,
        &req.name,
        &req.cron_schedule,
        req.timezone.as_deref(),
        req.prompt.as_deref(),
        config,
    )?;
    let def = check_environment(&app, team_id, def).await?;
    let now = now_ms();
    let record = app
        .store
        .update_schedule(
            team_id,
            &id,
            ScheduleUpdate {
                name: def.name,
                cron_schedule: def.cron_schedule,
                timezone: def.timezone,
                enabled: req.enabled,
                prompt: def.prompt,
                config: def.config,
                updated_by: user_id,
                updated_at: now,
                next_run: req.enabled.then(|| def.cron.next_after(now)).flatten(),
            },
        )
        .await
        .map_err(store_error(&id))?;
    tracing::info!(schedule_id = %id, team_id, enabled = record.enabled, "schedule replaced");
    Ok(Json(schedule_item(&record)))
}

/// `DELETE /agent/schedules/{id}`; the runs it created stay.
#[utoipa::path(delete, path = "/agent/schedules/{scheduleId}", tag = "schedules", operation_id = "deleteScheduledAgent", params(("scheduleId" = String, Path, description = "The schedule")), responses((status = 200, description = "Deleted", body = hangar_protocol::DeleteScheduledAgentResponse), crate::error::ProblemResponses))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<DeleteScheduledAgentResponse>> {
    let (team_id, _, _) = owned_schedule(&app, &headers, &id, "delete this schedule").await?;
    app.store
        .delete_schedule(team_id, &id)
        .await
        .map_err(store_error(&id))?;
    tracing::info!(schedule_id = %id, team_id, "schedule deleted");
    Ok(Json(DeleteScheduledAgentResponse { success: true }))
}

/// The caller's team's schedule `id` (404 otherwise), which the caller must
/// have created or be an admin to change (403 otherwise).
async fn owned_schedule(
    app: &AppState,
    headers: &HeaderMap,
    id: &str,
    action: &str,
) -> ApiResult<(i64, Option<i64>, ScheduleRecord)> {
    let who = authenticate(app.store.as_ref(), headers).await?;
    let (team_id, user_id) = who.require_api_key()?;
    let current = app
        .store
        .schedule(team_id, id)
        .await
        .map_err(store_error(id))?;
    crate::auth::roles::require_owner_or_admin(app, &who, current.created_by, action).await?;
    Ok((team_id, user_id, current))
}

async fn set_enabled(
    app: &AppState,
    headers: &HeaderMap,
    id: &str,
    enabled: bool,
) -> ApiResult<Json<ScheduledAgentItem>> {
    let action = if enabled {
        "resume this schedule"
    } else {
        "pause this schedule"
    };
    let (team_id, user_id, current) = owned_schedule(app, headers, id, action).await?;
    let now = now_ms();
    let next_run = if enabled {
        CronSchedule::parse(&current.cron_schedule, current.timezone.as_deref())
            .map_err(|e| ApiError::InvalidState(format!("cannot resume: {e}")))?
            .next_after(now)
    } else {
        None
    };
    let record = app
        .store
        .set_schedule_enabled(team_id, id, enabled, next_run, user_id, now)
        .await
        .map_err(store_error(id))?;
    tracing::info!(schedule_id = %id, team_id, enabled, "schedule {}", if enabled { "resumed" } else { "paused" });
    Ok(Json(schedule_item(&record)))
}

/// `POST /agent/schedules/{id}/pause`: no runs until resumed.
#[utoipa::path(post, path = "/agent/schedules/{scheduleId}/pause", tag = "schedules", operation_id = "pauseScheduledAgent", params(("scheduleId" = String, Path, description = "The schedule")), responses((status = 200, description = "Paused", body = hangar_protocol::ScheduledAgentItem), crate::error::ProblemResponses))]
pub async fn pause(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduledAgentItem>> {
    set_enabled(&app, &headers, &id, false).await
}

/// `POST /agent/schedules/{id}/resume`: runs from the next slot on; slots
/// missed while paused never run.
#[utoipa::path(post, path = "/agent/schedules/{scheduleId}/resume", tag = "schedules", operation_id = "resumeScheduledAgent", params(("scheduleId" = String, Path, description = "The schedule")), responses((status = 200, description = "Resumed", body = hangar_protocol::ScheduledAgentItem), crate::error::ProblemResponses))]
pub async fn resume(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<ScheduledAgentItem>> {
    set_enabled(&app, &headers, &id, true).await
}
