//! `/healthz` (the process is alive) and `/readyz` (the store can commit a write).
//! The page at `/` is the dashboard ([`crate::web::dashboard`]).

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Liveness.
pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Readiness: the database commits a write (a full disk fails this, `/healthz` stays up).
pub async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "status": "unavailable",
                    "reason": format!("the store cannot commit writes: {e}"),
                })),
            )
                .into_response()
        }
    }
}
