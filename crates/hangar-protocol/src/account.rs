//! **(extension)** Teams and users: `/api/v1/teams` and `/api/v1/users`.
//!
//! Passwords are write-only: they appear in requests, never in answers.

use crate::SecretString;
use serde::{Deserialize, Serialize};

/// A team as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TeamItem {
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Users in the team (not deleted ones).
    pub user_count: u64,
}

/// `GET /teams`: the caller's team (a credential belongs to exactly one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListTeamsResponse {
    /// Teams visible to the caller.
    pub teams: Vec<TeamItem>,
}

/// A user's role in their team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Manages users and everything else.
    Admin,
    /// Uses the team's resources.
    Member,
}

impl UserRole {
    /// `admin` or `member`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Admin => "admin",
            UserRole::Member => "member",
        }
    }

    /// Parses `admin` or `member`.
    pub fn parse(s: &str) -> Option<UserRole> {
        match s {
            "admin" => Some(UserRole::Admin),
            "member" => Some(UserRole::Member),
            _ => None,
        }
    }
}

/// A user as the API returns it (never a password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct UserItem {
    /// Public id.
    pub id: String,
    /// Email (the dashboard login); `null` for the bootstrap admin until set.
    pub email: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: UserRole,
    /// The account cannot sign in.
    pub disabled: bool,
}

/// `GET /users` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ListUsersResponse {
    /// Users, oldest first.
    pub users: Vec<UserItem>,
}

/// `POST /users` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Email (unique across the installation, case-insensitive).
    #[cfg_attr(feature = "utoipa", schema(format = Email))]
    pub email: String,
    /// Display name; defaults to the part of the email before `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub display_name: Option<String>,
    /// Role; defaults to `member`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<UserRole>,
    /// Password for the dashboard (at least 10 characters); without one the
    /// user cannot sign in until an admin sets it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::secret::expose_option"
    )]
    #[cfg_attr(
        feature = "utoipa",
        schema(value_type = Option<String>, format = Password, write_only, min_length = 10, max_length = 1024)
    )]
    pub password: Option<SecretString>,
}

/// `PATCH /users/{id}` body: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// New email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(format = Email))]
    pub email: Option<String>,
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "utoipa",
        schema(min_length = 1, max_length = 100, pattern = r"\S")
    )]
    pub display_name: Option<String>,
    /// New role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<UserRole>,
    /// Disable or re-enable the account (disabling signs the user out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// New password (signs the user out everywhere).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::secret::expose_option"
    )]
    #[cfg_attr(
        feature = "utoipa",
        schema(value_type = Option<String>, format = Password, write_only, min_length = 10, max_length = 1024)
    )]
    pub password: Option<SecretString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show_in_debug_output() {
        let req = CreateUserRequest {
            email: "a@b.c".into(),
            display_name: None,
            role: Some(UserRole::Admin),
            password: Some("hunter2hunter2".into()),
        };
        assert!(!format!("{req:?}").contains("hunter2"));
        let upd = UpdateUserRequest {
            password: Some("hunter2hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{upd:?}").contains("hunter2"));
    }

    #[test]
    fn unknown_roles_and_fields_are_refused() {
        assert!(
            serde_json::from_str::<CreateUserRequest>(r#"{"email":"a@b","role":"owner"}"#).is_err()
        );
        assert!(serde_json::from_str::<UpdateUserRequest>(r#"{"passwd":"x"}"#).is_err());
        let r: CreateUserRequest =
            serde_json::from_str(r#"{"email":"a@b","role":"admin"}"#).unwrap();
        assert_eq!(r.role, Some(UserRole::Admin));
    }
}
