//! [`AccountStore`] on PostgreSQL, plus the user lookups [`TeamStore`] delegates here.

use super::{PostgresStore, pg_error, session_from_row, user_from_row};
use crate::accounts::{LAST_ADMIN, USER_COLUMNS, apply_update, is_active_admin, user_write_error};
use crate::*;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, Row};

/// A user by numeric id (deleted users included: runs still name them).
pub(super) async fn user(store: &PostgresStore, id: i64) -> StoreResult<UserRecord> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(&store.pool)
    .await
    .map_err(pg_error)?;
    user_from_row(&row)
}

/// A (not deleted) user of a team by email, compared case-insensitively.
pub(super) async fn user_by_email(
    store: &PostgresStore,
    team_id: i64,
    email: &str,
) -> StoreResult<Option<UserRecord>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users \
         WHERE team_id = $1 AND lower(email) = lower($2) AND deleted_at IS NULL"
    )))
    .bind(team_id)
    .bind(email)
    .fetch_optional(&store.pool)
    .await
    .map_err(pg_error)?;
    row.as_ref().map(user_from_row).transpose()
}

/// Maps a unique violation on insert to a readable conflict.
pub(super) fn create_user_error(e: sqlx::Error, email: Option<&str>) -> StoreError {
    user_write_error(e, email, pg_error)
}

/// The team's (not deleted) user `uid`; `NotFound` when there is none.
async fn team_user<'e>(
    db: impl sqlx::Executor<'e, Database = Postgres>,
    team_id: i64,
    uid: &str,
) -> StoreResult<UserRecord> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE team_id = $1 AND uid = $2 AND deleted_at IS NULL"
    )))
    .bind(team_id)
    .bind(uid)
    .fetch_optional(db)
    .await
    .map_err(pg_error)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound);
    };
    user_from_row(&row)
}

/// Locks the team (account changes of one team are serialized) and reads
/// its user `uid` like [`team_user`].
async fn lock_user(tx: &mut PgConnection, team_id: i64, uid: &str) -> StoreResult<UserRecord> {
    sqlx::query("SELECT id FROM teams WHERE id = $1 FOR UPDATE")
        .bind(team_id)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    team_user(tx, team_id, uid).await
}

/// `Conflict` unless the team has an active admin besides the one a change
/// is about to remove.
async fn ensure_other_admin(tx: &mut PgConnection, team_id: i64) -> StoreResult<()> {
    let admins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE team_id = $1 AND role = 'admin' \
         AND disabled = FALSE AND deleted_at IS NULL",
    )
    .bind(team_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(pg_error)?;
    if admins <= 1 {
        return Err(StoreError::Conflict(LAST_ADMIN.to_owned()));
    }
    Ok(())
}

/// Ends every web session of a user; returns how many there were.
async fn end_sessions<'e>(
    db: impl sqlx::Executor<'e, Database = Postgres>,
    user_id: i64,
) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(db)
        .await
        .map_err(pg_error)?;
    Ok(done.rows_affected())
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn list_users(&self, team_id: i64) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE team_id = $1 AND deleted_at IS NULL ORDER BY id"
        )))
        .bind(team_id)
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn user_by_uid(&self, team_id: i64, uid: &str) -> StoreResult<UserRecord> {
        team_user(&self.pool, team_id, uid).await
    }

    async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users \
             WHERE lower(email) = lower($1) AND deleted_at IS NULL"
        )))
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
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
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let old = lock_user(&mut tx, team_id, uid).await?;
        let new = apply_update(&old, update);
        if is_active_admin(&old) && !is_active_admin(&new) {
            ensure_other_admin(&mut tx, team_id).await?;
        }
        let done = sqlx::query(
            "UPDATE users SET email = $1, display_name = $2, role = $3, disabled = $4 WHERE id = $5",
        )
        .bind(&new.email)
        .bind(&new.display_name)
        .bind(&new.role)
        .bind(new.disabled)
        .bind(old.id)
        .execute(&mut *tx)
        .await;
        if let Err(e) = done {
            return Err(create_user_error(e, new.email.as_deref()));
        }
        if new.disabled && !old.disabled {
            end_sessions(&mut *tx, old.id).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(new)
    }

    async fn delete_user(&self, team_id: i64, uid: &str, at: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let user = lock_user(&mut tx, team_id, uid).await?;
        if is_active_admin(&user) {
            ensure_other_admin(&mut tx, team_id).await?;
        }
        sqlx::query(
            "UPDATE users SET deleted_at = $1, disabled = TRUE, email = NULL, password_hash = NULL \
             WHERE id = $2",
        )
        .bind(at)
        .bind(user.id)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND team_id = $3 \
             AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(user.id)
        .bind(team_id)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        end_sessions(&mut *tx, user.id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn set_password_hash(
        &self,
        team_id: i64,
        uid: &str,
        hash: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(pg_error)?;
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE users SET password_hash = $1 \
             WHERE team_id = $2 AND uid = $3 AND deleted_at IS NULL RETURNING id",
        )
        .bind(hash)
        .bind(team_id)
        .bind(uid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(id) = id else {
            return Err(StoreError::NotFound);
        };
        end_sessions(&mut *tx, id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(())
    }

    async fn create_web_session(&self, session: WebSessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO web_sessions (token_hash, team_id, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.token_hash)
        .bind(session.team_id)
        .bind(session.user_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
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
             WHERE s.token_hash = $1 AND s.expires_at > $2 \
             AND u.disabled = FALSE AND u.deleted_at IS NULL AND u.team_id = s.team_id",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn delete_web_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn delete_user_web_sessions(&self, user_id: i64) -> StoreResult<u64> {
        end_sessions(&self.pool, user_id).await
    }

    async fn purge_expired_web_sessions(&self, now: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(done.rows_affected())
    }
}
