//! Environments: **(extension)** `/environments` CRUD, and the Oz
//! `GET /agent/environments` listing.

use crate::AppState;
use crate::api::{QueryResult, parse_json, read_query};
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::environment::{
    CloudEnvironment, CloudEnvironmentConfig, EnvironmentItem, EnvironmentList, EnvironmentRequest,
    GitHubRepo, ListEnvironmentsResponse,
};
use hangar_protocol::worker::NetworkPolicy;
use hangar_protocol::{Scope, Timestamp};
use hangar_store::{EnvironmentRecord, StoreError};

/// Whether `name` can be an environment variable name.
pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// Variables Hangar sets for every task; environments may not override them.
pub fn reserved_env_name(name: &str) -> bool {
    name.starts_with("HANGAR_") || name == "GIT_CONFIG_GLOBAL"
}

/// What the server's configuration allows in repository URLs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepositoryPolicy {
    /// `file://` URLs and local paths (`allow_local_repositories`).
    pub allow_local: bool,
    /// Loopback, link-local and metadata hosts (`allow_internal_repository_hosts`).
    pub allow_internal_hosts: bool,
}

impl RepositoryPolicy {
    fn of(app: &AppState) -> Self {
        RepositoryPolicy {
            allow_local: app.config.allow_local_repositories,
            allow_internal_hosts: app.config.allow_internal_repository_hosts,
        }
    }
}

/// One repository of an environment: its clone URL (S9: nothing git would
/// take as an option or a local file, no internal host unless allowed), ref,
/// path inside the workspace and token secret.
fn validate_repo(
    i: usize,
    repo: &hangar_protocol::environment::EnvironmentRepo,
    app_secrets: &[String],
    policy: RepositoryPolicy,
) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    if repo.url.trim().is_empty() || repo.url.chars().any(char::is_whitespace) {
        return bad(format!(
            "`repos[{i}].url` must be a clone URL without spaces"
        ));
    }
    // S9: nothing that git would take as an option or a local file.
    match hangar_protocol::repository::check_repo_url(&repo.url, policy.allow_local) {
        Ok(hangar_protocol::repository::RepoLocation::Remote { host, .. }) => {
            if let Err(e) = hangar_protocol::repository::check_repo_host(
                &repo.url,
                &host,
                policy.allow_internal_hosts,
            ) {
                return bad(format!("`repos[{i}].url`: {e}"));
            }
        }
        Ok(hangar_protocol::repository::RepoLocation::Local) => {}
        Err(e) => return bad(format!("`repos[{i}].url`: {e}")),
    }
    if let Some(r) = repo.git_ref.as_deref().filter(|r| !r.is_empty())
        && let Err(e) = hangar_protocol::repository::check_git_ref(r)
    {
        return bad(format!("`repos[{i}].ref`: {e}"));
    }
    if let Some(p) = &repo.path
        && (p.starts_with('/') || p.split('/').any(|s| s == ".."))
    {
        return bad(format!(
            "`repos[{i}].path` `{p}` must be relative and stay inside the workspace"
        ));
    }
    if let Some(s) = &repo.token_secret
        && !app_secrets.contains(s)
    {
        return bad(format!(
            "`repos[{i}].token_secret` names secret `{s}`, which does not exist; create it with `hangar secret create {s}`"
        ));
    }
    Ok(())
}

