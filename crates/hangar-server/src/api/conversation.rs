//! Oz routes around runs: the normalised conversation, artifacts, lifecycle
//! events, agent identities and the agent (skill) list.
//!
//! Conversation and artifacts are derived from the stored session events;
//! lifecycle events come from the store's per-team log (see
//! `hangar_store::LifecycleStore`), written by the database on every run
//! state change.

use crate::AppState;
use crate::api::parse_json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use hangar_protocol::agent::*;
use hangar_protocol::session::{EventBody, SessionEvent};
use hangar_protocol::{ExecutionId, RunId, Timestamp};
use hangar_store::{LifecycleQuery, NewLifecycleEvent};

/// Largest `limit` of an event poll.
pub const MAX_EVENT_LIMIT: i64 = 500;

/// The artifact uid of an `artifact` session event: `{execution_id}.{seq}`.
fn artifact_uid(exec: &ExecutionId, seq: u64) -> String {
    format!("{}.{seq}", exec.as_str())
}

fn file_name(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .to_owned()
}

fn mime_type(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "md" | "markdown" => "text/markdown",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The `RunItem.artifacts` entry of an `artifact` event, if it is one.
pub fn artifact_item(exec: &ExecutionId, event: &SessionEvent) -> Option<ArtifactItem> {
    let EventBody::Artifact {
        artifact_type,
        url,
        path,
        title,
    } = &event.body
    else {
        return None;
    };
    let uid = artifact_uid(exec, event.seq);
    let created_at = event.at;
    Some(match artifact_type.as_str() {
        "pull_request" => ArtifactItem::PullRequest(PullRequestArtifact {
            created_at,
            data: PullRequestArtifactData {
                url: url.clone().unwrap_or_default(),
                branch: String::new(),
            },
        }),
        "plan" => ArtifactItem::Plan(PlanArtifact {
            created_at,
            data: PlanArtifactData {
                artifact_uid: Some(uid.clone()),
                document_uid: uid,
                url: url.clone(),
                title: title.clone().or_else(|| path.clone()),
            },
        }),
        _ => {
            let filepath = path.clone().or_else(|| url.clone()).unwrap_or_default();
            ArtifactItem::File(FileArtifact {
                created_at,
                data: FileArtifactData {
                    artifact_uid: uid,
                    filename: file_name(&filepath),
                    mime_type: mime_type(&filepath).to_owned(),
                    filepath,
                    description: title.clone(),
                },
            })
        }
    })
}

/// Artifacts of a run, in the order they were reported.
pub async fn run_artifacts(app: &AppState, run: &RunId) -> ApiResult<Vec<serde_json::Value>> {
    let events = app.store.run_events_of_kind(run, "artifact").await?;
    Ok(events
        .iter()
        .filter_map(|(exec, e)| artifact_item(exec, e))
        .filter_map(|a| serde_json::to_value(a).ok())
        .collect())
}

fn category(tool: &str) -> ActionCategory {
    match tool {
        "run_command" | "shell" | "bash" | "exec" => ActionCategory::Command,
        "read_file" | "write_file" | "edit_file" | "list_files" | "apply_patch" => {
            ActionCategory::Files
        }
        "grep" | "search" | "glob" | "find_files" => ActionCategory::Search,
        "report_artifact" => ActionCategory::Documents,
        t if t.starts_with("mcp") || t.contains("__") => ActionCategory::Integration,
        _ => ActionCategory::Command,
    }
}

/// One transcript event as a role and a content block (`None`: not exposed).
fn block(
    id: String,
    body: &EventBody,
) -> Option<(ConversationMessageRole, ConversationContentBlock)> {
    use ConversationContentBlock as B;
    use ConversationMessageRole as R;
    let message_id = Some(id);
    Some(match body {
        EventBody::UserMessage { text } => (
            R::User,
            B::Text(TextContentBlock {
                message_id,
                text: text.clone(),
            }),
        ),
        EventBody::AssistantMessage { text } => (
            R::Assistant,
            B::Text(TextContentBlock {
                message_id,
                text: text.clone(),
            }),
        ),
        EventBody::ToolCall {
            call_id,
            name,
            arguments,
        } => (
            R::Assistant,
            B::Action(ActionContentBlock {
                message_id,
                id: call_id.clone(),
                category: category(name),
                name: name.clone(),
                input: if arguments.is_object() {
                    arguments.clone()
                } else {
                    serde_json::json!({ "value": arguments })
                },
            }),
        ),
        EventBody::ToolResult {
            call_id,
            name,
            output,
            is_error,
        } => (
            R::Tool,
            B::ActionResult(ActionResultContentBlock {
                message_id,
                action_id: call_id.clone(),
                category: category(name),
                name: name.clone(),
                state: if *is_error {
                    ActionState::Failed
                } else {
                    ActionState::Completed
                },
                output: serde_json::json!({ "output": output }),
            }),
        ),
        EventBody::Status { .. } | EventBody::Artifact { .. } | EventBody::Error { .. } => {
            let mut data = serde_json::to_value(body).ok()?;
            let name = data
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("event")
                .to_owned();
            if let Some(obj) = data.as_object_mut() {
                obj.remove("kind");
            }
            (
                R::System,
                B::Event(EventContentBlock {
                    message_id,
                    name,
                    data,
                }),
            )
        }
        EventBody::Reasoning { .. } | EventBody::Usage { .. } => return None,
    })
}

/// Groups a run's transcript into steps (one per execution) of messages
/// (consecutive events of one role).
pub fn normalise(
    run_id: &str,
    prompt: &str,
    events: &[(ExecutionId, SessionEvent)],
) -> ConversationResponse {
    let mut steps: Vec<ConversationStep> = Vec::new();
    for (exec, event) in events {
        if steps.last().is_none_or(|s| s.id != exec.as_str()) {
            steps.push(ConversationStep {
                id: exec.0.clone(),
                description: steps.is_empty().then(|| prompt.to_owned()),
                summary: None,
                started_at: None,
                completed_at: None,
                messages: Vec::new(),
                steps: Vec::new(),
            });
        }
        let Some(step) = steps.last_mut() else {
            continue;
        };
        step.started_at.get_or_insert(event.at);
        step.completed_at = Some(event.at);
        if let EventBody::Status {
            state: Some(s),
            message,
            ..
        } = &event.body
            && s.is_terminal()
        {
            step.summary = Some(message.clone());
        }
        let id = format!("{}:{}", exec.as_str(), event.seq);
        let Some((role, content)) = block(id.clone(), &event.body) else {
            continue;
        };
        match step.messages.last_mut() {
            Some(m) if m.role == role => {
                m.message_ids.push(id);
                m.content.push(content);
            }
            _ => step.messages.push(ConversationMessage {
                message_ids: vec![id],
                role,
                timestamp: Some(event.at),
                content: vec![content],
            }),
        }
    }
    ConversationResponse {
        conversation_id: run_id.to_owned(),
        steps,
    }
}

/// `GET /agent/runs/{id}/conversation`: the normalised conversation.
#[utoipa::path(get, path = "/agent/runs/{runId}/conversation", tag = "agent",
    operation_id = "getRunConversation",
    params(("runId" = String, Path, description = "The run")),
    responses((status = 200, description = "Normalized conversation", body = ConversationResponse),
        (status = 404, description = "Run not found", body = hangar_protocol::Problem, content_type = "application/problem+json"),
        crate::error::ProblemResponses))]
