//! `/healthz` (the process is alive) and `/readyz` (the store answers).

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Liveness.
pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Readiness: the database answers a query.
pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable", "reason": "store unreachable"})),
            )
                .into_response()
        }
    }
}

/// The landing page at `/` (the dashboard grows here).
pub async fn home() -> Response {
    axum::response::Html(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hangar</title></head>\
         <body style=\"font-family:system-ui;max-width:40rem;margin:3rem auto\">\
         <h1>Hangar</h1><p>The control plane is running.</p>\
         <ul><li>API: <code>/api/v1</code> (Bearer API key)</li>\
         <li>Health: <a href=\"/healthz\">/healthz</a>, <a href=\"/readyz\">/readyz</a></li>\
         <li>CLI: <code>hangar run list</code>, <code>hangar agent run-cloud -p \"…\"</code></li></ul>\
         </body></html>",
    )
    .into_response()
}
