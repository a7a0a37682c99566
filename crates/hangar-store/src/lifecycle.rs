//! Run lifecycle events: records and the [`LifecycleStore`] trait.
//!
//! Every change of a run's state is recorded as an event (`run_queued`,
//! `run_in_progress`, `run_succeeded`, …) with a sequence number that is
//! monotonic per team. The database writes them itself (triggers on `runs`,
//! in the same transaction as the change), so no code path that moves a run
//! can forget one; clients may add their own with
//! [`LifecycleStore::record_lifecycle_event`]. Pollers page with a cursor:
//! the highest sequence they have seen.

use crate::StoreResult;
use async_trait::async_trait;

/// The `lifecycle_events` columns every event query selects.
pub(crate) const EVENT_COLUMNS: &str =
    "team_id, sequence, run_id, event_type, execution_id, ref_id, occurred_at";

/// One recorded lifecycle event.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEventRecord {
    /// Team.
    pub team_id: i64,
    /// Sequence number: from 1, strictly increasing per team.
    pub sequence: i64,
    /// Run.
    pub run_id: String,
    /// `run_queued`, `run_claimed`, `run_in_progress`, `run_succeeded`,
    /// `run_failed`, `run_errored`, `run_blocked`, `run_cancelled`, or what a
    /// client reported.
    pub event_type: String,
    /// The execution current when it happened, or the client's.
    pub execution_id: Option<String>,
    /// Event-specific reference (client-reported events only).
    pub ref_id: Option<String>,
    /// When (ms).
    pub occurred_at: i64,
}

/// A client-reported event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLifecycleEvent {
    /// Run (must belong to the team).
    pub run_id: String,
    /// Event type.
    pub event_type: String,
    /// Client-assigned execution id.
    pub execution_id: Option<String>,
    /// Reference.
    pub ref_id: Option<String>,
    /// When (ms).
    pub occurred_at: i64,
}

/// Which events to return.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleQuery {
    /// Only these runs (all of the team's when empty).
    pub run_ids: Vec<String>,
    /// Only events with a sequence above this.
    pub since: i64,
    /// At most this many, in sequence order.
    pub limit: i64,
}

/// Lifecycle events of runs.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// A team's events after `query.since`, in sequence order.
    async fn lifecycle_events(
        &self,
        team_id: i64,
        query: &LifecycleQuery,
    ) -> StoreResult<Vec<LifecycleEventRecord>>;
    /// Records a client-reported event of one of the team's runs; returns its
    /// sequence. `NotFound` when the team has no such run.
    async fn record_lifecycle_event(
        &self,
        team_id: i64,
        event: &NewLifecycleEvent,
    ) -> StoreResult<i64>;
}
