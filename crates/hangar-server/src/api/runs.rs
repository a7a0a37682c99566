//! `/api/v1/agent/runs`: create, list, get, cancel, transcript.

mod list_query;

pub use list_query::ListRunsParams;

use crate::AppState;
use crate::api::parse_json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::runs::create::Requester;
use crate::runs::{SOURCE_HEADER, options as run_options};
use crate::sessions::sharing::{Access, require_access};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use hangar_protocol::{
    ListRunsResponse, PageInfo, RequestUsage, RunAgentRequest, RunAgentResponse, RunCreatorInfo,
    RunExecutionLocation, RunId, RunItem, RunState, RunStatusMessage, Scope, Timestamp,
    TranscriptEvent, TranscriptResponse,
};
use hangar_store::RunRecord;

/// Converts a stored run to its API shape.
pub fn run_item(app: &AppState, r: &RunRecord) -> RunItem {
    let status_message = r.status_message.as_ref().map(|m| RunStatusMessage {
        message: m.clone(),
        error_code: r
            .error_code
            .as_deref()
            .and_then(|c| serde_json::from_value(serde_json::Value::String(c.to_owned())).ok()),
        retryable: r
            .error_code
            .as_deref()
            .map(|c| c == "resource_unavailable" || c == "internal_error"),
    });
    let creator = r.creator_user_id.map(|uid| RunCreatorInfo {
        kind: Some("user".to_owned()),
        uid: Some(uid.to_string()),
        display_name: None,
        email: None,
    });
    let (agent_config, options) = run_options::public_config(Some(&r.config));
    RunItem {
        run_id: r.id.0.clone(),
        task_id: r.id.0.clone(),
        title: r.title.clone(),
        state: r.state,
        execution_location: Some(r.execution_location),
        prompt: r.prompt.clone(),
        created_at: Timestamp::from_unix_millis(r.created_at),
        updated_at: Timestamp::from_unix_millis(r.updated_at),
        started_at: r.started_at.map(Timestamp::from_unix_millis),
        status_message,
        source: Some(r.source),
        session_id: Some(r.id.0.clone()),
        session_link: Some(format!("{}/runs/{}", app.public_url, r.id)),
        trigger_url: options.trigger.as_ref().and_then(|t| t.url.clone()),
        creator: creator.clone(),
        request_usage: Some(RequestUsage {
            inference_cost: Some(r.inference_cost),
            compute_cost: Some(0.0),
        }),
        agent_config: Some(agent_config.unwrap_or_default()),
        conversation_id: options.conversation_id,
        parent_run_id: options.parent_run_id,
        sandbox: None,
        is_sandbox_running: Some(r.sandbox_running),
        artifacts: Some(Vec::new()),
        scope: Some(Scope {
            kind: "Team".to_owned(),
            uid: Some(r.team_id.to_string()),
        }),
        schedule: r.schedule.clone(),
        metadata: options.metadata,
        executor: creator,
        is_run_type_cancellable: Some(r.execution_location == RunExecutionLocation::Remote),
        mode: Some(options.mode.unwrap_or_default()),
        failure_reason: None,
        exit_code: None,
        trace_id: Some(hangar_telemetry::trace::TraceParent::for_run(&r.id.0).trace_id_hex()),
        trigger: options.trigger,
    }
}

/// Fills in how each run's latest execution ended (`failure_reason`,
/// `exit_code`), in one store query for the whole page.
pub(crate) async fn with_last_executions(app: &AppState, items: &mut [RunItem]) -> ApiResult<()> {
    let ids: Vec<RunId> = items.iter().map(|i| RunId(i.run_id.clone())).collect();
    let last: std::collections::HashMap<RunId, hangar_store::ExecutionRecord> = app
        .store
        .last_executions(&ids)
        .await?
        .into_iter()
        .map(|e| (e.run_id.clone(), e))
        .collect();
    for item in items {
        if let Some(e) = last.get(&RunId(item.run_id.clone())) {
            item.failure_reason = e.failure_reason.clone().filter(|r| !r.is_empty());
            item.exit_code = e.exit_code;
        }
    }
    Ok(())
}

