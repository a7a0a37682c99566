//! [`AccountStore`] on SQLite, plus the user lookups [`TeamStore`] delegates here.

use super::SqliteStore;
use crate::*;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};

const USER_COLUMNS: &str = "id, uid, team_id, email, display_name, role, disabled, deleted_at";

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn email_taken(email: Option<&str>) -> StoreError {
    StoreError::Conflict(format!(
        "the email `{}` is already used by another account",
        email.unwrap_or_default()
    ))
}

fn user_from_row(row: &SqliteRow) -> StoreResult<UserRecord> {
    let deleted: Option<i64> = row.try_get("deleted_at")?;
    Ok(UserRecord {
        id: row.try_get("id")?,
        uid: row.try_get("uid")?,
        team_id: row.try_get("team_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: row.try_get("role")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0 || deleted.is_some(),
    })
}

fn session_from_row(row: &SqliteRow) -> StoreResult<WebSessionRecord> {
    Ok(WebSessionRecord {
        token_hash: row.try_get("token_hash")?,
        team_id: row.try_get("team_id")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// A user by numeric id (deleted users included: runs still name them).
pub(super) async fn user(store: &SqliteStore, id: i64) -> StoreResult<UserRecord> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = ?"
    )))
    .bind(id)
    .fetch_one(&store.pool)
    .await?;
    user_from_row(&row)
}

/// A (not deleted) user of a team by email, compared case-insensitively.
pub(super) async fn user_by_email(
    store: &SqliteStore,
    team_id: i64,
    email: &str,
) -> StoreResult<Option<UserRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users \
         WHERE team_id = ? AND lower(email) = lower(?) AND deleted_at IS NULL"
    )))
    .bind(team_id)
    .bind(email)
    .fetch_optional(&store.pool)
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// Maps a unique violation on insert to a readable conflict.
pub(super) fn create_user_error(e: sqlx::Error, email: Option<&str>) -> StoreError {
    if unique_violation(&e) {
        email_taken(email)
    } else {
        e.into()
    }
}

const LAST_ADMIN: &str =
    "this user is the team's last active admin; make another user an admin first";

#[async_trait]
impl AccountStore for SqliteStore {
    async fn list_users(&self, team_id: i64) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE team_id = ? AND deleted_at IS NULL ORDER BY id"
        )))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn user_by_uid(&self, team_id: i64, uid: &str) -> StoreResult<UserRecord> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE team_id = ? AND uid = ? AND deleted_at IS NULL"
        )))
        .bind(team_id)
        .bind(uid)
        .fetch_one(&self.pool)
        .await?;
        user_from_row(&row)
    }

    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users \
             WHERE lower(email) = lower(?) AND deleted_at IS NULL"
        )))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(UserCredentials {
                user: user_from_row(&row)?,
                password_hash: row.try_get("password_hash")?,
            })),
            None => Ok(None),
        }
    }

    async fn update_user(
        &self,
        team_id: i64,
        uid: &str,
        update: UserUpdate,
    ) -> StoreResult<UserRecord> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE team_id = ? AND uid = ? AND deleted_at IS NULL"
        )))
        .bind(team_id)
        .bind(uid)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let old = user_from_row(&row)?;
        let new = UserRecord {
            email: update.email.clone().or(old.email.clone()),
            display_name: update
                .display_name
                .clone()
                .unwrap_or(old.display_name.clone()),
            role: update.role.clone().unwrap_or(old.role.clone()),
            disabled: update.disabled.unwrap_or(old.disabled),
            ..old.clone()
        };
        let was_admin = old.role == "admin" && !old.disabled;
        let is_admin = new.role == "admin" && !new.disabled;
        if was_admin && !is_admin {
            let admins: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE team_id = ? AND role = 'admin' \
                 AND disabled = 0 AND deleted_at IS NULL",
            )
            .bind(team_id)
            .fetch_one(&mut *tx)
            .await?;
            if admins <= 1 {
                return Err(StoreError::Conflict(LAST_ADMIN.to_owned()));
            }
        }
        let done = sqlx::query(
            "UPDATE users SET email = ?, display_name = ?, role = ?, disabled = ? WHERE id = ?",
        )
        .bind(&new.email)
        .bind(&new.display_name)
        .bind(&new.role)
        .bind(i64::from(new.disabled))
        .bind(old.id)
        .execute(&mut *tx)
        .await;
        if let Err(e) = done {
            return Err(create_user_error(e, new.email.as_deref()));
        }
        if new.disabled && !old.disabled {
            sqlx::query("DELETE FROM web_sessions WHERE user_id = ?")
                .bind(old.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    async fn delete_user(&self, team_id: i64, uid: &str, at: i64) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE team_id = ? AND uid = ? AND deleted_at IS NULL"
        )))
        .bind(team_id)
        .bind(uid)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound);
        };
        let user = user_from_row(&row)?;
        if user.role == "admin" && !user.disabled {
            let admins: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE team_id = ? AND role = 'admin' \
                 AND disabled = 0 AND deleted_at IS NULL",
            )
            .bind(team_id)
            .fetch_one(&mut *tx)
            .await?;
            if admins <= 1 {
                return Err(StoreError::Conflict(LAST_ADMIN.to_owned()));
            }
        }
        sqlx::query(
            "UPDATE users SET deleted_at = ?, disabled = 1, email = NULL, password_hash = NULL \
             WHERE id = ?",
        )
        .bind(at)
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND team_id = ? \
             AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(user.id)
        .bind(team_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM web_sessions WHERE user_id = ?")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_password_hash(
        &self,
        team_id: i64,
        uid: &str,
        hash: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET password_hash = ? \
             WHERE team_id = ? AND uid = ? AND deleted_at IS NULL RETURNING id",
        )
        .bind(hash)
        .bind(team_id)
        .bind(uid)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Err(StoreError::NotFound);
        };
        sqlx::query("DELETE FROM web_sessions WHERE user_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_web_session(&self, session: WebSessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO web_sessions (token_hash, team_id, user_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&session.token_hash)
        .bind(session.team_id)
        .bind(session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn web_session(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> StoreResult<Option<WebSessionRecord>> {
        let row = sqlx::query(
            "SELECT s.token_hash, s.team_id, s.user_id, s.created_at, s.expires_at \
             FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = ? AND s.expires_at > ? \
             AND u.disabled = 0 AND u.deleted_at IS NULL AND u.team_id = s.team_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn delete_web_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = ?")
            .bind(token_hash)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn delete_user_web_sessions(&self, user_id: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn purge_expired_web_sessions(&self, now: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}
