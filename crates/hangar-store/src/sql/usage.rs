//! [`UsageStore`](crate::UsageStore), written once (see [`crate::sql`]).

macro_rules! usage_store {
    ($store:ty) => {
        const _: () = {
            use $crate::sql::Dialect as _;
            type Db = <$store as $crate::sql::Dialect>::Db;
            type DbRow = <Db as sqlx::Database>::Row;
            use async_trait::async_trait;
            use $crate::usage::{ADD, OF_TEAM, caller_usage_from_row, tokens};
            use $crate::{CallerUsageRecord, StoreResult, UsageStore, UsageSubject};

            caller_usage_from_row!(DbRow);

            #[async_trait]
            impl UsageStore for $store {
                async fn add_caller_usage(
                    &self,
                    team_id: i64,
                    subject: &UsageSubject,
                    prompt: u64,
                    completion: u64,
                    cost: f64,
                    at: i64,
                ) -> StoreResult<()> {
                    let mut db = self.write().await?;
                    sqlx::query(ADD)
                        .bind(team_id)
                        .bind(subject.stored())
                        .bind(tokens(prompt))
                        .bind(tokens(completion))
                        .bind(cost)
                        .bind(at)
                        .execute(&mut *db)
                        .await?;
                    db.commit().await?;
                    Ok(())
                }

                async fn caller_usage(&self, team_id: i64) -> StoreResult<Vec<CallerUsageRecord>> {
                    let rows = sqlx::query(OF_TEAM)
                        .bind(team_id)
                        .fetch_all(self.read())
                        .await?;
                    rows.iter().map(caller_usage_from_row).collect()
                }
            }
        };
    };
}

pub(crate) use usage_store;