pub async fn conversation(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> ApiResult<Json<ConversationResponse>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let run = app.runs().visible(&principal, &run_id).await?;
    crate::sessions::sharing::require_access(
        &app,
        &principal,
        &run,
        crate::sessions::sharing::Access::View,
    )
    .await?;
    // A run whose agent has not sent anything yet has an empty conversation.
    let events = app.store.run_events(&run.id).await?;
    Ok(Json(normalise(&run.id.0, &run.prompt, &events)))
}

/// `GET /agent/artifacts/{uid}`: a plan, or a file the agent reported with a URL.
#[utoipa::path(get, path = "/agent/artifacts/{artifactUid}", tag = "agent",
    operation_id = "getArtifact",
    params(("artifactUid" = String, Path, description = "The artifact uid from `RunItem.artifacts`")),
    responses((status = 200, description = "Artifact details", body = ArtifactResponse),
        (status = 404, description = "Artifact not found or unsupported artifact type", body = hangar_protocol::Problem, content_type = "application/problem+json"),
        crate::error::ProblemResponses))]
pub async fn artifact(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> ApiResult<Json<ArtifactResponse>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    principal.require_api_key()?;
    let not_found = || ApiError::NotFound(format!("artifact `{uid}` does not exist"));
    let (exec, seq) = uid.rsplit_once('.').ok_or_else(not_found)?;
    let seq: u64 = seq.parse().map_err(|_| not_found())?;
    let exec = app
        .store
        .execution(&ExecutionId(exec.to_owned()))
        .await
        .map_err(|e| match e {
            hangar_store::StoreError::NotFound => not_found(),
            other => other.into(),
        })?;
    // A foreign run is indistinguishable from a missing artifact.
    let run = app
        .runs()
        .visible(&principal, exec.run_id.as_str())
        .await
        .map_err(|_| not_found())?;
    // Artifacts come from the session: they need view access like the transcript.
    crate::sessions::sharing::require_access(
        &app,
        &principal,
        &run,
        crate::sessions::sharing::Access::View,
    )
    .await?;
    let events = app.store.run_events(&run.id).await?;
    let item = events
        .iter()
        .find(|(e, ev)| e == &exec.id && ev.seq == seq)
        .and_then(|(e, ev)| artifact_item(e, ev))
        .ok_or_else(not_found)?;
    match item {
        ArtifactItem::Plan(p) => {
            let mut content = String::new();
            if let Some(t) = &p.data.title {
                content.push_str(&format!("# {t}\n"));
            }
            if let Some(u) = &p.data.url {
                content.push_str(&format!("\n{u}\n"));
            }
            Ok(Json(ArtifactResponse::Plan(PlanArtifactResponse {
                artifact_uid: uid.clone(),
                created_at: p.created_at,
                data: PlanArtifactResponseData {
                    document_uid: uid.clone(),
                    notebook_uid: uid,
                    url: p.data.url,
                    title: p.data.title,
                    content,
                    content_type: "text/markdown".to_owned(),
                },
            })))
        }
        ArtifactItem::File(f) if f.data.filepath.starts_with("http") => {
            Ok(Json(ArtifactResponse::File(FileArtifactResponse {
                artifact_uid: uid,
                created_at: f.created_at,
                data: FileArtifactResponseData {
                    download_url: f.data.filepath.clone(),
                    expires_at: Timestamp::from_unix_millis(
                        Timestamp::now().unix_millis() + 24 * 3600 * 1000,
                    ),
                    content_type: f.data.mime_type,
                    filepath: f.data.filepath,
                    filename: f.data.filename,
                    description: f.data.description,
                },
            })))
        }
        ArtifactItem::File(_) => Err(ApiError::NotFound(format!(
            "artifact `{uid}` is a file in the run's sandbox; Hangar does not upload artifact \
             files, so there is nothing to download (its path is in `RunItem.artifacts`)"
        ))),
        ArtifactItem::PullRequest(_) => Err(ApiError::NotFound(format!(
            "artifact `{uid}` is a pull request: its URL is in `RunItem.artifacts`; this endpoint \
             serves plans and files"
        ))),
    }
}

