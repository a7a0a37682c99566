//! The scheduler: turns cron slots of enabled schedules into runs.
//!
//! Cron expressions have five fields (minute, hour, day of month, month, day
//! of week) and are evaluated in UTC or in the schedule's IANA time zone
//! ([`CronSchedule`]). Each tick asks the store for schedules whose
//! `next_run` has come ([`hangar_store::ScheduleStore::due_schedules`]), picks the latest
//! slot at or before now and claims it with
//! [`hangar_store::ScheduleStore::claim_schedule_slot`]: the claim is a conditional update
//! of the schedule's slot floor in the transaction that creates the run, so a
//! slot creates at most one run however many schedulers (replicas) race for
//! it (scenario D12).
//!
//! After downtime the [`CatchUp`] policy decides: `one` (default) creates a
//! single run for all the slots that were missed, `none` creates none and
//! waits for the next slot. Time comes from a [`Clock`], so tests can move it.

use crate::dispatch::Dispatcher;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use hangar_llm::ProviderRegistry;
use hangar_protocol::{AgentConfig, RunExecutionLocation, RunId, RunSourceType};
use hangar_store::{NewRun, RunRecord, ScheduleRecord, SlotAction, SlotClaim, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the scheduler looks for due schedules.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// A slot older than this when the scheduler reaches it was missed (the
/// server was down or stalled), and the [`CatchUp`] policy applies.
pub const MISSED_AFTER_MS: i64 = 60_000;
/// Most schedules handled per tick; the rest wait for the next tick.
const DUE_BATCH: i64 = 100;

/// Names of the five cron fields, in order.
const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

/// Why a cron expression or time zone is unusable. The message names the
/// field and says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// A validated 5-field cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: jiff::tz::TimeZone,
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

impl CronSchedule {
    /// Parses `expr` (5 fields) evaluated in `timezone` (an IANA name; UTC when `None`).
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Self, CronError> {
        let tz = match timezone {
            None => jiff::tz::TimeZone::UTC,
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
                CronError(format!(
                    "`timezone` `{name}` is not an IANA time zone name (e.g. `UTC`, `Europe/Berlin`, `America/New_York`)"
                ))
            })?,
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!(
                "`cron_schedule` `{expr}` has {} field(s); it needs exactly 5: minute hour \
                 day-of-month month day-of-week (e.g. `0 9 * * 1-5` for 09:00 on weekdays)",
                fields.len()
            )));
        }
        let cron = parser().parse(expr).map_err(|e| {
            // Find the field at fault by parsing each one alone.
            for (i, field) in fields.iter().enumerate() {
                let mut alone = ["*"; 5];
                alone[i] = field;
                if let Err(field_err) = parser().parse(&alone.join(" ")) {
                    return CronError(format!(
                        "`cron_schedule` `{expr}`: field {} ({}) `{field}` is invalid: {field_err}",
                        i + 1,
                        FIELD_NAMES[i]
                    ));
                }
            }
            CronError(format!("`cron_schedule` `{expr}` is invalid: {e}"))
        })?;
        let schedule = CronSchedule { cron, tz };
        // An expression such as `0 0 31 2 *` parses but never fires.
        if schedule
            .next_after(jiff::Timestamp::now().as_millisecond())
            .is_none()
        {
            return Err(CronError(format!(
                "`cron_schedule` `{expr}` never matches a real date"
            )));
        }
        Ok(schedule)
    }

    fn zoned(&self, ms: i64) -> Option<jiff::Zoned> {
        jiff::Timestamp::from_millisecond(ms)
            .ok()
            .map(|t| t.to_zoned(self.tz.clone()))
    }

    /// The first slot strictly after `ms` (Unix ms).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let start = self.zoned(ms)?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|z| z.timestamp().as_millisecond())
            .filter(|&slot| slot > ms)
    }

    /// The latest slot at or before `ms` (Unix ms).
    pub fn latest_at_or_before(&self, ms: i64) -> Option<i64> {
        let start = self.zoned(ms)?;
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|z| z.timestamp().as_millisecond())
            .filter(|&slot| slot <= ms)
    }
}

