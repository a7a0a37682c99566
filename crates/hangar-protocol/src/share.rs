//! **(extension)** Session sharing: grants on a run's session
//! (`/api/v1/agent/runs/{id}/shares`), public links
//! (`/api/v1/public/sessions/{token}`), and the `--share` syntax of the CLI.
//!
//! A grant goes to the run's team, to one user of the team (by email), or to
//! anyone holding a public link; it gives `view` (watch the transcript) or
//! `edit` (also send follow-ups and cancel). Public links are view-only.

use crate::{RunState, Timestamp};
use serde::{Deserialize, Serialize};

/// Prefix of public share tokens (`hs_…`), so they are recognisable in logs
/// and by secret scanners.
pub const SHARE_TOKEN_PREFIX: &str = "hs_";

/// What a grant allows.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ShareRole {
    /// Watch the session.
    #[default]
    View,
    /// Watch, send follow-ups, cancel.
    Edit,
}

impl ShareRole {
    /// `view` or `edit`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareRole::View => "view",
            ShareRole::Edit => "edit",
        }
    }

    /// Parses `view` or `edit`.
    pub fn parse(s: &str) -> Option<ShareRole> {
        match s {
            "view" => Some(ShareRole::View),
            "edit" => Some(ShareRole::Edit),
            _ => None,
        }
    }
}

impl std::fmt::Display for ShareRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /agent/runs/{id}/shares` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateShareRequest {
    /// `team`, `user:<email>` or `public`.
    pub grantee: String,
    /// `view` (the default) or `edit` (public links: `view` only).
    #[serde(default)]
    pub role: ShareRole,
}

/// A grant as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ShareItem {
    /// Grant id (for `DELETE …/shares/{id}`).
    pub id: String,
    /// `team`, `user:<email>` or `public`.
    pub grantee: String,
    /// What it allows.
    pub role: ShareRole,
    /// Creation time.
    pub created_at: Timestamp,
    /// The public link (`<server>/s/<token>`): only in the answer that created
    /// it; the token is not stored and cannot be shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `GET /agent/runs/{id}/shares` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListSharesResponse {
    /// Grants, oldest first. Public links appear without their token.
    pub shares: Vec<ShareItem>,
}

/// `GET /public/sessions/{token}`: what a public link shows about its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PublicSession {
    /// The run.
    pub run_id: String,
    /// Title.
    pub title: String,
    /// State.
    pub state: RunState,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// Always `view`.
    pub role: ShareRole,
    /// Live events (SSE), relative to the server's base URL.
    pub events_url: String,
}

/// Why a `--share` value is not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpecError(String);

impl std::error::Error for ShareSpecError {}

impl std::fmt::Display for ShareSpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The accepted `--share` forms, for error messages.
pub const SHARE_SPEC_FORMS: &str = "team, team:view, team:edit, user@example.com, user@example.com:view, user@example.com:edit, public:view";

/// Parses a `--share` / `--with` value (`team|team:view|team:edit|user@x[:view|edit]|public:view`;
/// a bare `team`, `public` or email means `view`) into a grant request.
pub fn parse_share_spec(spec: &str) -> Result<CreateShareRequest, ShareSpecError> {
    let spec = spec.trim();
    let bad =
        |why: String| ShareSpecError(format!("`{spec}`: {why}; use one of {SHARE_SPEC_FORMS}"));
    if spec.is_empty() {
        return Err(bad("empty share".into()));
    }
    let (who, role) = match spec.rsplit_once(':') {
        Some((who, role)) => {
            let role = ShareRole::parse(role).ok_or_else(|| {
                bad(format!(
                    "unknown role `{role}` (roles are `view` and `edit`)"
                ))
            })?;
            (who, role)
        }
        None => (spec, ShareRole::View),
    };
    let grantee = match who {
        "team" => "team".to_owned(),
        "public" => {
            if role == ShareRole::Edit {
                return Err(bad(
                    "public links are view-only; share edit access with `team:edit` or a user's email"
                        .into(),
                ));
            }
            "public".to_owned()
        }
        email => {
            validate_email(email).map_err(bad)?;
            format!("user:{email}")
        }
    };
    Ok(CreateShareRequest { grantee, role })
}

/// Checks the shape of an email address (`local@domain`, no spaces).
pub fn validate_email(email: &str) -> Result<(), String> {
    let ok = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && email.len() <= 320
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{email}` is neither `team`, `public` nor an email address"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> (String, ShareRole) {
        let r = parse_share_spec(spec).unwrap();
        (r.grantee, r.role)
    }

    #[test]
    fn share_specs_parse() {
        assert_eq!(ok("team"), ("team".into(), ShareRole::View));
        assert_eq!(ok("team:view"), ("team".into(), ShareRole::View));
        assert_eq!(ok("team:edit"), ("team".into(), ShareRole::Edit));
        assert_eq!(ok("public:view"), ("public".into(), ShareRole::View));
        assert_eq!(ok("ana@x.io"), ("user:ana@x.io".into(), ShareRole::View));
        assert_eq!(
            ok("ana@x.io:edit"),
            ("user:ana@x.io".into(), ShareRole::Edit)
        );
    }

    #[test]
    fn bad_share_specs_say_why() {
        let err = |s: &str| parse_share_spec(s).unwrap_err().to_string();
        assert!(err("public:edit").contains("view-only"));
        assert!(err("team:admin").contains("unknown role `admin`"));
        assert!(err("bob").contains("neither"));
        assert!(err("").contains("empty"));
        assert!(err("a b@x:view").contains("neither"));
        assert!(err("team:owner").contains(SHARE_SPEC_FORMS));
    }
}
