//! **(extension)** `/integrations`: the team's Slack, Linear, GitHub and
//! generic webhook integrations (see [`crate::integrations`]). Admins
//! create, change and delete them (they hold a webhook secret and name team
//! secrets); any key of the team reads them. The secret is write-only.

use crate::AppState;
use crate::api::parse_json;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::integrations::{self, template};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::Timestamp;
use hangar_protocol::integration::{
    CreateIntegrationRequest, IntegrationItem, IntegrationKind, IntegrationSettings,
    IntegrationTestResult, ListIntegrationsResponse, UpdateIntegrationRequest,
};
use hangar_store::{IntegrationRecord, StoreError};

/// Most entries in each of `channels`, `linear_teams` and `repos`.
pub const MAX_FILTER_ENTRIES: usize = 100;
/// Longest `prompt_prefix` or template, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

fn item(app: &AppState, r: &IntegrationRecord) -> ApiResult<IntegrationItem> {
    let kind = integrations::kind_of(r)?;
    let settings: IntegrationSettings = serde_json::from_str(&r.settings).map_err(|e| {
        ApiError::Internal(format!("integration {} settings do not decode: {e}", r.id))
    })?;
    Ok(IntegrationItem {
        id: r.id.clone(),
        kind,
        name: r.name.clone(),
        settings,
        webhook_url: integrations::webhook_url(&app.public_url, kind, &r.id),
        created_at: Timestamp::from_unix_millis(r.created_at),
        updated_at: Timestamp::from_unix_millis(r.updated_at),
    })
}

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`name` `{name}` is invalid: use 1-64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// The settings fields that only some kinds take, with the kinds.
fn kind_specific(s: &IntegrationSettings) -> Vec<(&'static str, bool, &'static [IntegrationKind])> {
    use IntegrationKind::{Github, Linear, Slack, Webhook};
    vec![
        ("channels", !s.channels.is_empty(), &[Slack]),
        ("bot_token_secret", s.bot_token_secret.is_some(), &[Slack]),
        ("linear_teams", !s.linear_teams.is_empty(), &[Linear]),
        ("api_key_secret", s.api_key_secret.is_some(), &[Linear]),
        ("repos", !s.repos.is_empty(), &[Github]),
        ("labels", !s.labels.is_empty(), &[Github]),
        ("mention", s.mention.is_some(), &[Linear, Github]),
        ("token_secret", s.token_secret.is_some(), &[Github]),
        ("app_id", s.app_id.is_some(), &[Github]),
        (
            "private_key_secret",
            s.private_key_secret.is_some(),
            &[Github],
        ),
        (
            "api_base_url",
            s.api_base_url.is_some(),
            &[Slack, Linear, Github],
        ),
        ("prompt_template", s.prompt_template.is_some(), &[Webhook]),
        ("title_template", s.title_template.is_some(), &[Webhook]),
        ("actor_field", s.actor_field.is_some(), &[Webhook]),
        ("link_field", s.link_field.is_some(), &[Webhook]),
    ]
}

/// Checks settings for `kind`: fields of other kinds are refused, named
/// secrets must exist in the team, templates must parse, the run
/// configuration must be one the API would accept.
async fn validate(
    app: &AppState,
    team: i64,
    kind: IntegrationKind,
    s: &mut IntegrationSettings,
) -> ApiResult<()> {
    for (field, set, kinds) in kind_specific(s) {
        if set && !kinds.contains(&kind) {
            return Err(ApiError::BadRequest(format!(
                "`settings.{field}` does not apply to {kind} integrations"
            )));
        }
    }
    for (field, list) in [
        ("channels", &s.channels),
        ("linear_teams", &s.linear_teams),
        ("repos", &s.repos),
        ("labels", &s.labels),
    ] {
        if list.len() > MAX_FILTER_ENTRIES
            || list.iter().any(|e| e.trim().is_empty() || e.len() > 200)
        {
            return Err(ApiError::BadRequest(format!(
                "`settings.{field}` takes at most {MAX_FILTER_ENTRIES} non-empty entries of at most 200 bytes"
            )));
        }
    }
    if let Some(bad) = s
        .repos
        .iter()
        .find(|r| r.split('/').filter(|p| !p.is_empty()).count() != 2)
    {
        return Err(ApiError::BadRequest(format!(
            "`settings.repos` entry `{bad}` must be `owner/name`"
        )));
    }
    if let Some(m) = &s.mention {
        let ok = !m.is_empty()
            && m.len() <= 64
            && m.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "`settings.mention` `{m}` is invalid: a handle of 1-64 letters, digits, `-`, `_` or `.`, without the `@`"
            )));
        }
    }
    if s.app_id.is_some() != s.private_key_secret.is_some() {
        return Err(ApiError::BadRequest(
            "a GitHub App needs both `settings.app_id` and `settings.private_key_secret`".into(),
        ));
    }
    if s.token_secret.is_some() && s.app_id.is_some() {
        return Err(ApiError::BadRequest(
            "give either `settings.token_secret` or a GitHub App (`app_id`, `private_key_secret`), not both".into(),
        ));
    }
    if let Some(url) = &s.api_base_url {
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if parsed.is_none() {
            return Err(ApiError::BadRequest(format!(
                "`settings.api_base_url` `{url}` is not an http(s) URL"
            )));
        }
    }
    check_texts(s)?;
    check_secrets_exist(app, team, s).await?;
    if let Some(config) = s.agent_config.as_mut() {
        crate::runs::options::check_config("settings.agent_config", config)?;
        if let Some(model) = &config.model_id {
            app.llm.providers.resolve(model).map_err(|e| {
                ApiError::BadRequest(format!("`settings.agent_config.model_id`: {e}"))
            })?;
        }
    }
    Ok(())
}

