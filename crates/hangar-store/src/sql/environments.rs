//! [`EnvironmentStore`](crate::EnvironmentStore) and [`SecretStore`](crate::SecretStore), written once (see [`crate::sql`]).

macro_rules! environment_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            use $crate::{
                EnvironmentRecord, EnvironmentStore, SecretRecord, SecretStore, StoreError, StoreResult,
            };
            use async_trait::async_trait;
            use hangar_protocol::RunId;

            fn unique_violation(e: &sqlx::Error) -> bool {
                matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
            }

            #[async_trait]
            impl EnvironmentStore for $store {
                async fn create_environment(&self, env: EnvironmentRecord) -> StoreResult<EnvironmentRecord> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "INSERT INTO environments (id, team_id, name, spec, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&env.id)
                    .bind(env.team_id)
                    .bind(&env.name)
                    .bind(&env.spec)
                    .bind(env.created_at)
                    .bind(env.updated_at)
                    .execute(&mut *db)
                    .await;
                    db.commit().await?;
                    match done {
                        Ok(_) => Ok(env),
                        Err(e) if unique_violation(&e) => Err(StoreError::Conflict(format!(
                            "an environment named `{}` already exists",
                            env.name
                        ))),
                        Err(e) => Err(e.into()),
                    }
                }

                async fn environment(&self, team_id: i64, id_or_name: &str) -> StoreResult<EnvironmentRecord> {
                    let row = sqlx::query(
                        "SELECT id, team_id, name, spec, created_at, updated_at FROM environments \
                         WHERE team_id = $1 AND (id = $2 OR name = $3) ORDER BY (id = $4) DESC LIMIT 1",
                    )
                    .bind(team_id)
                    .bind(id_or_name)
                    .bind(id_or_name)
                    .bind(id_or_name)
                    .fetch_one(self.read())
                    .await?;
                    env_from_row(&row)
                }

                async fn list_environments(&self, team_id: i64) -> StoreResult<Vec<EnvironmentRecord>> {
                    let rows = sqlx::query(
                        "SELECT id, team_id, name, spec, created_at, updated_at FROM environments \
                         WHERE team_id = $1 ORDER BY name",
                    )
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(env_from_row).collect()
                }

                async fn update_environment(&self, env: EnvironmentRecord) -> StoreResult<EnvironmentRecord> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "UPDATE environments SET name = $1, spec = $2, updated_at = $3 WHERE id = $4 AND team_id = $5",
                    )
                    .bind(&env.name)
                    .bind(&env.spec)
                    .bind(env.updated_at)
                    .bind(&env.id)
                    .bind(env.team_id)
                    .execute(&mut *db)
                    .await;
                    db.commit().await?;
                    match done {
                        Ok(r) if r.rows_affected() == 0 => Err(StoreError::NotFound),
                        Ok(_) => self.environment(env.team_id, &env.id).await,
                        Err(e) if unique_violation(&e) => Err(StoreError::Conflict(format!(
                            "an environment named `{}` already exists",
                            env.name
                        ))),
                        Err(e) => Err(e.into()),
                    }
                }

                async fn delete_environment(&self, team_id: i64, id: &str) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query("DELETE FROM environments WHERE id = $1 AND team_id = $2")
                        .bind(id)
                        .bind(team_id)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn save_run_environment(&self, run: &RunId, spec: &str) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query("INSERT INTO run_environments (run_id, spec) VALUES ($1, $2) ON CONFLICT (run_id) DO UPDATE SET spec = excluded.spec")
                        .bind(run.as_str())
                        .bind(spec)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn run_environment(&self, run: &RunId) -> StoreResult<Option<String>> {
                    Ok(
                        sqlx::query_scalar("SELECT spec FROM run_environments WHERE run_id = $1")
                            .bind(run.as_str())
                            .fetch_optional(self.read())
                            .await?,
                    )
                }
            }

            #[async_trait]
            impl SecretStore for $store {
                async fn create_secret(&self, s: SecretRecord) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "INSERT INTO secrets (team_id, name, nonce, ciphertext, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(s.team_id)
                    .bind(&s.name)
                    .bind(&s.nonce)
                    .bind(&s.ciphertext)
                    .bind(s.created_at)
                    .bind(s.updated_at)
                    .execute(&mut *db)
                    .await;
                    db.commit().await?;
                    match done {
                        Ok(_) => Ok(()),
                        Err(e) if unique_violation(&e) => Err(StoreError::Conflict(format!(
                            "a secret named `{}` already exists",
                            s.name
                        ))),
                        Err(e) => Err(e.into()),
                    }
                }

                async fn update_secret(&self, s: SecretRecord) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "UPDATE secrets SET nonce = $1, ciphertext = $2, updated_at = $3 WHERE team_id = $4 AND name = $5",
                    )
                    .bind(&s.nonce)
                    .bind(&s.ciphertext)
                    .bind(s.updated_at)
                    .bind(s.team_id)
                    .bind(&s.name)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn secret(&self, team_id: i64, name: &str) -> StoreResult<Option<SecretRecord>> {
                    let row = sqlx::query(
                        "SELECT team_id, name, nonce, ciphertext, created_at, updated_at FROM secrets \
                         WHERE team_id = $1 AND name = $2",
                    )
                    .bind(team_id)
                    .bind(name)
                    .fetch_optional(self.read())
                    .await?;
                    row.as_ref().map(secret_from_row).transpose()
                }

                async fn list_secrets(&self, team_id: i64) -> StoreResult<Vec<SecretRecord>> {
                    let rows = sqlx::query(
                        "SELECT team_id, name, nonce, ciphertext, created_at, updated_at FROM secrets \
                         WHERE team_id = $1 ORDER BY name",
                    )
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(secret_from_row).collect()
                }

                async fn delete_secret(&self, team_id: i64, name: &str) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query("DELETE FROM secrets WHERE team_id = $1 AND name = $2")
                        .bind(team_id)
                        .bind(name)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }
            }

        };
    };
}

pub(crate) use environment_store;