fn validate(
    app_secrets: &[String],
    req: &EnvironmentRequest,
    policy: RepositoryPolicy,
) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    let name = req.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad(format!(
            "environment name `{}` is invalid: use 1 to 64 letters, digits, `-`, `_` or `.`",
            req.name
        ));
    }
    if let Some(image) = &req.docker_image
        && let Err(e) = hangar_protocol::repository::check_image_ref(image)
    {
        return bad(format!("`docker_image`: {e}"));
    }
    for (i, repo) in req.repos.iter().enumerate() {
        validate_repo(i, repo, app_secrets, policy)?;
    }
    for (i, c) in req.setup_commands.iter().enumerate() {
        if c.trim().is_empty() {
            return bad(format!("`setup_commands[{i}]` is empty"));
        }
    }
    for key in req.env.keys() {
        if !valid_env_name(key) {
            return bad(format!(
                "`env` key `{key}` is not a valid environment variable name"
            ));
        }
        if reserved_env_name(key) {
            return bad(format!("`env` key `{key}` is reserved by Hangar"));
        }
    }
    for s in &req.secrets {
        if !app_secrets.contains(s) {
            return bad(format!(
                "`secrets` names `{s}`, which does not exist; create it with `hangar secret create {s}`"
            ));
        }
    }
    if let NetworkPolicy::Allowlist { hosts } = &req.network_policy {
        if hosts.is_empty() {
            return bad(
                "`network_policy.hosts` must list at least one host for mode `allowlist`".into(),
            );
        }
        for h in hosts {
            let plain = h.strip_prefix("*.").unwrap_or(h);
            if plain.is_empty()
                || !plain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            {
                return bad(format!(
                    "`network_policy.hosts` entry `{h}` is not a host name"
                ));
            }
        }
    }
    Ok(())
}

fn item(r: &EnvironmentRecord) -> ApiResult<EnvironmentItem> {
    let spec: EnvironmentRequest = serde_json::from_str(&r.spec)
        .map_err(|e| ApiError::Internal(format!("stored environment does not decode: {e}")))?;
    Ok(EnvironmentItem {
        id: r.id.clone(),
        spec,
        created_at: Timestamp::from_unix_millis(r.created_at),
        updated_at: Timestamp::from_unix_millis(r.updated_at),
    })
}

async fn secret_names(app: &AppState, team: i64) -> ApiResult<Vec<String>> {
    Ok(app
        .store
        .list_secrets(team)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect())
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "environment `{id}` does not exist or is not visible to this team"
    ))
}