fn check_texts(s: &IntegrationSettings) -> ApiResult<()> {
    let texts = [
        ("prompt_prefix", &s.prompt_prefix),
        ("prompt_template", &s.prompt_template),
        ("title_template", &s.title_template),
        ("actor_field", &s.actor_field),
        ("link_field", &s.link_field),
    ];
    for (field, text) in texts {
        if text.as_ref().is_some_and(|t| t.len() > MAX_TEMPLATE_BYTES) {
            return Err(ApiError::BadRequest(format!(
                "`settings.{field}` is larger than {MAX_TEMPLATE_BYTES} bytes"
            )));
        }
    }
    for (field, text) in [
        ("prompt_template", &s.prompt_template),
        ("title_template", &s.title_template),
    ] {
        if let Some(t) = text {
            template::fields(t).map_err(|e| {
                ApiError::BadRequest(format!("`settings.{field}` is not a template: {e}"))
            })?;
        }
    }
    for (field, path) in [
        ("actor_field", &s.actor_field),
        ("link_field", &s.link_field),
    ] {
        if path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(ApiError::BadRequest(format!(
                "`settings.{field}` must name a payload field (`user.email`)"
            )));
        }
    }
    Ok(())
}

async fn check_secrets_exist(app: &AppState, team: i64, s: &IntegrationSettings) -> ApiResult<()> {
    let named = [
        ("bot_token_secret", &s.bot_token_secret),
        ("api_key_secret", &s.api_key_secret),
        ("token_secret", &s.token_secret),
        ("private_key_secret", &s.private_key_secret),
    ];
    for (field, name) in named {
        if let Some(name) = name
            && app.store.secret(team, name).await?.is_none()
        {
            return Err(ApiError::BadRequest(format!(
                "`settings.{field}`: team secret `{name}` does not exist; create it first \
                 (`hangar secret create {name}`, value on stdin)"
            )));
        }
    }
    Ok(())
}

async fn load(app: &AppState, team: i64, id: &str) -> ApiResult<IntegrationRecord> {
    app.store.integration(team, id).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::NotFound(format!("integration `{id}` does not exist")),
        other => other.into(),
    })
}

fn encode(s: &IntegrationSettings) -> ApiResult<String> {
    serde_json::to_string(s).map_err(|e| ApiError::Internal(e.to_string()))
}

