//! Scheduled agents: records and the [`ScheduleStore`] trait.
//!
//! The store knows nothing about cron: the server evaluates expressions and
//! hands the store the slot it wants to fire and the next slot to show. What
//! the store guarantees is that one slot fires at most once: a slot is claimed
//! by a conditional update of the schedule's slot floor (`last_slot < slot`)
//! in the same transaction that creates its run, so two schedulers (two
//! replicas, or a scheduler restarted mid-tick) can never both create a run
//! for it.

use crate::{NewRun, RunRecord, StoreResult};
use async_trait::async_trait;
use hangar_protocol::AgentConfig;

/// A schedule to create.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// Public id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Name.
    pub name: String,
    /// 5-field cron expression (validated by the caller).
    pub cron_schedule: String,
    /// IANA time zone (UTC when absent).
    pub timezone: Option<String>,
    /// Whether it fires.
    pub enabled: bool,
    /// Prompt of its runs.
    pub prompt: String,
    /// Configuration of its runs.
    pub config: Option<AgentConfig>,
    /// Creator.
    pub created_by: Option<i64>,
    /// Creation (ms); also the slot floor: no slot at or before it fires.
    pub created_at: i64,
    /// Next slot (ms), when enabled.
    pub next_run: Option<i64>,
}

/// A full replacement of a schedule's definition (`PUT`).
#[derive(Debug, Clone)]
pub struct ScheduleUpdate {
    /// Name.
    pub name: String,
    /// 5-field cron expression.
    pub cron_schedule: String,
    /// IANA time zone.
    pub timezone: Option<String>,
    /// Whether it fires.
    pub enabled: bool,
    /// Prompt.
    pub prompt: String,
    /// Configuration.
    pub config: Option<AgentConfig>,
    /// Who changed it.
    pub updated_by: Option<i64>,
    /// When (ms). Re-enabling or changing the cron expression or time zone moves
    /// the slot floor here: slots before the change never fire.
    pub updated_at: i64,
    /// Next slot (ms), when enabled.
    pub next_run: Option<i64>,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// Public id.
    pub id: String,
    /// Team.
    pub team_id: i64,
    /// Name.
    pub name: String,
    /// 5-field cron expression.
    pub cron_schedule: String,
    /// IANA time zone (UTC when absent).
    pub timezone: Option<String>,
    /// Whether it fires.
    pub enabled: bool,
    /// Prompt of its runs.
    pub prompt: String,
    /// Configuration of its runs.
    pub config: Option<AgentConfig>,
    /// Creator.
    pub created_by: Option<i64>,
    /// Last editor.
    pub updated_by: Option<i64>,
    /// Creation (ms).
    pub created_at: i64,
    /// Last change of the definition (ms).
    pub updated_at: i64,
    /// Slot floor (ms): the last claimed slot, or the time before which no slot fires.
    pub last_slot: i64,
    /// When it last created a run (ms).
    pub last_ran: Option<i64>,
    /// Next slot (ms), when enabled.
    pub next_run: Option<i64>,
    /// Why the last attempt to create a run failed.
    pub last_spawn_error: Option<String>,
}

/// What to do with a claimed slot.
#[derive(Debug, Clone)]
pub enum SlotAction {
    /// Create this run (its `source` should be `SCHEDULED_AGENT`); it is
    /// stored with the schedule's id, name and cron expression.
    Run(Box<NewRun>),
    /// Consume the slot without a run (a missed slot under the `none` catch-up policy).
    Skip,
    /// Consume the slot and record why no run could be created.
    Fail(String),
}

/// Result of [`ScheduleStore::claim_schedule_slot`].
#[derive(Debug, Clone, PartialEq)]
pub enum SlotClaim {
    /// This caller claimed the slot; the run, when the action created one.
    Claimed(Option<Box<RunRecord>>),
    /// The slot was already claimed (by another scheduler), or the schedule
    /// was paused, deleted or moved past it meanwhile; nothing changed.
    Taken,
}

/// Scheduled agents.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Stores a new schedule.
    async fn create_schedule(&self, schedule: NewSchedule) -> StoreResult<ScheduleRecord>;
    /// A schedule of a team.
    async fn schedule(&self, team_id: i64, id: &str) -> StoreResult<ScheduleRecord>;
    /// A team's schedules, sorted by name.
    async fn list_schedules(&self, team_id: i64) -> StoreResult<Vec<ScheduleRecord>>;
    /// Replaces a schedule's definition.
    async fn update_schedule(
        &self,
        team_id: i64,
        id: &str,
        update: ScheduleUpdate,
    ) -> StoreResult<ScheduleRecord>;
    /// Pauses or resumes a schedule. Resuming moves the slot floor to `at`
    /// (slots missed while paused never fire); pausing clears `next_run`.
    async fn set_schedule_enabled(
        &self,
        team_id: i64,
        id: &str,
        enabled: bool,
        next_run: Option<i64>,
        by: Option<i64>,
        at: i64,
    ) -> StoreResult<ScheduleRecord>;
    /// Deletes a schedule; its runs stay.
    async fn delete_schedule(&self, team_id: i64, id: &str) -> StoreResult<()>;
    /// Enabled schedules of every team whose `next_run` is at or before `now`,
    /// earliest first.
    async fn due_schedules(&self, now: i64, limit: i64) -> StoreResult<Vec<ScheduleRecord>>;
    /// Claims `slot` of a schedule and applies `action` in one transaction:
    /// the slot floor moves to `slot` only if the schedule is enabled and its
    /// floor is still below `slot`; `next_run` is stored for display and due
    /// detection; `last_ran` becomes `at` when a run is created;
    /// `last_spawn_error` is cleared by a run and set by a failure.
    async fn claim_schedule_slot(
        &self,
        id: &str,
        slot: i64,
        next_run: Option<i64>,
        action: SlotAction,
        at: i64,
    ) -> StoreResult<SlotClaim>;
}