/// What the scheduler does about slots missed while no server was running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// One run for all the missed slots of a schedule (the latest of them).
    #[default]
    One,
    /// No run for missed slots; wait for the next one.
    None,
}

/// Where the scheduler's time comes from.
pub trait Clock: Send + Sync {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        hangar_protocol::Timestamp::now().unix_millis()
    }
}

/// A clock that moves only when told (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: i64) -> Self {
        ManualClock(AtomicI64::new(ms))
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Completes the runs a scheduler creates and hands them on.
pub trait RunLauncher: Send + Sync {
    /// Completes a run's configuration before it is stored (fills in the
    /// default model), or says why the run cannot be created.
    fn prepare(&self, config: &mut AgentConfig) -> Result<(), String>;
    /// Hands a stored `QUEUED` run to dispatch.
    fn submit(&self, run: RunRecord);
}

/// The server's [`RunLauncher`]: the run service's model rule
/// ([`crate::runs::create::resolve_model`]), runs to the dispatcher.
pub struct DispatchLauncher {
    /// Model providers.
    pub llm: Arc<ProviderRegistry>,
    /// Model for runs that name none.
    pub default_model: Option<String>,
    /// Dispatcher.
    pub dispatcher: Arc<Dispatcher>,
}

impl RunLauncher for DispatchLauncher {
    fn prepare(&self, config: &mut AgentConfig) -> Result<(), String> {
        crate::runs::create::resolve_model(&self.llm, self.default_model.as_deref(), config)
    }

    fn submit(&self, run: RunRecord) {
        self.dispatcher.submit(run);
    }
}

/// What one tick did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Runs created.
    pub runs: Vec<RunId>,
    /// Missed slots consumed without a run (`none` policy).
    pub skipped: usize,
    /// Slots whose run could not be created (recorded as `last_spawn_error`).
    pub failed: usize,
    /// Slots another scheduler had already claimed.
    pub taken: usize,
}

/// Creates runs from due schedules.
pub struct Scheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    launcher: Arc<dyn RunLauncher>,
    catch_up: CatchUp,
}

impl Scheduler {
    /// The server's scheduler: system clock, runs to its dispatcher, catch-up
    /// policy from `schedule_catch_up`.
    pub fn for_server(app: &crate::AppState) -> Self {
        Scheduler::new(
            app.store.clone(),
            Arc::new(SystemClock),
            Arc::new(DispatchLauncher {
                llm: app.llm.providers.clone(),
                default_model: app.llm.default_model.clone(),
                dispatcher: app.dispatcher.clone(),
            }),
            app.config.schedule_catch_up,
        )
    }

