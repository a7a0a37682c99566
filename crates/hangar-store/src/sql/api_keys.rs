//! [`ApiKeyStore`](crate::ApiKeyStore), written once (see [`crate::sql`]).

macro_rules! api_key_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            use $crate::{ApiKeyRecord, ApiKeyStore, NewApiKey, StoreError, StoreResult};
            use async_trait::async_trait;

            #[async_trait]
            impl ApiKeyStore for $store {
                async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord> {
                    let mut db = self.write().await?;
                    sqlx::query(
                        "INSERT INTO api_keys (id, team_id, user_id, name, prefix, hash, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&key.id)
                    .bind(key.team_id)
                    .bind(key.user_id)
                    .bind(&key.name)
                    .bind(&key.prefix)
                    .bind(&key.hash)
                    .bind(key.created_at)
                    .bind(key.expires_at)
                    .execute(&mut *db)
                    .await?;
                    db.commit().await?;
                    Ok(ApiKeyRecord {
                        id: key.id,
                        team_id: key.team_id,
                        user_id: key.user_id,
                        name: key.name,
                        prefix: key.prefix,
                        created_at: key.created_at,
                        expires_at: key.expires_at,
                        revoked_at: None,
                    })
                }

                async fn api_key_by_hash(&self, hash: &[u8]) -> StoreResult<Option<ApiKeyRecord>> {
                    let row = sqlx::query(
                        "SELECT id, team_id, user_id, name, prefix, created_at, expires_at, revoked_at \
                         FROM api_keys WHERE hash = $1",
                    )
                    .bind(hash)
                    .fetch_optional(self.read())
                    .await?;
                    row.as_ref().map(api_key_from_row).transpose()
                }

                async fn revoke_api_key(&self, team_id: i64, id: &str, at: i64) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done = sqlx::query(
                        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND team_id = $3",
                    )
                    .bind(at)
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

                async fn list_api_keys(&self, team_id: i64) -> StoreResult<Vec<ApiKeyRecord>> {
                    let rows = sqlx::query(
                        "SELECT id, team_id, user_id, name, prefix, created_at, expires_at, revoked_at \
                         FROM api_keys WHERE team_id = $1 ORDER BY created_at, id",
                    )
                    .bind(team_id)
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(api_key_from_row).collect()
                }
            }

        };
    };
}

pub(crate) use api_key_store;
