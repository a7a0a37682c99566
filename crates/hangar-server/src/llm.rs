//! The LLM gateway: `POST /api/v1/llm/chat/completions`, OpenAI-compatible,
//! streaming and not. Provider keys stay here; tasks hold only their run
//! token.
//!
//! Every call is metered ([`meter`]): onto its run for run tokens, onto the
//! API key or dashboard user otherwise (`GET /llm/usage`), also when the
//! client closes the stream early. Budgets ([`budget`], `llm_gateway:` in
//! the server config) refuse calls over a request rate and end runs that
//! used their tokens or dollars.

pub mod budget;
pub mod meter;

pub use budget::{GatewayBudgets, GatewayConfig, TeamLimits};

use crate::AppState;
use crate::auth::{Principal, authenticate};
use crate::error::{ApiError, ApiResult};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hangar_llm::{LlmError, ProviderConfig, ProviderKind, ProviderRegistry, ProvidersConfig};
use hangar_protocol::llm::{ChatRequest, ModelEntry};
use hangar_store::UsageSubject;
use meter::{Meter, Payer};
use std::sync::Arc;

/// The LLM services of [`AppState`].
pub struct Llm {
    /// Model providers.
    pub providers: Arc<ProviderRegistry>,
    /// Model for runs that name none.
    pub default_model: Option<String>,
    /// Gateway budgets and rate buckets (`llm_gateway:`).
    pub budgets: Arc<GatewayBudgets>,
}

/// Builds the registry from the config file's providers, plus (when enabled)
/// `OPENAI_API_KEY`/`OPENAI_BASE_URL` and `ANTHROPIC_API_KEY`/`ANTHROPIC_BASE_URL`
/// for providers named `openai`/`anthropic` that the file does not define.
pub fn build_registry(
    providers: &ProvidersConfig,
    from_env: bool,
) -> Result<ProviderRegistry, LlmError> {
    let mut merged = providers.clone();
    if from_env {
        let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        for (name, kind, key_var, url_var) in [
            (
                "openai",
                ProviderKind::Openai,
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
            ),
            (
                "anthropic",
                ProviderKind::Anthropic,
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL",
            ),
        ] {
            if merged.contains_key(name) || set(key_var).is_none() {
                continue;
            }
            let mut provider = ProviderConfig::new(kind);
            provider.api_key_env = Some(key_var.to_owned());
            provider.base_url = set(url_var);
            merged.insert(name.to_owned(), provider);
        }
    }
    ProviderRegistry::from_config(&merged)
}

fn gateway_error(e: LlmError) -> ApiError {
    match e {
        LlmError::UnknownModel { .. } => ApiError::BadRequest(e.to_string()),
        LlmError::Status { status: 429, .. } => ApiError::TooManyRequests(e.to_string()),
        LlmError::Status {
            status: 400..=499, ..
        } => ApiError::BadRequest(e.to_string()),
        other => ApiError::BadGateway(other.to_string()),
    }
}

/// `GET /api/v1/llm/models`.
#[utoipa::path(get, path = "/llm/models", tag = "llm", responses((status = 200, description = "OpenAI-compatible model list", body = Object), crate::error::ProblemResponses))]
pub async fn models(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authenticate(app.store.as_ref(), &headers).await?;
    let models: Vec<ModelEntry> = app.llm.providers.models();
    Ok(axum::Json(serde_json::json!({ "object": "list", "data": models })).into_response())
}

/// `GET /api/v1/llm/usage`: gateway usage of the callers without a run
/// (API keys, and dashboard users calling with their session): admins see
/// the whole team's, members their own keys' and their own. Runs carry their
/// usage themselves (`request_usage` of `GET /agent/runs/{id}`).
#[utoipa::path(get, path = "/llm/usage", tag = "llm", responses((status = 200, description = "`{usage: [{caller: api_key|dashboard_session, api_key_id?, user_id?, name, requests, prompt_tokens, completion_tokens, cost_usd, updated_at}]}`", body = Object), crate::error::ProblemResponses))]
pub async fn usage(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let who = authenticate(app.store.as_ref(), &headers).await?;
    let (team, user) = who.require_api_key()?;
    let all = crate::auth::roles::role(&app, &who).await? == crate::auth::roles::Role::Admin;
    let keys: std::collections::HashMap<String, hangar_store::ApiKeyRecord> = app
        .store
        .list_api_keys(team)
        .await?
        .into_iter()
        .map(|k| (k.id.clone(), k))
        .collect();
    let mut entries = Vec::new();
    for row in app.store.caller_usage(team).await? {
        let mut entry = serde_json::json!({
            "requests": row.requests,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "cost_usd": row.cost_usd,
            "updated_at": hangar_protocol::Timestamp::from_unix_millis(row.updated_at),
        });
        match &row.subject {
            UsageSubject::ApiKey(id) => {
                let key = keys.get(id);
                if !all && key.is_none_or(|k| k.user_id.is_none() || k.user_id != user) {
                    continue;
                }
                entry["caller"] = "api_key".into();
                entry["api_key_id"] = id.clone().into();
                entry["name"] = key.map(|k| k.name.clone()).into();
            }
            UsageSubject::User(id) => {
                if !all && user != Some(*id) {
                    continue;
                }
                let record = app.store.user(*id).await?;
                entry["caller"] = "dashboard_session".into();
                entry["user_id"] = record.uid.into();
                entry["name"] = record.email.unwrap_or(record.display_name).into();
            }
        }
        entries.push(entry);
    }
    Ok(axum::Json(serde_json::json!({ "usage": entries })).into_response())
}