/// `POST /agent/runs` and `POST /agent/run`.
#[utoipa::path(post, path = "/agent/runs", tag = "agent", operation_id = "runAgent", request_body = hangar_protocol::RunAgentRequest, responses((status = 200, description = "Run created", body = hangar_protocol::RunAgentResponse), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<RunAgentResponse>> {
    let (team_id, user_id) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let req: RunAgentRequest = parse_json(&body)?;
    let created = app
        .runs()
        .create(requester(&headers, team_id, user_id), &req)
        .await?;
    Ok(Json(RunAgentResponse {
        run_id: created.run.id.0.clone(),
        task_id: created.run.id.0,
        state: RunState::Queued,
        at_capacity: created.at_capacity,
    }))
}

/// Who asks, as the run service needs it: team, user and the source header.
fn requester(headers: &HeaderMap, team_id: i64, user_id: Option<i64>) -> Requester<'_> {
    Requester {
        team_id,
        user_id,
        source: headers.get(SOURCE_HEADER).and_then(|v| v.to_str().ok()),
        trigger: None,
    }
}

/// `POST /agent/run`: the Oz API's legacy alias of `POST /agent/runs`.
#[utoipa::path(post, path = "/agent/run", tag = "agent", operation_id = "runAgentLegacy", request_body = hangar_protocol::RunAgentRequest, responses((status = 200, description = "Run created", body = hangar_protocol::RunAgentResponse), crate::error::ProblemResponses))]
pub async fn create_legacy(
    state: State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<RunAgentResponse>> {
    create(state, headers, body).await
}

/// **(extension)** Answer of `POST /agent/runs/local`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LocalRunResponse {
    /// The tracked run.
    pub run_id: String,
    /// Its only execution.
    pub execution_id: String,
    /// Run token for the session stream and the LLM gateway (shown once).
    pub run_token: String,
    /// `INPROGRESS`.
    pub state: RunState,
}

/// **(extension)** `POST /agent/runs/local`: registers a run that an unmanaged
/// `hangar agent run` executes itself (`execution_location: LOCAL`). The
/// caller streams its session with the returned run token; its terminal
/// `status` event ends the run.
#[utoipa::path(post, path = "/agent/runs/local", tag = "hangar", request_body = hangar_protocol::RunAgentRequest, responses((status = 200, description = "Unmanaged run registered", body = LocalRunResponse), crate::error::ProblemResponses))]
pub async fn create_local(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<LocalRunResponse>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let (team_id, user_id) = principal.require_api_key()?;
    let req: RunAgentRequest = parse_json(&body)?;
    let created = app
        .runs()
        .create_local(&principal, requester(&headers, team_id, user_id), &req)
        .await?;
    Ok(Json(LocalRunResponse {
        run_id: created.run.id.0,
        execution_id: created.execution_id.0,
        run_token: created.run_token,
        state: created.run.state,
    }))
}

/// `GET /agent/runs`.
#[utoipa::path(get, path = "/agent/runs", tag = "agent", operation_id = "listRuns", params(ListRunsParams), responses((status = 200, description = "A page of runs", body = hangar_protocol::ListRunsResponse), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<ListRunsResponse>> {
    let (team_id, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let Some(query) = ListRunsParams::from_query(raw.as_deref())?.into_run_query()? else {
        return Ok(Json(ListRunsResponse {
            runs: Vec::new(),
            page_info: PageInfo {
                has_next_page: false,
                next_cursor: None,
            },
        }));
    };
    if let Some(ancestor) = &query.ancestor_run_id {
        app.store
            .run(team_id, &RunId(ancestor.clone()))
            .await
            .map_err(|e| match e {
                hangar_store::StoreError::NotFound => ApiError::BadRequest(format!(
                    "`ancestor_run_id`: run `{ancestor}` does not exist or is not visible to this team"
                )),
                other => other.into(),
            })?;
    }
    let page = app.store.list_runs(team_id, &query).await?;
    let mut runs: Vec<RunItem> = page.runs.iter().map(|r| run_item(&app, r)).collect();
    with_last_executions(&app, &mut runs).await?;
    Ok(Json(ListRunsResponse {
        runs,
        page_info: PageInfo {
            has_next_page: page.next.is_some(),
            next_cursor: page.next.map(|(k, id)| list_query::encode_cursor(k, &id)),
        },
    }))
}

