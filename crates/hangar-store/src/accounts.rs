//! Local accounts for the dashboard: password hashes, disabling and
//! deleting users, and web sessions.
//!
//! The store never sees a password or a session token: the server hashes
//! passwords with argon2id and session tokens with SHA-256 before they get
//! here. Emails are unique across the installation, compared
//! case-insensitively (a login names no team). Deleting a user is soft: runs,
//! keys and schedules keep pointing at the row, which disappears from lists
//! and lookups, loses its email and password, and can no longer sign in.
//!
//! Invariants the implementations enforce in one transaction: a team keeps at
//! least one active admin (a change that would remove the last one is a
//! `Conflict`), and disabling a user, changing their password or deleting them
//! ends every web session they have.

use crate::{StoreError, StoreResult, UserRecord};
use async_trait::async_trait;

/// A change to a user; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserUpdate {
    /// New email (unique, case-insensitive).
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New role (`admin` or `member`).
    pub role: Option<String>,
    /// Disable (true) or enable (false) the account.
    pub disabled: Option<bool>,
}

/// What a login needs: the user and their password hash (a PHC string).
#[derive(Clone, PartialEq)]
pub struct UserCredentials {
    /// The user (never a deleted one).
    pub user: UserRecord,
    /// argon2id hash in PHC format; `None` when no password was set.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user", &self.user)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A web session (the dashboard's cookie); only the token's hash is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSessionRecord {
    /// SHA-256 of the cookie token.
    pub token_hash: Vec<u8>,
    /// Team of the user.
    pub team_id: i64,
    /// The signed-in user.
    pub user_id: i64,
    /// Creation (ms).
    pub created_at: i64,
    /// Expiry (ms); the session is dead from then on.
    pub expires_at: i64,
}

/// Accounts and web sessions.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Users of a team (not deleted ones), oldest first.
    async fn list_users(&self, team_id: i64) -> StoreResult<Vec<UserRecord>>;
    /// A user of a team by public id; `NotFound` for another team's or a deleted user.
    async fn user_by_uid(&self, team_id: i64, uid: &str) -> StoreResult<UserRecord>;
    /// The credentials of the (not deleted) user with this email, in any team.
    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>>;
    /// Changes a user; `Conflict` on a taken email or when the team would be
    /// left without an active admin. Disabling ends the user's web sessions.
    async fn update_user(
        &self,
        team_id: i64,
        uid: &str,
        update: UserUpdate,
    ) -> StoreResult<UserRecord>;
    /// Soft-deletes a user: clears email and password, disables the account,
    /// revokes their personal API keys and ends their web sessions.
    /// `Conflict` when they are the team's last active admin.
    async fn delete_user(&self, team_id: i64, uid: &str, at: i64) -> StoreResult<()>;
    /// Sets (or with `None` clears) a user's password hash and ends their web sessions.
    async fn set_password_hash(
        &self,
        team_id: i64,
        uid: &str,
        hash: Option<&str>,
    ) -> StoreResult<()>;

    /// Stores a new web session.
    async fn create_web_session(&self, session: WebSessionRecord) -> StoreResult<()>;
    /// A live session: not expired at `now`, of a user who is neither
    /// disabled nor deleted.
    async fn web_session(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<WebSessionRecord>>;
    /// Ends one session (logout; idempotent).
    async fn delete_web_session(&self, token_hash: &[u8]) -> StoreResult<()>;
    /// Ends every session of a user; returns how many there were.
    async fn delete_user_web_sessions(&self, user_id: i64) -> StoreResult<u64>;
    /// Removes sessions that expired before `now`; returns how many.
    async fn purge_expired_web_sessions(&self, now: i64) -> StoreResult<u64>;
}

/// The `users` columns [`UserRecord`] is decoded from.
pub(crate) const USER_COLUMNS: &str =
    "id, uid, team_id, email, display_name, role, disabled, deleted_at";

/// Why a change that would leave a team without an active admin is refused.
pub(crate) const LAST_ADMIN: &str =
    "this user is the team's last active admin; make another user an admin first";

/// Maps an error writing a user: a unique violation is the email being
/// taken; anything else goes through the store's own mapping (`other`).
pub(crate) fn user_write_error(
    e: sqlx::Error,
    email: Option<&str>,
    other: fn(sqlx::Error) -> StoreError,
) -> StoreError {
    if matches!(&e, sqlx::Error::Database(db) if db.is_unique_violation()) {
        StoreError::Conflict(format!(
            "the email `{}` is already used by another account",
            email.unwrap_or_default()
        ))
    } else {
        other(e)
    }
}

/// Whether the user counts as an active admin (the kind a team must keep one of).
pub(crate) fn is_active_admin(user: &UserRecord) -> bool {
    user.role == "admin" && !user.disabled
}

/// `old` with `update` applied.
pub(crate) fn apply_update(old: &UserRecord, update: UserUpdate) -> UserRecord {
    UserRecord {
        email: update.email.or(old.email.clone()),
        display_name: update.display_name.unwrap_or(old.display_name.clone()),
        role: update.role.unwrap_or(old.role.clone()),
        disabled: update.disabled.unwrap_or(old.disabled),
        ..old.clone()
    }
}
