//! HTTP errors: every error the API returns is built here, as RFC 7807
//! `application/problem+json` with the Oz error code. Internal errors are
//! translated to the wire once, in [`ApiError::problem`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hangar_protocol::{PlatformErrorCode, Problem};
use hangar_store::StoreError;

tokio::task_local! {
    /// The path of the request being handled, for problem `instance` fields.
    pub static REQUEST_PATH: String;
}

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or has invalid values (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or an invalid credential (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential lacks the right (403).
    #[error("{0}")]
    Forbidden(String),
    /// Not found, or not visible to the caller's team (404).
    #[error("{0}")]
    NotFound(String),
    /// Method not allowed on this path (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Conflicts with the resource's state (409).
    #[error("{0}")]
    Conflict(String),
    /// The operation is invalid in the resource's state (400, `operation_not_supported`).
    #[error("{0}")]
    InvalidState(String),
    /// Body too large (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Too many requests (429).
    #[error("{0}")]
    TooManyRequests(String),
    /// A spending budget is used up (402, `budget_exceeded`).
    #[error("{0}")]
    BudgetExceeded(String),
    /// An upstream model provider failed (502).
    #[error("{0}")]
    BadGateway(String),
    /// Temporarily unavailable (503).
    #[error("{0}")]
    Unavailable(String),
    /// The store could not commit the write: nothing was stored (503,
    /// `storage_unavailable`, `Retry-After`).
    #[error("{0}")]
    StorageUnavailable(String),
    /// A bug or an unexpected failure (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status, error code and title of this error.
    fn parts(&self) -> (StatusCode, PlatformErrorCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                PlatformErrorCode::InvalidRequest,
                "Invalid request",
            ),
            ApiError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                PlatformErrorCode::AuthenticationRequired,
                "Authentication required",
            ),
            ApiError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                PlatformErrorCode::NotAuthorized,
                "Not authorized",
            ),
            ApiError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                PlatformErrorCode::ResourceNotFound,
                "Resource not found",
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                PlatformErrorCode::OperationNotSupported,
                "Method not allowed",
            ),
            ApiError::Conflict(_) => (
                StatusCode::CONFLICT,
                PlatformErrorCode::Conflict,
                "Conflict",
            ),
            ApiError::InvalidState(_) => (
                StatusCode::BAD_REQUEST,
                PlatformErrorCode::OperationNotSupported,
                "Operation not supported",
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                PlatformErrorCode::InvalidRequest,
                "Payload too large",
            ),
            ApiError::TooManyRequests(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                PlatformErrorCode::ResourceUnavailable,
                "Too many requests",
            ),
            ApiError::BudgetExceeded(_) => (
                StatusCode::PAYMENT_REQUIRED,
                PlatformErrorCode::BudgetExceeded,
                "Budget exceeded",
            ),
            ApiError::BadGateway(_) => (
                StatusCode::BAD_GATEWAY,
                PlatformErrorCode::ResourceUnavailable,
                "Model provider error",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                PlatformErrorCode::ResourceUnavailable,
                "Service unavailable",
            ),
            ApiError::StorageUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                PlatformErrorCode::StorageUnavailable,
                "Storage unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                PlatformErrorCode::InternalError,
                "Internal error",
            ),
        }
    }

    /// The problem body for this error, with `instance` set to the request path.
    pub fn problem(&self) -> Problem {
        let (status, code, title) = self.parts();
        let mut problem = Problem::new(status.as_u16(), code, title, self.to_string());
        problem.instance = REQUEST_PATH.try_with(|p| p.clone()).ok();
        problem
    }

    /// A 404 for a run id.
    pub fn run_not_found(id: &str) -> Self {
        ApiError::NotFound(format!(
            "run `{id}` does not exist or is not visible to this team"
        ))
    }
}

/// The error answer of every route, described once for the OpenAPI
/// document: `4XX` with an RFC 7807 problem (`responses(…, ProblemResponses)`).
#[derive(utoipa::IntoResponses)]
#[response(
    status = "4XX",
    description = "Problem (RFC 7807)",
    content_type = "application/problem+json"
)]
pub struct ProblemResponses(#[allow(dead_code)] hangar_protocol::Problem);

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        crate::metrics::get().store_error(&e);
        match e {
            StoreError::NotFound => ApiError::NotFound("the resource does not exist".to_owned()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Unavailable(source) => {
                tracing::error!(error = %source, "storage unavailable: the write was not stored");
                ApiError::StorageUnavailable(
                    "storage is temporarily unavailable (disk full, I/O error or database \
                     unreachable), so nothing was stored; retry after the Retry-After delay"
                        .to_owned(),
                )
            }
            StoreError::Database(source) => {
                tracing::error!(error = %source, "database error");
                ApiError::Internal("database error".to_owned())
            }
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "corrupt row");
                ApiError::Internal("stored data could not be read".to_owned())
            }
            StoreError::Migrate(source) => {
                tracing::error!(error = %source, "migration error");
                ApiError::Internal("database schema error".to_owned())
            }
        }
    }
}

/// The `application/problem+json` content type.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Serializes a problem as a response.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if problem.retryable && status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
    {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.problem())
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
