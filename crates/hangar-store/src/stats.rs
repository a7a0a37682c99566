//! Aggregates for metrics and the dashboard's overview: runs by state, the
//! queue per host, a team's failures and cost. Read-only, written once for
//! both databases ([`stats_store!`] implements the trait on each with its
//! `$N` placeholders, see [`crate::sql`]).

use crate::StoreResult;
use async_trait::async_trait;

/// Queued runs of one target host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStat {
    /// The host runs asked for (`--host`); `None` for runs that name none.
    pub host: Option<String>,
    /// Runs waiting.
    pub depth: i64,
    /// Creation of the oldest (ms).
    pub oldest_created_at: i64,
}

/// A team's activity since a moment: the dashboard's overview.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamOverview {
    /// The team's runs by state (all time).
    pub runs_by_state: Vec<(String, i64)>,
    /// Runs created since.
    pub runs_created: i64,
    /// Executions that ended with a failure reason since, by reason, most first.
    pub failures: Vec<(String, i64)>,
    /// Inference cost of runs created since, in dollars.
    pub cost_usd: f64,
}

/// Aggregates over runs and executions.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Runs by state, over every team.
    async fn run_state_counts(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Queued runs waiting for a worker, per target host.
    async fn queue_stats(&self) -> StoreResult<Vec<QueueStat>>;
    /// What [`TeamOverview`] says for `team_id` since `since` (ms).
    async fn team_overview(&self, team_id: i64, since: i64) -> StoreResult<TeamOverview>;
}

pub(crate) const RUN_STATES: &str = "SELECT state, COUNT(*) FROM runs GROUP BY state";

/// The queue by host, through the index of [`crate::sql::queued_runs`].
pub(crate) fn queue<D: crate::sql::Dialect>() -> String {
    let index = D::QUEUED_INDEX;
    format!(
        "SELECT worker_host AS host, COUNT(*) AS depth, MIN(created_at) AS oldest_created_at \
         FROM runs{index} WHERE state = 'QUEUED' AND current_execution_id IS NULL \
         GROUP BY worker_host"
    )
}

/// `(team_id)`.
pub(crate) const TEAM_STATES: &str =
    "SELECT state, COUNT(*) FROM runs WHERE team_id = $1 GROUP BY state";

/// `(team_id, since)`.
pub(crate) const TEAM_CREATED: &str = "SELECT COUNT(*), COALESCE(SUM(inference_cost), 0.0) \
     FROM runs WHERE team_id = $1 AND created_at >= $2";

/// `(team_id, since)`.
pub(crate) const TEAM_FAILURES: &str = "SELECT e.failure_reason, COUNT(*) AS n \
     FROM executions e JOIN runs r ON r.id = e.run_id \
     WHERE r.team_id = $1 AND e.ended_at >= $2 AND e.failure_reason IS NOT NULL \
     GROUP BY e.failure_reason ORDER BY n DESC, e.failure_reason";

/// Implements [`StatsStore`] for `$store` (see [`crate::sql`]).
macro_rules! stats_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::stats::StatsStore for $store {
            async fn run_state_counts(&self) -> crate::StoreResult<Vec<(String, i64)>> {
                use crate::stats::RUN_STATES;
                Ok(sqlx::query_as(RUN_STATES)
                    .fetch_all(crate::sql::Dialect::read(self))
                    .await?)
            }

            async fn queue_stats(&self) -> crate::StoreResult<Vec<crate::stats::QueueStat>> {
                use crate::stats::{QueueStat, queue};
                let rows: Vec<(Option<String>, i64, i64)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(queue::<$store>()))
                        .fetch_all(crate::sql::Dialect::read(self))
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(host, depth, oldest_created_at)| QueueStat {
                        host,
                        depth,
                        oldest_created_at,
                    })
                    .collect())
            }

            async fn team_overview(
                &self,
                team_id: i64,
                since: i64,
            ) -> crate::StoreResult<crate::stats::TeamOverview> {
                use crate::stats::{TEAM_CREATED, TEAM_FAILURES, TEAM_STATES};
                let runs_by_state = sqlx::query_as(TEAM_STATES)
                    .bind(team_id)
                    .fetch_all(crate::sql::Dialect::read(self))
                    .await?;
                let (runs_created, cost_usd): (i64, f64) = sqlx::query_as(TEAM_CREATED)
                    .bind(team_id)
                    .bind(since)
                    .fetch_one(crate::sql::Dialect::read(self))
                    .await?;
                let failures = sqlx::query_as(TEAM_FAILURES)
                    .bind(team_id)
                    .bind(since)
                    .fetch_all(crate::sql::Dialect::read(self))
                    .await?;
                Ok(crate::stats::TeamOverview {
                    runs_by_state,
                    runs_created,
                    failures,
                    cost_usd,
                })
            }
        }
    };
}

pub(crate) use stats_store;
