//! `/healthz` (the process is alive, and its store is not broken for good)
//! and `/readyz` (the store can commit a write).
//! The page at `/` is the dashboard ([`crate::web::dashboard`]).

use crate::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Liveness. It fails only when the store refuses every write until a
/// restart ([`hangar_store::Store::broken`]: a failed fsync), so that a
/// supervisor restarts the server; a full disk, which passes, fails `/readyz`.
pub async fn healthz(State(app): State<AppState>) -> Response {
    match app.store.broken() {
        None => Json(serde_json::json!({"status": "ok"})).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "broken", "reason": why})),
        )
            .into_response(),
    }
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