/// Loads an environment of a team by id or name, with a clear 404.
pub async fn load(app: &AppState, team: i64, id: &str) -> ApiResult<EnvironmentItem> {
    match app.store.environment(team, id).await {
        Ok(r) => item(&r),
        Err(StoreError::NotFound) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /environments`.
#[utoipa::path(post, path = "/environments", tag = "hangar", request_body = hangar_protocol::environment::EnvironmentRequest, responses((status = 200, description = "Created", body = hangar_protocol::environment::EnvironmentItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<EnvironmentItem>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "create environments").await?;
    let mut req: EnvironmentRequest = parse_json(&body)?;
    req.name = req.name.trim().to_owned();
    validate(
        &secret_names(&app, team).await?,
        &req,
        RepositoryPolicy::of(&app),
    )?;
    let now = Timestamp::now().unix_millis();
    let spec = serde_json::to_string(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let record = app
        .store
        .create_environment(EnvironmentRecord {
            id: hangar_protocol::RunId::generate().0,
            team_id: team,
            name: req.name.clone(),
            spec,
            created_at: now,
            updated_at: now,
        })
        .await?;
    Ok(Json(item(&record)?))
}

/// `GET /environments`.
#[utoipa::path(get, path = "/environments", tag = "hangar", responses((status = 200, description = "Environments", body = hangar_protocol::environment::EnvironmentList), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<EnvironmentList>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let records = app.store.list_environments(team).await?;
    Ok(Json(EnvironmentList {
        environments: records.iter().map(item).collect::<ApiResult<_>>()?,
    }))
}

/// `GET /environments/{id}` (id or name).
#[utoipa::path(get, path = "/environments/{env_id}", tag = "hangar", params(("env_id" = String, Path, description = "Id or name")), responses((status = 200, description = "The environment", body = hangar_protocol::environment::EnvironmentItem), crate::error::ProblemResponses))]
pub async fn get_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<EnvironmentItem>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    Ok(Json(load(&app, team, &id).await?))
}

/// `PUT /environments/{id}`: full replace.
#[utoipa::path(put, path = "/environments/{env_id}", tag = "hangar", params(("env_id" = String, Path, description = "Id or name")), request_body = hangar_protocol::environment::EnvironmentRequest, responses((status = 200, description = "Replaced", body = hangar_protocol::environment::EnvironmentItem), crate::error::ProblemResponses))]
pub async fn update(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<EnvironmentItem>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "change environments").await?;
    let mut req: EnvironmentRequest = parse_json(&body)?;
    req.name = req.name.trim().to_owned();
    validate(
        &secret_names(&app, team).await?,
        &req,
        RepositoryPolicy::of(&app),
    )?;
    let current = load(&app, team, &id).await?;
    let spec = serde_json::to_string(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let record = app
        .store
        .update_environment(EnvironmentRecord {
            id: current.id,
            team_id: team,
            name: req.name.clone(),
            spec,
            created_at: current.created_at.unix_millis(),
            updated_at: Timestamp::now().unix_millis(),
        })
        .await?;
    Ok(Json(item(&record)?))
}

/// `DELETE /environments/{id}`.
#[utoipa::path(delete, path = "/environments/{env_id}", tag = "hangar", params(("env_id" = String, Path, description = "Id or name")), responses((status = 200, description = "Deleted", body = Object), crate::error::ProblemResponses))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "delete environments").await?;
    let current = load(&app, team, &id).await?;
    app.store.delete_environment(team, &current.id).await?;
    Ok(Json(
        serde_json::json!({ "id": current.id, "deleted": true }),
    ))
}

fn github_repo(url: &str) -> Option<GitHubRepo> {
    let rest = url
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("git@github.com:"))?;
    let mut parts = rest.trim_end_matches(".git").splitn(2, '/');
    Some(GitHubRepo {
        owner: parts.next()?.to_owned(),
        repo: parts.next()?.to_owned(),
    })
}

/// Query of `GET /agent/environments`. Not in the document yet, which
/// lists no parameters for this route (kept as published).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OzListParams {
    /// `name` or `last_updated` (the default, newest first).
    pub sort_by: Option<String>,
}

/// `GET /agent/environments` (Oz shape).
#[utoipa::path(get, path = "/agent/environments", tag = "agent", operation_id = "listEnvironments", responses((status = 200, description = "Environments", body = hangar_protocol::environment::ListEnvironmentsResponse), crate::error::ProblemResponses))]
pub async fn oz_list(
    State(app): State<AppState>,
    headers: HeaderMap,
    query: QueryResult<OzListParams>,
) -> ApiResult<Json<ListEnvironmentsResponse>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let by_name = match read_query(query, "")?.sort_by.as_deref() {
        None | Some("last_updated") => false,
        Some("name") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`sort_by` must be `name` or `last_updated`, got `{other}`"
            )));
        }
    };
    let mut items: Vec<EnvironmentItem> = app
        .store
        .list_environments(team)
        .await?
        .iter()
        .map(item)
        .collect::<ApiResult<_>>()?;
    if !by_name {
        items.sort_by_key(|e| std::cmp::Reverse(e.updated_at));
    }
    let environments = items
        .into_iter()
        .map(|e| CloudEnvironment {
            uid: e.id,
            config: CloudEnvironmentConfig {
                name: e.spec.name,
                description: e.spec.description,
                docker_image: e.spec.docker_image,
                github_repos: e
                    .spec
                    .repos
                    .iter()
                    .filter_map(|r| github_repo(&r.url))
                    .collect(),
                setup_commands: e.spec.setup_commands,
            },
            last_updated: e.updated_at,
            setup_failed: false,
            scope: Some(Scope {
                kind: "Team".into(),
                uid: Some(team.to_string()),
            }),
        })
        .collect();
    Ok(Json(ListEnvironmentsResponse { environments }))
}