/// `GET /agent/identities`: Hangar runs as the team, so a team has no agent
/// identities; the list is empty (creating them is not supported).
#[utoipa::path(get, path = "/agent/identities", tag = "agent", operation_id = "listAgentIdentities",
    responses((status = 200, description = "Agent identities of the caller's team", body = ListAgentIdentitiesResponse),
        crate::error::ProblemResponses))]
pub async fn identities(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ListAgentIdentitiesResponse>> {
    authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    Ok(Json(ListAgentIdentitiesResponse { agents: Vec::new() }))
}

/// `GET /agent`: agents (skills) available to runs. Hangar does not discover
/// skills from repositories; the list is empty and runs name a skill with
/// `skill`/`config.skill_spec`. The spec's query parameters are validated.
#[utoipa::path(get, path = "/agent", tag = "agent", operation_id = "listAgents",
    params(("repo" = Option<String>, Query, description = "owner/repo"),
        ("refresh" = Option<bool>, Query, description = "Ignored"),
        ("sort_by" = Option<String>, Query, description = "`name` or `last_run`"),
        ("include_malformed_skills" = Option<bool>, Query, description = "Ignored")),
    responses((status = 200, description = "Available agents", body = ListAgentsResponse),
        crate::error::ProblemResponses))]
pub async fn list_agents(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<ListAgentsResponse>> {
    authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "repo"
                if v.split_once('/')
                    .is_none_or(|(o, r)| o.is_empty() || r.is_empty()) =>
            {
                return Err(ApiError::BadRequest(format!(
                    "`repo` `{v}` must have the form owner/repo"
                )));
            }
            "refresh" | "include_malformed_skills" if v != "true" && v != "false" => {
                return Err(ApiError::BadRequest(format!(
                    "`{k}` must be true or false, got `{v}`"
                )));
            }
            "sort_by" if v != "name" && v != "last_run" => {
                return Err(ApiError::BadRequest(format!(
                    "`sort_by` must be `name` or `last_run`, got `{v}`"
                )));
            }
            "repo" | "refresh" | "include_malformed_skills" | "sort_by" => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    Ok(Json(ListAgentsResponse { agents: Vec::new() }))
}

/// Parses `run_ids` (repeatable or comma-separated), `since`/`after` and `limit`.
fn event_query(raw: Option<&str>, allow_run_ids: bool) -> ApiResult<LifecycleQuery> {
    let mut q = LifecycleQuery {
        run_ids: Vec::new(),
        since: 0,
        limit: 100,
    };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "run_ids" | "run_id" if allow_run_ids => {
                q.run_ids.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                if q.run_ids.len() > MAX_EVENT_LIMIT as usize {
                    return Err(ApiError::BadRequest(format!(
                        "at most {MAX_EVENT_LIMIT} `run_ids` per poll"
                    )));
                }
            }
            "since" | "after" => {
                q.since = v.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`{k}` must be a sequence number (0 or more) from an earlier poll, got `{v}`"
                    ))
                })?;
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_EVENT_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`limit` must be a number from 1 to {MAX_EVENT_LIMIT}, got `{v}`"
                        ))
                    })?;
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}`; use run_ids, since (or after) and limit"
                )));
            }
        }
    }
    Ok(q)
}

fn to_wire(e: hangar_store::LifecycleEventRecord) -> AgentEvent {
    AgentEvent {
        event_type: e.event_type,
        run_id: e.run_id,
        ref_id: e.ref_id,
        execution_id: e.execution_id,
        occurred_at: Timestamp::from_unix_millis(e.occurred_at),
        sequence: e.sequence,
    }
}

/// `GET /agent/events`: the team's lifecycle events after `since`, oldest
/// first; `run_ids` narrows to some runs (all of the team's when absent).
#[utoipa::path(get, path = "/agent/events", tag = "agent", operation_id = "pollAgentEvents",
    params(("run_ids" = Option<Vec<String>>, Query, description = "Runs to watch (repeatable; all when absent)"),
        ("since" = Option<i64>, Query, minimum = 0, description = "Last sequence seen (also `after`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1–500, default 100")),
    responses((status = 200, description = "Events in sequence order", body = Vec<AgentEvent>),
        crate::error::ProblemResponses))]
pub async fn poll(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<AgentEvent>>> {
    let (team_id, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let q = event_query(raw.as_deref(), true)?;
    let events = app.store.lifecycle_events(team_id, &q).await?;
    Ok(Json(events.into_iter().map(to_wire).collect()))
}

/// **(extension)** `GET /agent/events/{run_id}`: one run's lifecycle events.
#[utoipa::path(get, path = "/agent/events/{runId}", tag = "agent", operation_id = "listRunEvents",
    params(("runId" = String, Path, description = "The run"),
        ("since" = Option<i64>, Query, minimum = 0, description = "Last sequence seen (also `after`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1–500, default 100")),
    responses((status = 200, description = "The run's events in sequence order", body = Vec<AgentEvent>),
        (status = 404, description = "Run not found", body = hangar_protocol::Problem, content_type = "application/problem+json"),
        crate::error::ProblemResponses))]
pub async fn run_events(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Vec<AgentEvent>>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let mut q = event_query(raw.as_deref(), false)?;
    let run = app.runs().visible(&principal, &run_id).await?;
    q.run_ids = vec![run.id.0.clone()];
    let events = app.store.lifecycle_events(run.team_id, &q).await?;
    Ok(Json(events.into_iter().map(to_wire).collect()))
}

/// `POST /agent/events/{run_id}`: records a client-reported lifecycle event
/// in the run's event log (the run's state is driven by its worker and is not
/// changed by it).
#[utoipa::path(post, path = "/agent/events/{runId}", tag = "agent", operation_id = "reportAgentEvent",
    params(("runId" = String, Path, description = "The run")),
    request_body = ReportAgentEventRequest,
    responses((status = 200, description = "Event recorded", body = ReportAgentEventResponse),
        (status = 400, description = "Unknown event type", body = hangar_protocol::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Run not found", body = hangar_protocol::Problem, content_type = "application/problem+json"),
        crate::error::ProblemResponses))]
pub async fn report(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ReportAgentEventResponse>> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let (team_id, _) = principal.require_api_key()?;
    let req: ReportAgentEventRequest = parse_json(&body)?;
    if !REPORTABLE_EVENT_TYPES.contains(&req.event_type.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "`event_type` `{}` is unknown; use one of {}",
            req.event_type,
            REPORTABLE_EVENT_TYPES.join(", ")
        )));
    }
    for (name, v) in [("execution_id", &req.execution_id), ("ref_id", &req.ref_id)] {
        if v.as_ref().is_some_and(|s| s.len() > 200) {
            return Err(ApiError::BadRequest(format!(
                "`{name}` must be at most 200 bytes"
            )));
        }
    }
    let run = app.runs().visible(&principal, &run_id).await?;
    let sequence = app
        .store
        .record_lifecycle_event(
            team_id,
            &NewLifecycleEvent {
                run_id: run.id.0,
                event_type: req.event_type,
                execution_id: req.execution_id,
                ref_id: req.ref_id,
                occurred_at: Timestamp::now().unix_millis(),
            },
        )
        .await
        .map_err(|e| match e {
            hangar_store::StoreError::NotFound => ApiError::run_not_found(&run_id),
            other => other.into(),
        })?;
    Ok(Json(ReportAgentEventResponse { sequence }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_protocol::RunState;

    fn ev(seq: u64, body: EventBody) -> SessionEvent {
        SessionEvent {
            seq,
            at: Timestamp::from_unix_millis(seq as i64 * 1000),
            body,
        }
    }

    #[test]
    fn the_conversation_groups_roles_and_maps_tools() {
        let exec = ExecutionId("e1".into());
        let events: Vec<_> = [
            ev(
                1,
                EventBody::UserMessage {
                    text: "fix it".into(),
                },
            ),
            ev(2, EventBody::AssistantMessage { text: "ok".into() }),
            ev(
                3,
                EventBody::ToolCall {
                    call_id: "c1".into(),
                    name: "run_command".into(),
                    arguments: serde_json::json!({"command": "ls"}),
                },
            ),
            ev(
                4,
                EventBody::ToolResult {
                    call_id: "c1".into(),
                    name: "run_command".into(),
                    output: "a.txt".into(),
                    is_error: false,
                },
            ),
            ev(
                5,
                EventBody::Status {
                    state: Some(RunState::Succeeded),
                    message: "done".into(),
                    failure_reason: None,
                },
            ),
        ]
        .into_iter()
        .map(|e| (exec.clone(), e))
        .collect();
        let c = normalise("r1", "fix it", &events);
        assert_eq!(c.conversation_id, "r1");
        let step = &c.steps[0];
        assert_eq!(step.summary.as_deref(), Some("done"));
        let roles: Vec<_> = step.messages.iter().map(|m| m.role).collect();
        use ConversationMessageRole::*;
        assert_eq!(roles, [User, Assistant, Tool, System]);
        assert_eq!(step.messages[1].content.len(), 2, "text and action merge");
        let v = serde_json::to_value(&step.messages[1].content[1]).unwrap();
        assert_eq!(v["type"], "action");
        assert_eq!(v["category"], "command");
        let v = serde_json::to_value(&step.messages[2].content[0]).unwrap();
        assert_eq!(v["type"], "action_result");
        assert_eq!(v["state"], "completed");
    }

    #[test]
    fn event_queries_are_checked() {
        assert!(event_query(Some("limit=0"), true).is_err());
        assert!(event_query(Some("since=-1"), true).is_err());
        assert!(event_query(Some("bogus=1"), true).is_err());
        assert!(event_query(Some("run_ids=a"), false).is_err());
        let q = event_query(Some("run_ids=a&run_ids=b,c&after=7&limit=3"), true).unwrap();
        assert_eq!(q.run_ids, ["a", "b", "c"]);
        assert_eq!((q.since, q.limit), (7, 3));
    }
}
