//! The LLM gateway: `POST /api/v1/llm/chat/completions`, OpenAI-compatible,
//! streaming and not. Provider keys stay here; tasks hold only their run
//! token. Token usage is metered onto the run.

use crate::AppState;
use crate::auth::{Principal, authenticate};
use crate::error::{ApiError, ApiResult};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hangar_llm::{LlmError, ProviderConfig, ProviderKind, ProviderRegistry, ProvidersConfig};
use hangar_protocol::RunId;
use hangar_protocol::llm::{ChatRequest, ModelEntry, Usage};
use std::sync::Arc;

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
#[utoipa::path(get, path = "/llm/models", tag = "llm", responses((status = 200, description = "OpenAI-compatible model list", body = Object), (status = "4XX", description = "Problem (RFC 7807)", body = hangar_protocol::Problem, content_type = "application/problem+json")))]
pub async fn models(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authenticate(app.store.as_ref(), &headers).await?;
    let models: Vec<ModelEntry> = app.llm.models();
    Ok(axum::Json(serde_json::json!({ "object": "list", "data": models })).into_response())
}

/// `POST /api/v1/llm/chat/completions`.
#[utoipa::path(post, path = "/llm/chat/completions", tag = "llm", request_body = Object, responses((status = 200, description = "OpenAI-compatible chat completion (JSON or SSE)", body = Object), (status = "4XX", description = "Problem (RFC 7807)", body = hangar_protocol::Problem, content_type = "application/problem+json")))]
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
    let (provider, local_model) = app.llm.resolve(&request.model).map_err(gateway_error)?;
    let run = match &principal {
        Principal::RunToken { run_id, .. } => Some(run_id.clone()),
        Principal::ApiKey { .. } | Principal::WebSession { .. } => None,
    };
    let streaming = request.stream.unwrap_or(false);
    let public_model = std::mem::replace(&mut request.model, local_model);
    let priced_model = public_model.clone();
    request.stream = Some(true);
    let stream = provider.chat_stream(request).await.map_err(gateway_error)?;

    if !streaming {
        let mut response = hangar_llm::collect(stream).await.map_err(gateway_error)?;
        response.model = public_model;
        if let (Some(run), Some(usage)) = (&run, response.usage) {
            record_usage(&app, run, &priced_model, usage).await;
        }
        return Ok(axum::Json(response).into_response());
    }

    // Stream: forward chunks as SSE, meter usage when the stream ends.
    let app2 = app.clone();
    let sse = async_stream_sse(stream, public_model, move |usage| {
        let app = app2.clone();
        let run = run.clone();
        let model = priced_model.clone();
        async move {
            if let (Some(run), Some(usage)) = (run, usage) {
                record_usage(&app, &run, &model, usage).await;
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(sse));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

async fn record_usage(app: &AppState, run: &RunId, model: &str, usage: Usage) {
    // Cost from the provider's price table (`prices:` in the config); 0 when unpriced.
    let cost = app.llm.cost(model, &usage).unwrap_or(0.0);
    if let Err(e) = app
        .store
        .add_usage(run, usage.prompt_tokens, usage.completion_tokens, cost)
        .await
    {
        tracing::warn!(error = %e, run_id = %run, "could not record token usage");
    }
}

/// Turns a chunk stream into SSE frames; calls `on_end` with the last usage seen.
fn async_stream_sse<F, Fut>(
    stream: hangar_llm::ChunkStream,
    model: String,
    on_end: F,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    F: FnOnce(Option<Usage>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    struct State<F> {
        stream: hangar_llm::ChunkStream,
        usage: Option<Usage>,
        on_end: Option<F>,
        done: bool,
        model: Arc<str>,
    }
    let state = State {
        stream,
        usage: None,
        on_end: Some(on_end),
        done: false,
        model: model.into(),
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.stream.next().await {
            Some(Ok(mut chunk)) => {
                if chunk.usage.is_some() {
                    st.usage = chunk.usage;
                }
                chunk.model = st.model.to_string();
                let data = serde_json::to_string(&chunk).unwrap_or_default();
                Some((Ok(Bytes::from(format!("data: {data}\n\n"))), st))
            }
            Some(Err(e)) => {
                st.done = true;
                let err = serde_json::json!({"error": {"message": e.to_string(), "type": "provider_error"}});
                if let Some(f) = st.on_end.take() {
                    f(st.usage).await;
                }
                Some((Ok(Bytes::from(format!("data: {err}\n\n"))), st))
            }
            None => {
                st.done = true;
                if let Some(f) = st.on_end.take() {
                    f(st.usage).await;
                }
                Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), st))
            }
        }
    })
}