/// `GET /agent/runs/{id}`.
#[utoipa::path(get, path = "/agent/runs/{runId}", tag = "agent", operation_id = "getRun", params(("runId" = String, Path, description = "The run")), responses((status = 200, description = "The run", body = hangar_protocol::RunItem), crate::error::ProblemResponses))]
pub async fn get_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunItem>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let run = app.runs().visible(&principal, &run_id).await?;
    let mut item = run_item(&app, &run);
    item.artifacts = Some(crate::api::conversation::run_artifacts(&app, &run.id).await?);
    item.sandbox = app.runs().sandbox(&run).await?;
    with_last_executions(&app, std::slice::from_mut(&mut item)).await?;
    Ok(Json(item))
}

/// `POST /agent/runs/{id}/cancel`: answers the run id, as the Oz API does.
#[utoipa::path(post, path = "/agent/runs/{runId}/cancel", tag = "agent", operation_id = "cancelRun", params(("runId" = String, Path, description = "The run")), responses((status = 200, description = "The cancelled run id", body = String, content_type = "application/json"), crate::error::ProblemResponses))]
pub async fn cancel(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> ApiResult<Json<String>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let (team_id, _) = principal.require_api_key()?;
    let run = app.runs().visible(&principal, &run_id).await?;
    require_access(&app, &principal, &run, Access::Edit).await?;
    Ok(Json(app.runs().cancel(team_id, &run.id).await?))
}

/// `GET /agent/runs/{id}/transcript`: every stored session event, in order.
#[utoipa::path(get, path = "/agent/runs/{runId}/transcript", tag = "agent", operation_id = "getRunTranscript", params(("runId" = String, Path, description = "The run")), responses((status = 200, description = "Every stored session event", body = hangar_protocol::TranscriptResponse), crate::error::ProblemResponses))]
pub async fn transcript(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> ApiResult<Json<TranscriptResponse>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let run = app.runs().visible(&principal, &run_id).await?;
    require_access(&app, &principal, &run, Access::View).await?;
    let events = app
        .store
        .run_events(&run.id)
        .await?
        .into_iter()
        .map(|(exec, event)| TranscriptEvent {
            execution_id: exec.0,
            event,
        })
        .collect();
    let followup = app.store.latest_followup(&run.id).await?.map(|f| f.message);
    Ok(Json(TranscriptResponse {
        run_id: run.id.0,
        events,
        followup,
    }))
}

/// `GET /agent/runs/{id}/environment`: the run's environment, for its agent
/// to prepare when a stock `oz-agent-worker` started it with `--environment`.
#[utoipa::path(get, path = "/agent/runs/{runId}/environment", tag = "agent", operation_id = "getRunEnvironment", params(("runId" = String, Path, description = "The run")), responses((status = 200, description = "The run's environment (repositories, setup commands; secret names only)", body = hangar_protocol::worker::RunEnvironment), crate::error::ProblemResponses))]
pub async fn environment(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> ApiResult<Json<hangar_protocol::worker::RunEnvironment>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let run = app.runs().visible(&principal, &run_id).await?;
    require_access(&app, &principal, &run, Access::View).await?;
    let environment = match app.store.run_environment(&run.id).await? {
        Some(snapshot) => {
            let env = crate::dispatch::parse_environment_snapshot(&snapshot)?;
            let mut secrets = env.secrets.clone();
            secrets.extend(env.repos.iter().filter_map(|r| r.token_secret.clone()));
            secrets.sort();
            secrets.dedup();
            Some(crate::dispatch::environment_spec(
                run.config.environment_id.clone().unwrap_or_default(),
                &env,
                secrets,
            ))
        }
        None => None,
    };
    Ok(Json(hangar_protocol::worker::RunEnvironment {
        environment,
        allow_local_repositories: app.config.allow_local_repositories,
    }))
}

/// `POST /agent/runs/{id}/followups` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowupRequest {
    /// The message for the agent.
    #[schema(min_length = 1, pattern = r"\S")]
    pub message: String,
}

/// `POST /agent/runs/{id}/followups`: steers a running run (the agent
/// injects the message at its next turn boundary), or continues an ended one
/// in a new execution (see `send_followup`).
#[utoipa::path(post, path = "/agent/runs/{runId}/followups", tag = "agent", operation_id = "createFollowup", params(("runId" = String, Path, description = "The run")), request_body = FollowupRequest, responses((status = 200, description = "Delivered, or the run was reopened", body = Object), crate::error::ProblemResponses))]
pub async fn followup(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    principal.require_api_key()?;
    let req: FollowupRequest = parse_json(&body)?;
    let run = app.runs().visible(&principal, &run_id).await?;
    Ok(Json(
        app.runs().followup(&principal, &run, &req.message).await?,
    ))
}
