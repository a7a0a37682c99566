//! [`TeamStore`](crate::TeamStore) and [`AccountStore`](crate::AccountStore), written once (see [`crate::sql`]).

macro_rules! account_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            type Db = <$store as $crate::sql::Dialect>::Db;
            type Conn = <$store as $crate::sql::Dialect>::WriteConn;
            use $crate::accounts::{LAST_ADMIN, USER_COLUMNS, apply_update, is_active_admin, user_write_error};
            use $crate::*;
            use async_trait::async_trait;
            use hangar_protocol::Timestamp;
            use sqlx::{AssertSqlSafe, Row};

            /// A user by numeric id (deleted users included: runs still name them).
            async fn user(store: &$store, id: i64) -> StoreResult<UserRecord> {
                let row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
                )))
                .bind(id)
                .fetch_one(store.read())
                .await?;
                user_from_row(&row)
            }

            /// A (not deleted) user of a team by email, compared case-insensitively.
            async fn user_by_email(
                store: &$store,
                team_id: i64,
                email: &str,
            ) -> StoreResult<Option<UserRecord>> {
                let row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users \
                     WHERE team_id = $1 AND lower(email) = lower($2) AND deleted_at IS NULL"
                )))
                .bind(team_id)
                .bind(email)
                .fetch_optional(store.read())
                .await?;
                row.as_ref().map(user_from_row).transpose()
            }

            /// Maps a unique violation on insert to a readable conflict.
            fn create_user_error(e: sqlx::Error, email: Option<&str>) -> StoreError {
                user_write_error(e, email, StoreError::from)
            }

            /// The team's (not deleted) user `uid`; `NotFound` when there is none.
            async fn team_user<'e>(
                db: impl sqlx::Executor<'e, Database = Db>,
                team_id: i64,
                uid: &str,
            ) -> StoreResult<UserRecord> {
                let row = sqlx::query(AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE team_id = $1 AND uid = $2 AND deleted_at IS NULL"
                )))
                .bind(team_id)
                .bind(uid)
                .fetch_optional(db)
                .await?;
                let Some(row) = row else {
                    return Err(StoreError::NotFound);
                };
                user_from_row(&row)
            }

            /// Locks the team (account changes of one team are serialized) and reads
            /// its user `uid` like [`team_user`].
            async fn lock_user(tx: &mut Conn, team_id: i64, uid: &str) -> StoreResult<UserRecord> {
                let lock = <$store as $crate::sql::Dialect>::FOR_UPDATE;
                if !lock.is_empty() {
                    sqlx::query(AssertSqlSafe(format!("SELECT id FROM teams WHERE id = $1{lock}")))
                        .bind(team_id)
                        .execute(&mut *tx)
                        .await?;
                }
                team_user(tx, team_id, uid).await
            }

            /// `Conflict` unless the team has an active admin besides the one a change
            /// is about to remove.
            async fn ensure_other_admin(tx: &mut Conn, team_id: i64) -> StoreResult<()> {
                let admins: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM users WHERE team_id = $1 AND role = 'admin' \
                     AND disabled = FALSE AND deleted_at IS NULL",
                )
                .bind(team_id)
                .fetch_one(&mut *tx)
                .await?;
                if admins <= 1 {
                    return Err(StoreError::Conflict(LAST_ADMIN.to_owned()));
                }
                Ok(())
            }

            /// Ends every web session of a user; returns how many there were.
            async fn end_sessions<'e>(
                db: impl sqlx::Executor<'e, Database = Db>,
                user_id: i64,
            ) -> StoreResult<u64> {
                let done = sqlx::query("DELETE FROM web_sessions WHERE user_id = $1")
                    .bind(user_id)
                    .execute(db)
                    .await?;
                Ok(done.rows_affected())
            }

            #[async_trait]
            impl TeamStore for $store {
                async fn team_count(&self) -> StoreResult<i64> {
                    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM teams")
                        .fetch_one(self.read())
                        .await?)
                }

                async fn create_team(&self, uid: &str, name: &str) -> StoreResult<TeamRecord> {
                    let mut db = self.write().await?;
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO teams (uid, name, created_at) VALUES ($1, $2, $3) RETURNING id",
                    )
                    .bind(uid)
                    .bind(name)
                    .bind(Timestamp::now().unix_millis())
                    // Read to the end: on PostgreSQL (autocommit) an error reported after
                    // the row (a failed commit) would be lost by stopping at the first row.
                    .fetch_all(&mut *db)
                    .await?
                    .pop()
                    .ok_or(StoreError::NotFound)?;
                    db.commit().await?;
                    Ok(TeamRecord {
                        id,
                        uid: uid.to_owned(),
                        name: name.to_owned(),
                    })
                }

                async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord> {
                    let mut db = self.write().await?;
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO users (uid, team_id, email, display_name, role, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    )
                    .bind(&user.uid)
                    .bind(user.team_id)
                    .bind(&user.email)
                    .bind(&user.display_name)
                    .bind(&user.role)
                    .bind(Timestamp::now().unix_millis())
                    // Read to the end: on PostgreSQL (autocommit) an error reported after
                    // the row (a failed commit) would be lost by stopping at the first row.
                    .fetch_all(&mut *db)
                    .await
                    .map_err(|e| create_user_error(e, user.email.as_deref()))?
                    .pop()
                    .ok_or(StoreError::NotFound)?;
                    db.commit().await?;
                    Ok(UserRecord {
                        id,
                        uid: user.uid,
                        team_id: user.team_id,
                        email: user.email,
                        display_name: user.display_name,
                        role: user.role,
                        disabled: false,
                    })
                }

                async fn team(&self, id: i64) -> StoreResult<TeamRecord> {
                    let row = sqlx::query("SELECT id, uid, name FROM teams WHERE id = $1")
                        .bind(id)
                        .fetch_one(self.read())
                        .await?;
                    Ok(TeamRecord {
                        id: row.try_get("id")?,
                        uid: row.try_get("uid")?,
                        name: row.try_get("name")?,
                    })
                }

                async fn user(&self, id: i64) -> StoreResult<UserRecord> {
                    user(self, id).await
                }

                async fn user_by_email(&self, team_id: i64, email: &str) -> StoreResult<Option<UserRecord>> {
                    user_by_email(self, team_id, email).await
                }
            }


            #[async_trait]
            impl AccountStore for $store {
                async fn list_users(&self, team_id: i64) -> StoreResult<Vec<UserRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE team_id = $1 AND deleted_at IS NULL ORDER BY id"
                    )))
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(user_from_row).collect()
                }

                async fn user_by_uid(&self, team_id: i64, uid: &str) -> StoreResult<UserRecord> {
                    team_user(self.read(), team_id, uid).await
                }

                async fn credentials_by_email(&self, email: &str) -> StoreResult<Option<UserCredentials>> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {USER_COLUMNS}, password_hash FROM users \
                         WHERE lower(email) = lower($1) AND deleted_at IS NULL"
                    )))
                    .bind(email)
                    .fetch_optional(self.read())
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
                    let mut tx = self.transaction().await?;
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
                    tx.commit().await?;
                    Ok(new)
                }

                async fn delete_user(&self, team_id: i64, uid: &str, at: i64) -> StoreResult<()> {
                    let mut tx = self.transaction().await?;
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
                    .await?;
                    sqlx::query(
                        "UPDATE api_keys SET revoked_at = $1 WHERE user_id = $2 AND team_id = $3 \
                         AND revoked_at IS NULL",
                    )
                    .bind(at)
                    .bind(user.id)
                    .bind(team_id)
                    .execute(&mut *tx)
                    .await?;
                    end_sessions(&mut *tx, user.id).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn set_password_hash(
                    &self,
                    team_id: i64,
                    uid: &str,
                    hash: Option<&str>,
                ) -> StoreResult<()> {
                    let mut tx = self.transaction().await?;
                    let id: Option<i64> = sqlx::query_scalar(
                        "UPDATE users SET password_hash = $1 \
                         WHERE team_id = $2 AND uid = $3 AND deleted_at IS NULL RETURNING id",
                    )
                    .bind(hash)
                    .bind(team_id)
                    .bind(uid)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(id) = id else {
                        return Err(StoreError::NotFound);
                    };
                    end_sessions(&mut *tx, id).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn create_web_session(&self, session: WebSessionRecord) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(
                        "INSERT INTO web_sessions (token_hash, team_id, user_id, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&session.token_hash)
                    .bind(session.team_id)
                    .bind(session.user_id)
                    .bind(session.created_at)
                    .bind(session.expires_at)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
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
                    .fetch_optional(self.read())
                    .await?;
                    row.as_ref().map(session_from_row).transpose()
                }

                async fn delete_web_session(&self, token_hash: &[u8]) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
                        .bind(token_hash)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn delete_user_web_sessions(&self, user_id: i64) -> StoreResult<u64> {
                    let mut db = self.write().await?;
                    let ended = end_sessions(&mut *db, user_id).await?;
                    db.commit().await?;
                    Ok(ended)
                }

                async fn purge_expired_web_sessions(&self, now: i64) -> StoreResult<u64> {
                    let mut db = self.write().await?;
                    let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
                        .bind(now)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(done.rows_affected())
                }
            }

        };
    };
}

pub(crate) use account_store;