/// `POST /integrations`: the answer carries the `webhook_url` to paste into
/// the provider's settings; never the secret.
#[utoipa::path(post, path = "/integrations", tag = "hangar", request_body = hangar_protocol::integration::CreateIntegrationRequest, responses((status = 200, description = "Created (secret never returned)", body = hangar_protocol::integration::IntegrationItem), crate::error::ProblemResponses))]
pub async fn create(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<IntegrationItem>> {
    let who = authenticate(app.store.as_ref(), &headers).await?;
    let (team, user) = who.require_api_key()?;
    crate::auth::roles::require_admin(&app, &who, "create integrations").await?;
    let mut req: CreateIntegrationRequest = parse_json(&body)?;
    req.name = req.name.trim().to_owned();
    check_name(&req.name)?;
    validate(&app, team, req.kind, &mut req.settings).await?;
    let id = hangar_protocol::RunId::generate().0;
    let (secret_nonce, secret_ciphertext) =
        integrations::seal_secret(&app, team, &id, &req.secret)?;
    let now = Timestamp::now().unix_millis();
    let record = IntegrationRecord {
        id,
        team_id: team,
        kind: req.kind.as_str().to_owned(),
        name: req.name,
        settings: encode(&req.settings)?,
        secret_nonce,
        secret_ciphertext,
        created_by: user,
        created_at: now,
        updated_at: now,
    };
    app.store.create_integration(record.clone()).await?;
    tracing::info!(integration_id = %record.id, team_id = team, kind = %record.kind, "integration created");
    Ok(Json(item(&app, &record)?))
}

/// `GET /integrations`: the team's integrations, by name.
#[utoipa::path(get, path = "/integrations", tag = "hangar", responses((status = 200, description = "Integrations", body = hangar_protocol::integration::ListIntegrationsResponse), crate::error::ProblemResponses))]
pub async fn list(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<ListIntegrationsResponse>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    let records = app.store.list_integrations(team).await?;
    Ok(Json(ListIntegrationsResponse {
        integrations: records
            .iter()
            .map(|r| item(&app, r))
            .collect::<ApiResult<_>>()?,
    }))
}

/// `GET /integrations/{integration_id}` (id or name).
#[utoipa::path(get, path = "/integrations/{integration_id}", tag = "hangar", params(("integration_id" = String, Path, description = "Id or name")), responses((status = 200, description = "The integration", body = hangar_protocol::integration::IntegrationItem), crate::error::ProblemResponses))]
pub async fn get_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationItem>> {
    let (team, _) = authenticate(app.store.as_ref(), &headers)
        .await?
        .require_api_key()?;
    Ok(Json(item(&app, &load(&app, team, &id).await?)?))
}

/// `PUT /integrations/{integration_id}`: replaces name and settings; the
/// secret only when one is given. The kind never changes.
#[utoipa::path(put, path = "/integrations/{integration_id}", tag = "hangar", params(("integration_id" = String, Path, description = "Id or name")), request_body = hangar_protocol::integration::UpdateIntegrationRequest, responses((status = 200, description = "Replaced", body = hangar_protocol::integration::IntegrationItem), crate::error::ProblemResponses))]
pub async fn update(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<IntegrationItem>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "change integrations").await?;
    let mut req: UpdateIntegrationRequest = parse_json(&body)?;
    req.name = req.name.trim().to_owned();
    check_name(&req.name)?;
    let mut record = load(&app, team, &id).await?;
    let kind = integrations::kind_of(&record)?;
    validate(&app, team, kind, &mut req.settings).await?;
    if let Some(secret) = &req.secret {
        let (nonce, ciphertext) = integrations::seal_secret(&app, team, &record.id, secret)?;
        record.secret_nonce = nonce;
        record.secret_ciphertext = ciphertext;
    }
    record.name = req.name;
    record.settings = encode(&req.settings)?;
    record.updated_at = Timestamp::now().unix_millis();
    app.store.update_integration(record.clone()).await?;
    tracing::info!(integration_id = %record.id, team_id = team, secret_replaced = req.secret.is_some(), "integration replaced");
    Ok(Json(item(&app, &record)?))
}

/// `DELETE /integrations/{integration_id}`: its webhook URL stops working at once.
#[utoipa::path(delete, path = "/integrations/{integration_id}", tag = "hangar", params(("integration_id" = String, Path, description = "Id or name")), responses((status = 200, description = "Deleted", body = Object), crate::error::ProblemResponses))]
pub async fn delete(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "delete integrations").await?;
    let record = load(&app, team, &id).await?;
    app.store.delete_integration(team, &record.id).await?;
    tracing::info!(integration_id = %record.id, team_id = team, "integration deleted");
    Ok(Json(
        serde_json::json!({ "id": record.id, "deleted": true }),
    ))
}

/// `POST /integrations/{integration_id}/test`: checks the integration's
/// credentials against its provider (Slack `auth.test`, Linear `viewer`,
/// GitHub the token's user or the App) and that its secret is readable.
/// The answer is 200 either way; `ok` says whether it works.
#[utoipa::path(post, path = "/integrations/{integration_id}/test", tag = "hangar", params(("integration_id" = String, Path, description = "Id or name")), responses((status = 200, description = "The check's result", body = hangar_protocol::integration::IntegrationTestResult), crate::error::ProblemResponses))]
pub async fn test(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<IntegrationTestResult>> {
    let team = crate::auth::roles::admin_team(&app, &headers, "test integrations").await?;
    let record = load(&app, team, &id).await?;
    let (ok, detail) = match integrations::provider::check(&app, &record).await {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    tracing::info!(integration_id = %record.id, ok, "integration tested");
    Ok(Json(IntegrationTestResult { ok, detail }))
}
