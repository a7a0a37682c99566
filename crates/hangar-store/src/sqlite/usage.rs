//! [`UsageStore`] on SQLite.

use super::SqliteStore;
use crate::usage::{ADD, OF_TEAM, caller_usage_from_row, tokens};
use crate::{CallerUsageRecord, StoreResult, UsageStore, UsageSubject};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;

caller_usage_from_row!(SqliteRow);

#[async_trait]
impl UsageStore for SqliteStore {
    async fn add_caller_usage(
        &self,
        team_id: i64,
        subject: &UsageSubject,
        prompt: u64,
        completion: u64,
        cost: f64,
        at: i64,
    ) -> StoreResult<()> {
        sqlx::query(ADD)
            .bind(team_id)
            .bind(subject.stored())
            .bind(tokens(prompt))
            .bind(tokens(completion))
            .bind(cost)
            .bind(at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn caller_usage(&self, team_id: i64) -> StoreResult<Vec<CallerUsageRecord>> {
        let rows = sqlx::query(OF_TEAM)
            .bind(team_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(caller_usage_from_row).collect()
    }
}
