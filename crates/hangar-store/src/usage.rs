//! LLM gateway usage of callers that have no run: API keys and dashboard
//! sessions. (A run's usage lives on the run itself, see
//! [`crate::RunStore::add_usage`].) Written once for both databases (see
//! [`crate::sql`]).

use crate::StoreResult;
use async_trait::async_trait;

/// Who a run-less gateway call is metered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UsageSubject {
    /// An API key, by id.
    ApiKey(String),
    /// A user signed in to the dashboard, by numeric id.
    User(i64),
}

impl UsageSubject {
    /// The stored form: `key:<id>` or `user:<id>`.
    pub fn stored(&self) -> String {
        match self {
            UsageSubject::ApiKey(id) => format!("key:{id}"),
            UsageSubject::User(id) => format!("user:{id}"),
        }
    }

    /// Parses [`UsageSubject::stored`]; `None` for anything else.
    pub fn parse(stored: &str) -> Option<Self> {
        if let Some(id) = stored.strip_prefix("key:") {
            return Some(UsageSubject::ApiKey(id.to_owned()));
        }
        stored
            .strip_prefix("user:")
            .and_then(|id| id.parse().ok())
            .map(UsageSubject::User)
    }
}

/// What one caller used through the gateway, in total.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerUsageRecord {
    /// The caller's team.
    pub team_id: i64,
    /// The caller.
    pub subject: UsageSubject,
    /// Gateway calls metered.
    pub requests: i64,
    /// Prompt (input) tokens.
    pub prompt_tokens: i64,
    /// Completion (output) tokens.
    pub completion_tokens: i64,
    /// Cost in dollars (from the price table).
    pub cost_usd: f64,
    /// Last call metered (ms).
    pub updated_at: i64,
}

/// Usage per run-less caller.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds one metered call to `subject` of `team_id`.
    async fn add_caller_usage(
        &self,
        team_id: i64,
        subject: &UsageSubject,
        prompt: u64,
        completion: u64,
        cost: f64,
        at: i64,
    ) -> StoreResult<()>;
    /// Every metered caller of a team.
    async fn caller_usage(&self, team_id: i64) -> StoreResult<Vec<CallerUsageRecord>>;
}

/// `(team_id, subject, prompt, completion, cost, at)`.
pub(crate) const ADD: &str = "INSERT INTO llm_caller_usage \
     (team_id, subject, requests, prompt_tokens, completion_tokens, cost_usd, updated_at) \
     VALUES ($1, $2, 1, $3, $4, $5, $6) ON CONFLICT (team_id, subject) DO UPDATE SET \
     requests = llm_caller_usage.requests + 1, \
     prompt_tokens = llm_caller_usage.prompt_tokens + excluded.prompt_tokens, \
     completion_tokens = llm_caller_usage.completion_tokens + excluded.completion_tokens, \
     cost_usd = llm_caller_usage.cost_usd + excluded.cost_usd, \
     updated_at = excluded.updated_at";

/// `(team_id)`.
pub(crate) const OF_TEAM: &str = "SELECT team_id, subject, requests, prompt_tokens, \
     completion_tokens, cost_usd, updated_at FROM llm_caller_usage WHERE team_id = $1 \
     ORDER BY subject";

/// Clamps a token count into a BIGINT.
pub(crate) fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Defines `caller_usage_from_row` for one row type.
macro_rules! caller_usage_from_row {
    ($row:ty) => {
        fn caller_usage_from_row(
            row: &$row,
        ) -> crate::StoreResult<crate::usage::CallerUsageRecord> {
            use sqlx::Row;
            let subject: String = row.try_get("subject")?;
            Ok(crate::usage::CallerUsageRecord {
                team_id: row.try_get("team_id")?,
                subject: crate::usage::UsageSubject::parse(&subject).ok_or_else(|| {
                    crate::StoreError::Corrupt(format!("unknown usage subject `{subject}`"))
                })?,
                requests: row.try_get("requests")?,
                prompt_tokens: row.try_get("prompt_tokens")?,
                completion_tokens: row.try_get("completion_tokens")?,
                cost_usd: row.try_get("cost_usd")?,
                updated_at: row.try_get("updated_at")?,
            })
        }
    };
}

pub(crate) use caller_usage_from_row;

#[cfg(test)]
mod tests {
    use super::UsageSubject;

    #[test]
    fn subjects_round_trip() {
        for s in [UsageSubject::ApiKey("k_1:x".into()), UsageSubject::User(7)] {
            assert_eq!(UsageSubject::parse(&s.stored()), Some(s));
        }
        assert_eq!(UsageSubject::parse("run:1"), None);
        assert_eq!(UsageSubject::parse("user:x"), None);
    }
}
