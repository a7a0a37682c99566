//! The Oz lifecycle events of runs (`/agent/events`): a per-team log the
//! database appends to on every run state change (see
//! `hangar_store::LifecycleStore`), plus events clients report. Not to be
//! confused with a run's session events, which `sessions::viewers` streams.

use crate::AppState;
use crate::api::parse_json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use hangar_protocol::Timestamp;
use hangar_protocol::agent::*;
use hangar_store::{LifecycleQuery, NewLifecycleEvent};

/// Largest `limit` of an event poll.
pub const MAX_EVENT_LIMIT: i64 = 500;

/// Which runs an event poll watches (`GET /agent/events` only).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunIdsParams {
    /// Runs to watch (repeatable; all when absent)
    pub run_ids: Option<Vec<String>>,
}

/// Where an event poll resumes, and how much it reads.
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SequenceParams {
    /// Last sequence seen (also `after`)
    #[param(value_type = Option<i64>, minimum = 0)]
    pub since: Option<String>,
    /// 1–500, default 100
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// The name `since` was sent under (`since` or `after`), for errors.
    #[param(ignore)]
    pub since_name: &'static str,
}

/// Reads an event poll's query from its pairs (axum's `Query` cannot read
/// the repeated `run_ids`): `run_ids` (repeatable or comma-separated, also
/// `run_id`) only where `allow_run_ids`, `since`/`after` and `limit`.
fn read_params(
    raw: Option<&str>,
    allow_run_ids: bool,
) -> ApiResult<(RunIdsParams, SequenceParams)> {
    let mut runs = RunIdsParams::default();
    let mut seq = SequenceParams::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "run_ids" | "run_id" if allow_run_ids => {
                let ids = runs.run_ids.get_or_insert_default();
                ids.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
                if ids.len() > MAX_EVENT_LIMIT as usize {
                    return Err(ApiError::BadRequest(format!(
                        "at most {MAX_EVENT_LIMIT} `run_ids` per poll"
                    )));
                }
            }
            "since" | "after" => {
                seq.since_name = if k == "since" { "since" } else { "after" };
                seq.since = Some(v.into_owned());
            }
            "limit" => seq.limit = Some(v.into_owned()),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}`; use run_ids, since (or after) and limit"
                )));
            }
        }
    }
    Ok((runs, seq))
}

/// The store query of an event poll.
fn event_query(raw: Option<&str>, allow_run_ids: bool) -> ApiResult<LifecycleQuery> {
    let (runs, seq) = read_params(raw, allow_run_ids)?;
    let mut q = LifecycleQuery {
        run_ids: runs.run_ids.unwrap_or_default(),
        since: 0,
        limit: 100,
    };
    if let Some(v) = seq.since {
        let k = seq.since_name;
        q.since = v.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`{k}` must be a sequence number (0 or more) from an earlier poll, got `{v}`"
            ))
        })?;
    }
    if let Some(v) = seq.limit {
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
    params(RunIdsParams, SequenceParams),
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
    params(("runId" = String, Path, description = "The run"), SequenceParams),
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
