//! [`ShareStore`](crate::ShareStore), written once (see [`crate::sql`]).

macro_rules! share_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            type Db = <$store as $crate::sql::Dialect>::Db;
            type DbRow = <Db as sqlx::Database>::Row;
            use $crate::shares::{SHARE_COLUMNS, SHARE_INSERT_COLUMNS, bind_share, grantee_key, share_from_row};
            use $crate::{Grantee, NewShare, ShareRecord, ShareStore, StoreError, StoreResult};
            use async_trait::async_trait;
            use hangar_protocol::RunId;
            use sqlx::AssertSqlSafe;

            share_from_row!(DbRow);

            impl $store {
                async fn share_by_key(&self, run: &RunId, key: &str) -> StoreResult<ShareRecord> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {SHARE_COLUMNS} FROM run_shares s LEFT JOIN users u ON u.id = s.user_id \
                         WHERE s.run_id = $1 AND s.grantee_key = $2"
                    )))
                    .bind(run.as_str())
                    .bind(key)
                    .fetch_one(self.read())
                    .await?;
                    share_from_row(&row)
                }
            }

            #[async_trait]
            impl ShareStore for $store {
                async fn create_share(&self, share: NewShare) -> StoreResult<ShareRecord> {
                    // The checks and the grant in one write: neither the run nor the
                    // user can change teams in between.
                    let mut db = self.transaction().await?;
                    let run_team: Option<i64> = sqlx::query_scalar("SELECT team_id FROM runs WHERE id = $1")
                        .bind(share.run_id.as_str())
                        .fetch_optional(&mut *db)
                        .await?;
                    if run_team != Some(share.team_id) {
                        return Err(StoreError::NotFound);
                    }
                    if let Grantee::User { user_id, .. } = &share.grantee {
                        let team: Option<i64> = sqlx::query_scalar("SELECT team_id FROM users WHERE id = $1")
                            .bind(user_id)
                            .fetch_optional(&mut *db)
                            .await?;
                        if team != Some(share.team_id) {
                            return Err(StoreError::NotFound);
                        }
                    }
                    let key = grantee_key(&share.id, &share.grantee);
                    let query = sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO run_shares ({SHARE_INSERT_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (run_id, grantee_key) DO UPDATE SET role = excluded.role"
                    )));
                    bind_share(query, &share, &key).execute(&mut *db).await?;
                    db.commit().await?;
                    self.share_by_key(&share.run_id, &key).await
                }

                async fn list_shares(&self, team_id: i64, run: &RunId) -> StoreResult<Vec<ShareRecord>> {
                    let rows = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {SHARE_COLUMNS} FROM run_shares s LEFT JOIN users u ON u.id = s.user_id \
                         WHERE s.team_id = $1 AND s.run_id = $2 ORDER BY s.created_at, s.id"
                    )))
                    .bind(team_id)
                    .bind(run.as_str())
                    .fetch_all(self.read())
                    .await?;
                    rows.iter().map(share_from_row).collect()
                }

                async fn delete_share(&self, team_id: i64, run: &RunId, id: &str) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    let done =
                        sqlx::query("DELETE FROM run_shares WHERE team_id = $1 AND run_id = $2 AND id = $3")
                            .bind(team_id)
                            .bind(run.as_str())
                            .bind(id)
                            .execute(&mut *db)
                            .await?;
                    db.commit().await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn share_by_token_hash(&self, hash: &[u8]) -> StoreResult<Option<ShareRecord>> {
                    let row = sqlx::query(AssertSqlSafe(format!(
                        "SELECT {SHARE_COLUMNS} FROM run_shares s LEFT JOIN users u ON u.id = s.user_id \
                         WHERE s.token_hash = $1 AND s.grantee = 'public'"
                    )))
                    .bind(hash)
                    .fetch_optional(self.read())
                    .await?;
                    row.as_ref().map(share_from_row).transpose()
                }
            }

        };
    };
}

pub(crate) use share_store;
