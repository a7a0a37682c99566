//! RFC 7807 problem details, as the Oz API's `Error` schema.

use serde::{Deserialize, Serialize};

/// Machine-readable error code (`PlatformErrorCode` in the Oz API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlatformErrorCode {
    /// No remaining credits.
    InsufficientCredits,
    /// Feature not enabled.
    FeatureNotAvailable,
    /// An external service needs authorisation.
    ExternalAuthenticationRequired,
    /// The principal lacks permission.
    NotAuthorized,
    /// Malformed request or invalid parameters.
    InvalidRequest,
    /// Referenced resource does not exist.
    ResourceNotFound,
    /// Spending budget reached.
    BudgetExceeded,
    /// Integration disabled.
    IntegrationDisabled,
    /// Integration incomplete.
    IntegrationNotConfigured,
    /// Operation not supported in this state.
    OperationNotSupported,
    /// Environment setup failed.
    EnvironmentSetupFailed,
    /// Content policy.
    ContentPolicyViolation,
    /// Conflicts with current state.
    Conflict,
    /// Missing or invalid credentials.
    AuthenticationRequired,
    /// Transient infrastructure problem.
    ResourceUnavailable,
    /// The store cannot commit writes (disk full, I/O error, read-only
    /// database, lost database connection): nothing was stored; retry later.
    StorageUnavailable,
    /// Unexpected server error.
    InternalError,
}

impl PlatformErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformErrorCode::InsufficientCredits => "insufficient_credits",
            PlatformErrorCode::FeatureNotAvailable => "feature_not_available",
            PlatformErrorCode::ExternalAuthenticationRequired => "external_authentication_required",
            PlatformErrorCode::NotAuthorized => "not_authorized",
            PlatformErrorCode::InvalidRequest => "invalid_request",
            PlatformErrorCode::ResourceNotFound => "resource_not_found",
            PlatformErrorCode::BudgetExceeded => "budget_exceeded",
            PlatformErrorCode::IntegrationDisabled => "integration_disabled",
            PlatformErrorCode::IntegrationNotConfigured => "integration_not_configured",
            PlatformErrorCode::OperationNotSupported => "operation_not_supported",
            PlatformErrorCode::EnvironmentSetupFailed => "environment_setup_failed",
            PlatformErrorCode::ContentPolicyViolation => "content_policy_violation",
            PlatformErrorCode::Conflict => "conflict",
            PlatformErrorCode::AuthenticationRequired => "authentication_required",
            PlatformErrorCode::ResourceUnavailable => "resource_unavailable",
            PlatformErrorCode::StorageUnavailable => "storage_unavailable",
            PlatformErrorCode::InternalError => "internal_error",
        }
    }
}

/// Base of the `type` URI of every problem.
pub const PROBLEM_TYPE_BASE: &str = "https://hangar.dev/problems/";

/// An `application/problem+json` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "utoipa", schema(as = Error))]
pub struct Problem {
    /// URI identifying the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this occurrence and how to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Error code (`PlatformErrorCode`).
    pub error: String,
    /// Whether retrying the same request may succeed.
    #[serde(default)]
    pub retryable: bool,
    /// Trace id for support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Problem {
    /// A problem for `code` with a detail message.
    pub fn new(
        status: u16,
        code: PlatformErrorCode,
        title: &str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind: format!("{PROBLEM_TYPE_BASE}{}", code.as_str()),
            title: title.to_owned(),
            status,
            detail: Some(detail.into()),
            instance: None,
            error: code.as_str().to_owned(),
            retryable: matches!(
                code,
                PlatformErrorCode::ResourceUnavailable
                    | PlatformErrorCode::StorageUnavailable
                    | PlatformErrorCode::InternalError
            ),
            trace_id: None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(d) => write!(f, "{} ({}): {}", self.title, self.status, d),
            None => write!(f, "{} ({})", self.title, self.status),
        }
    }
}
