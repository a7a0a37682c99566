//! [`UsageStore`] on PostgreSQL.

use super::{PostgresStore, pg_error};
use crate::leases::numbered;
use crate::usage::{ADD, OF_TEAM, caller_usage_from_row, tokens};
use crate::{CallerUsageRecord, StoreResult, UsageStore, UsageSubject};
use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgRow;

caller_usage_from_row!(PgRow);

#[async_trait]
impl UsageStore for PostgresStore {
    async fn add_caller_usage(
        &self,
        team_id: i64,
        subject: &UsageSubject,
        prompt: u64,
        completion: u64,
        cost: f64,
        at: i64,
    ) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(numbered(ADD)))
            .bind(team_id)
            .bind(subject.stored())
            .bind(tokens(prompt))
            .bind(tokens(completion))
            .bind(cost)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn caller_usage(&self, team_id: i64) -> StoreResult<Vec<CallerUsageRecord>> {
        let rows = sqlx::query(AssertSqlSafe(numbered(OF_TEAM)))
            .bind(team_id)
            .fetch_all(&self.pool)
            .await
            .map_err(pg_error)?;
        rows.iter().map(caller_usage_from_row).collect()
    }
}