    /// A scheduler over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        launcher: Arc<dyn RunLauncher>,
        catch_up: CatchUp,
    ) -> Self {
        Scheduler {
            store,
            clock,
            launcher,
            catch_up,
        }
    }

    /// Ticks every [`TICK_INTERVAL`] until `shutdown` fires. Store errors are
    /// logged and retried on the next tick.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(catch_up = ?self.catch_up, "scheduler started");
        loop {
            match self.tick().await {
                Ok(report) if report != TickReport::default() => {
                    tracing::debug!(
                        runs = report.runs.len(),
                        skipped = report.skipped,
                        failed = report.failed,
                        taken = report.taken,
                        "scheduler tick"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduler tick failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(TICK_INTERVAL) => {}
            }
        }
        tracing::debug!("scheduler stopped");
    }

    /// Fires every due schedule once, at the clock's current time.
    pub async fn tick(&self) -> Result<TickReport, StoreError> {
        let now = self.clock.now_ms();
        let mut report = TickReport::default();
        for schedule in self.store.due_schedules(now, DUE_BATCH).await? {
            self.fire(&schedule, now, &mut report).await?;
        }
        Ok(report)
    }

    async fn fire(
        &self,
        s: &ScheduleRecord,
        now: i64,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let due = s.next_run.unwrap_or(now);
        let cron = match CronSchedule::parse(&s.cron_schedule, s.timezone.as_deref()) {
            Ok(cron) => cron,
            Err(e) => {
                // Stored before a rule change (or a time zone vanished from the
                // tzdb): consume the slot and stop, saying why.
                tracing::warn!(schedule_id = %s.id, error = %e, "schedule cannot be evaluated");
                let claim = self
                    .store
                    .claim_schedule_slot(&s.id, due, None, SlotAction::Fail(e.to_string()), now)
                    .await?;
                count(claim, true, report);
                return Ok(());
            }
        };
        // The latest slot that has come; several may have been missed.
        let slot = cron
            .latest_at_or_before(now)
            .map_or(due, |latest| latest.max(due));
        let next = cron.next_after(now);
        let late = now - slot > MISSED_AFTER_MS;
        let action = if late && self.catch_up == CatchUp::None {
            tracing::info!(schedule_id = %s.id, slot, "missed slot skipped (catch-up policy `none`)");
            SlotAction::Skip
        } else {
            if late {
                tracing::info!(schedule_id = %s.id, slot, "catching up: one run for missed slots");
            }
            self.build_run(s, now)
        };
        let failed = matches!(action, SlotAction::Fail(_));
        let claim = self
            .store
            .claim_schedule_slot(&s.id, slot, next, action, now)
            .await?;
        if let SlotClaim::Claimed(Some(run)) = &claim {
            tracing::info!(schedule_id = %s.id, run_id = %run.id, team_id = s.team_id, slot, "scheduled run created");
            // The run's environment snapshot is taken now, as for any new run;
            // the dispatcher holds the run until it exists.
            if let Some(env_id) = &run.config.environment_id {
                match self.store.environment(run.team_id, env_id).await {
                    Ok(env) => self.store.save_run_environment(&run.id, &env.spec).await?,
                    Err(StoreError::NotFound) => {
                        let message = format!(
                            "environment `{env_id}` of schedule `{}` no longer exists",
                            s.name
                        );
                        tracing::warn!(schedule_id = %s.id, run_id = %run.id, "{message}");
                        self.store
                            .cancel_run(run.team_id, &run.id, &message, now)
                            .await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            self.launcher.submit((**run).clone());
        }
        count(claim, failed, report);
        Ok(())
    }

    fn build_run(&self, s: &ScheduleRecord, now: i64) -> SlotAction {
        let mut config = s.config.clone().unwrap_or_default();
        if let Err(message) = self.launcher.prepare(&mut config) {
            tracing::warn!(schedule_id = %s.id, error = %message, "scheduled run not created");
            return SlotAction::Fail(message);
        }
        SlotAction::Run(Box::new(NewRun {
            id: RunId::generate(),
            team_id: s.team_id,
            creator_user_id: s.created_by,
            title: s.name.clone(),
            prompt: s.prompt.clone(),
            source: RunSourceType::ScheduledAgent,
            execution_location: RunExecutionLocation::Remote,
            config,
            created_at: now,
        }))
    }
}

fn count(claim: SlotClaim, failed: bool, report: &mut TickReport) {
    let metrics = crate::metrics::get();
    match claim {
        SlotClaim::Claimed(Some(run)) => {
            metrics.schedule_fired();
            metrics.run_created(run.source.as_str());
            report.runs.push(run.id)
        }
        SlotClaim::Claimed(None) if failed => {
            metrics.schedule_missed(1);
            report.failed += 1
        }
        SlotClaim::Claimed(None) => {
            metrics.schedule_missed(1);
            report.skipped += 1
        }
        SlotClaim::Taken => report.taken += 1,
    }
}

#[cfg(test)]
mod tests;
