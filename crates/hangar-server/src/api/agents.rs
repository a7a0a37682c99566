//! Oz routes about agents: agent identities and the agent (skill) list.
//! Hangar runs as the team and discovers no skills, so both lists are empty;
//! the spec's query parameters are still checked.

use crate::AppState;
use crate::api::{QueryResult, read_query};
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use hangar_protocol::agent::*;

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

/// Query of `GET /agent`, as sent (Hangar lists no agents, but checks it).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAgentsParams {
    /// owner/repo
    #[param(pattern = r"^[^/]+/[\s\S]+$")]
    pub repo: Option<String>,
    /// Ignored
    #[param(value_type = Option<bool>)]
    pub refresh: Option<String>,
    /// `name` or `last_run`
    #[param(pattern = r"^(name|last_run)$")]
    pub sort_by: Option<String>,
    /// Ignored
    #[param(value_type = Option<bool>)]
    pub include_malformed_skills: Option<String>,
}

impl ListAgentsParams {
    fn check(&self) -> ApiResult<()> {
        if let Some(v) = &self.repo
            && v.split_once('/')
                .is_none_or(|(o, r)| o.is_empty() || r.is_empty())
        {
            return Err(ApiError::BadRequest(format!(
                "`repo` `{v}` must have the form owner/repo"
            )));
        }
        for (k, v) in [
            ("refresh", &self.refresh),
            ("include_malformed_skills", &self.include_malformed_skills),
        ] {
            if let Some(v) = v
                && v != "true"
                && v != "false"
            {
                return Err(ApiError::BadRequest(format!(
                    "`{k}` must be true or false, got `{v}`"
                )));
            }
        }
        if let Some(v) = &self.sort_by
            && v != "name"
            && v != "last_run"
        {
            return Err(ApiError::BadRequest(format!(
                "`sort_by` must be `name` or `last_run`, got `{v}`"
            )));
        }
        Ok(())
    }
}

/// `GET /agent`: agents (skills) available to runs. Hangar does not discover
/// skills from repositories; the list is empty and runs name a skill with
/// `skill`/`config.skill_spec`. The spec's query parameters are validated.
#[utoipa::path(get, path = "/agent", tag = "agent", operation_id = "listAgents",
    params(ListAgentsParams),
    responses((status = 200, description = "Available agents", body = ListAgentsResponse),
        crate::error::ProblemResponses))]
pub async fn list_agents(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: QueryResult<ListAgentsParams>,
) -> ApiResult<Json<ListAgentsResponse>> {
    authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    read_query(query, "")?.check()?;
    Ok(Json(ListAgentsResponse { agents: Vec::new() }))
}