/// `POST /api/v1/llm/chat/completions`.
#[utoipa::path(post, path = "/llm/chat/completions", tag = "llm", request_body = Object, responses((status = 200, description = "OpenAI-compatible chat completion (JSON or SSE)", body = Object), (status = "4XX", description = "Problem (RFC 7807); 402 `budget_exceeded` once a run used its budget, 429 with `Retry-After` over `llm_gateway.requests_per_second`", body = hangar_protocol::Problem, content_type = "application/problem+json")))]
pub async fn chat_completions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let principal = authenticate(app.store.as_ref(), &headers).await?;
    let mut request: ChatRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid chat completion request: {e}")))?;
    if request.messages.is_empty() {
        return Err(ApiError::BadRequest("`messages` must not be empty".into()));
    }
    let (provider, local_model) = app
        .llm
        .providers
        .resolve(&request.model)
        .map_err(gateway_error)?;
    let payer = match &principal {
        Principal::RunToken {
            team_id, run_id, ..
        } => Payer::Run {
            team_id: *team_id,
            run_id: run_id.clone(),
        },
        Principal::ApiKey {
            team_id, key_id, ..
        } => Payer::Caller {
            team_id: *team_id,
            subject: UsageSubject::ApiKey(key_id.clone()),
        },
        Principal::WebSession { team_id, user_id } => Payer::Caller {
            team_id: *team_id,
            subject: UsageSubject::User(*user_id),
        },
    };
    if let Err(refused) = check_budget(&app, &payer).await {
        return Ok(refused);
    }

    let streaming = request.stream.unwrap_or(false);
    let public_model = std::mem::replace(&mut request.model, local_model);
    let meter = Meter::new(app.clone(), payer, public_model.clone(), body.len());
    request.stream = Some(true);
    // Dropped while this waits (the client hung up): metered, since the
    // provider may be working on the prompt already.
    let stream = match provider.chat_stream(request).await {
        Ok(stream) => stream,
        Err(e) => {
            // The provider refused or failed before answering: nothing to bill.
            meter.discard();
            return Err(gateway_error(e));
        }
    };

    if !streaming {
        // The meter sees every chunk `collect` folds, so a client that
        // hangs up mid-way (dropping this future) is still metered.
        let observe = meter.observer();
        let observed: hangar_llm::ChunkStream = Box::pin(stream.inspect(move |item| {
            if let Ok(chunk) = item {
                observe(chunk);
            }
        }));
        let collected = hangar_llm::collect(observed).await;
        meter.finish().await;
        let mut response = collected.map_err(gateway_error)?;
        response.model = public_model;
        return Ok(axum::Json(response).into_response());
    }

    let sse = metered_sse(stream, public_model, meter);
    let mut resp = Response::new(Body::from_stream(sse));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Refuses a call before it reaches a provider: over the payer's request
/// rate (429 with `Retry-After`), or from a run that used its budget (402;
/// the run is ended then if an earlier check could not end it).
async fn check_budget(app: &AppState, payer: &Payer) -> Result<(), Response> {
    let team_id = match payer {
        Payer::Run { team_id, .. } | Payer::Caller { team_id, .. } => *team_id,
    };
    let limits = app.llm.budgets.limits(app.store.as_ref(), team_id).await;
    if let Err(wait) = app.llm.budgets.check_rate(&limits, &payer.bucket()) {
        crate::metrics::get().rate_limited("llm_gateway");
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let who = match payer {
            Payer::Run { .. } => "this run",
            Payer::Caller { .. } => "this API key",
        };
        let mut resp = ApiError::TooManyRequests(format!(
            "too many model calls from {who}: over llm_gateway.requests_per_second = {}; \
             retry in {secs}s",
            limits.requests_per_second
        ))
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(resp);
    }
    if let Payer::Run { run_id, .. } = payer {
        let run = app
            .store
            .run_any_team(run_id)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        if let Some(why) = meter::enforce(app, team_id, &run).await {
            return Err(ApiError::BudgetExceeded(why).into_response());
        }
    }
    Ok(())
}

/// Turns a chunk stream into SSE frames, metering what passes: at the end
/// or on an error the meter records and the stream ends; when the client
/// drops the body first, the meter's `Drop` records what was seen.
fn metered_sse(
    stream: hangar_llm::ChunkStream,
    model: String,
    meter: Meter,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct State {
        stream: hangar_llm::ChunkStream,
        meter: Option<Meter>,
        model: Arc<str>,
    }
    let state = State {
        stream,
        meter: Some(meter),
        model: model.into(),
    };
    futures::stream::unfold(state, |mut st| async move {
        // No meter: the end was sent.
        let meter = st.meter.as_ref()?;
        match st.stream.next().await {
            Some(Ok(mut chunk)) => {
                meter.observe(&chunk);
                chunk.model = st.model.to_string();
                let data = serde_json::to_string(&chunk).unwrap_or_default();
                Some((Ok(Bytes::from(format!("data: {data}\n\n"))), st))
            }
            Some(Err(e)) => {
                if let Some(m) = st.meter.take() {
                    m.finish().await;
                }
                let err = serde_json::json!({"error": {"message": e.to_string(), "type": "provider_error"}});
                Some((Ok(Bytes::from(format!("data: {err}\n\n"))), st))
            }
            None => {
                if let Some(m) = st.meter.take() {
                    m.finish().await;
                }
                Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), st))
            }
        }
    })
}
