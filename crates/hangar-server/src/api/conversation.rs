//! Oz routes about what a run produced: its normalised conversation and its
//! artifacts (plans, files), both derived from the stored session events.

use crate::AppState;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::agent::*;
use hangar_protocol::session::{EventBody, SessionEvent};
use hangar_protocol::{ExecutionId, RunId, Timestamp};

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
}
