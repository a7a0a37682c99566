//! Scheduler tests on a simulated clock: slots, catch-up after downtime,
//! pause/resume, spawn errors, and D12 (two schedulers on one store, SQLite
//! and PostgreSQL, never two runs for one slot).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use hangar_protocol::RunState;
use hangar_store::{NewSchedule, PostgresConfig, PostgresStore, RunQuery, SqliteStore};
use std::sync::Mutex;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;

#[derive(Default)]
struct Recorder {
    submitted: Mutex<Vec<RunRecord>>,
    refuse: Mutex<Option<String>>,
}

impl RunLauncher for Recorder {
    fn prepare(&self, config: &mut AgentConfig) -> Result<(), String> {
        if let Some(why) = self.refuse.lock().unwrap().clone() {
            return Err(why);
        }
        config.model_id.get_or_insert_with(|| "fake/model".into());
        Ok(())
    }
    fn submit(&self, run: RunRecord) {
        self.submitted.lock().unwrap().push(run);
    }
}

impl Recorder {
    fn count(&self) -> usize {
        self.submitted.lock().unwrap().len()
    }
}

async fn new_schedule(store: &dyn Store, cron: &str, at: i64) -> ScheduleRecord {
    let team = store
        .create_team(&RunId::generate().0, "sched")
        .await
        .unwrap();
    let parsed = CronSchedule::parse(cron, None).unwrap();
    store
        .create_schedule(NewSchedule {
            id: RunId::generate().0,
            team_id: team.id,
            name: "nightly check".into(),
            cron_schedule: cron.into(),
            timezone: None,
            enabled: true,
            prompt: "check the build".into(),
            config: None,
            created_by: None,
            created_at: at,
            next_run: parsed.next_after(at),
        })
        .await
        .unwrap()
}

fn scheduler(
    store: Arc<dyn Store>,
    clock: &Arc<ManualClock>,
    catch_up: CatchUp,
) -> (Scheduler, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let s = Scheduler::new(store, clock.clone(), recorder.clone(), catch_up);
    (s, recorder)
}

#[test]
fn cron_errors_name_the_bad_field() {
    let err = |expr: &str| CronSchedule::parse(expr, None).unwrap_err().to_string();
    assert!(
        err("61 * * * *").contains("field 1 (minute) `61`"),
        "{}",
        err("61 * * * *")
    );
    assert!(err("0 24 * * *").contains("field 2 (hour) `24`"));
    assert!(err("0 0 32 * *").contains("field 3 (day-of-month)"));
    assert!(err("0 0 * 13 *").contains("field 4 (month)"));
    assert!(err("0 0 * * FUNDAY").contains("field 5 (day-of-week)"));
    assert!(err("* * * *").contains("needs exactly 5"));
    assert!(err("0 * * * * *").contains("6 field(s)"));
    assert!(err("").contains("0 field(s)"));
    assert!(err("0 0 31 2 *").contains("never matches"));
    let tz = CronSchedule::parse("0 9 * * *", Some("Mars/Olympus"))
        .unwrap_err()
        .to_string();
    assert!(tz.contains("`timezone` `Mars/Olympus`"), "{tz}");
}

#[test]
fn slots_are_computed_in_utc_or_the_given_time_zone() {
    let utc = CronSchedule::parse("0 9 * * *", None).unwrap();
    assert_eq!(utc.next_after(T0), Some(T0 + 9 * 60 * MIN));
    assert_eq!(
        utc.latest_at_or_before(T0 + 9 * 60 * MIN),
        Some(T0 + 9 * 60 * MIN)
    );
    assert_eq!(
        utc.latest_at_or_before(T0 + 9 * 60 * MIN - 1),
        Some(T0 + 9 * 60 * MIN - 24 * 60 * MIN)
    );
    // Berlin is UTC+1 in January: 09:00 there is 08:00 UTC.
    let berlin = CronSchedule::parse("0 9 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(berlin.next_after(T0), Some(T0 + 8 * 60 * MIN));
    // Sub-second times: the slot of the current minute counts as reached.
    let every = CronSchedule::parse("* * * * *", None).unwrap();
    assert_eq!(every.latest_at_or_before(T0 + 500), Some(T0));
    assert_eq!(every.next_after(T0 + 500), Some(T0 + MIN));
}

#[tokio::test]
async fn one_run_per_slot_and_one_catch_up_run_after_downtime() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let clock = Arc::new(ManualClock::new(T0 + 10_000));
    let s = new_schedule(store.as_ref(), "*/5 * * * *", T0 + 10_000).await;
    assert_eq!(s.next_run, Some(T0 + 5 * MIN));
    let (sched, rec) = scheduler(store.clone(), &clock, CatchUp::One);

    assert_eq!(sched.tick().await.unwrap(), TickReport::default());
    clock.set(T0 + 5 * MIN + 1_000);
    assert_eq!(sched.tick().await.unwrap().runs.len(), 1);
    assert_eq!(
        sched.tick().await.unwrap().runs.len(),
        0,
        "a slot fires once"
    );
    clock.set(T0 + 5 * MIN + 30_000);
    assert_eq!(sched.tick().await.unwrap().runs.len(), 0);

    let run = rec.submitted.lock().unwrap()[0].clone();
    assert_eq!(run.source, RunSourceType::ScheduledAgent);
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.title, "nightly check");
    assert_eq!(run.prompt, "check the build");
    assert_eq!(run.config.model_id.as_deref(), Some("fake/model"));
    let info = run.schedule.clone().expect("schedule info on the run");
    assert_eq!(info.schedule_id, s.id);
    assert_eq!(info.schedule_name, "nightly check");
    assert_eq!(info.cron_schedule, "*/5 * * * *");

    // Down for two hours: 24 slots missed, one run for all of them.
    clock.set(T0 + 2 * 60 * MIN + 2 * MIN);
    let report = sched.tick().await.unwrap();
    assert_eq!(report.runs.len(), 1, "{report:?}");
    assert_eq!(sched.tick().await.unwrap().runs.len(), 0);
    let after = store.schedule(s.team_id, &s.id).await.unwrap();
    assert_eq!(after.last_slot, T0 + 2 * 60 * MIN);
    assert_eq!(after.last_ran, Some(T0 + 2 * 60 * MIN + 2 * MIN));
    assert_eq!(after.next_run, Some(T0 + 2 * 60 * MIN + 5 * MIN));
    assert_eq!(after.last_spawn_error, None);

    let page = store
        .list_runs(
            s.team_id,
            &RunQuery {
                limit: 50,
                schedule_id: Some(s.id.clone()),
                ..RunQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 2);
    assert_eq!(rec.count(), 2);
}

#[tokio::test]
async fn catch_up_none_skips_missed_slots_but_fires_on_time_ones() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let s = new_schedule(store.as_ref(), "*/5 * * * *", T0).await;
    let (sched, rec) = scheduler(store.clone(), &clock, CatchUp::None);

    clock.set(T0 + 60 * MIN + 2 * MIN);
    let report = sched.tick().await.unwrap();
    assert_eq!((report.runs.len(), report.skipped), (0, 1), "{report:?}");
    assert_eq!(sched.tick().await.unwrap(), TickReport::default());
    let after = store.schedule(s.team_id, &s.id).await.unwrap();
    assert_eq!(after.next_run, Some(T0 + 65 * MIN));
    assert_eq!(after.last_ran, None);

    // The next slot is on time: it fires.
    clock.set(T0 + 65 * MIN + 2_000);
    assert_eq!(sched.tick().await.unwrap().runs.len(), 1);
    assert_eq!(rec.count(), 1);
}

#[tokio::test]
async fn paused_schedules_do_not_fire_and_resume_does_not_replay_the_pause() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let s = new_schedule(store.as_ref(), "* * * * *", T0).await;
    let (sched, rec) = scheduler(store.clone(), &clock, CatchUp::One);

    let paused = store
        .set_schedule_enabled(s.team_id, &s.id, false, None, None, T0 + 1_000)
        .await
        .unwrap();
    assert!(!paused.enabled);
    clock.set(T0 + 30 * MIN);
    assert_eq!(sched.tick().await.unwrap(), TickReport::default());

    // Resumed mid-minute: the slots of the pause never run, the next one does.
    let now = T0 + 30 * MIN + 20_000;
    let cron = CronSchedule::parse("* * * * *", None).unwrap();
    store
        .set_schedule_enabled(s.team_id, &s.id, true, cron.next_after(now), None, now)
        .await
        .unwrap();
    clock.set(now + 1_000);
    assert_eq!(sched.tick().await.unwrap(), TickReport::default());
    clock.set(T0 + 31 * MIN + 500);
    assert_eq!(sched.tick().await.unwrap().runs.len(), 1);
    assert_eq!(rec.count(), 1);
}

#[tokio::test]
async fn a_run_that_cannot_be_created_is_recorded_as_last_spawn_error() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let s = new_schedule(store.as_ref(), "* * * * *", T0).await;
    let (sched, rec) = scheduler(store.clone(), &clock, CatchUp::One);

    *rec.refuse.lock().unwrap() = Some("no default model is configured".into());
    clock.set(T0 + MIN + 1);
    let report = sched.tick().await.unwrap();
    assert_eq!((report.runs.len(), report.failed), (0, 1));
    let after = store.schedule(s.team_id, &s.id).await.unwrap();
    assert_eq!(
        after.last_spawn_error.as_deref(),
        Some("no default model is configured")
    );
    assert_eq!(after.next_run, Some(T0 + 2 * MIN), "the schedule goes on");

    *rec.refuse.lock().unwrap() = None;
    clock.set(T0 + 2 * MIN + 1);
    assert_eq!(sched.tick().await.unwrap().runs.len(), 1);
    let after = store.schedule(s.team_id, &s.id).await.unwrap();
    assert_eq!(after.last_spawn_error, None, "a run clears the error");
}

#[tokio::test]
async fn scheduled_runs_get_their_environment_snapshot() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let team = store
        .create_team(&RunId::generate().0, "env-sched")
        .await
        .unwrap();
    let spec = r#"{"name":"web","env":{"A":"1"}}"#;
    store
        .create_environment(hangar_store::EnvironmentRecord {
            id: "env-1".into(),
            team_id: team.id,
            name: "web".into(),
            spec: spec.into(),
            created_at: T0,
            updated_at: T0,
        })
        .await
        .unwrap();
    let s = store
        .create_schedule(NewSchedule {
            id: RunId::generate().0,
            team_id: team.id,
            name: "with env".into(),
            cron_schedule: "* * * * *".into(),
            timezone: None,
            enabled: true,
            prompt: "build".into(),
            config: Some(AgentConfig {
                environment_id: Some("env-1".into()),
                ..Default::default()
            }),
            created_by: None,
            created_at: T0,
            next_run: CronSchedule::parse("* * * * *", None)
                .unwrap()
                .next_after(T0),
        })
        .await
        .unwrap();
    let (sched, _rec) = scheduler(store.clone(), &clock, CatchUp::One);
    clock.set(T0 + MIN + 1);
    let report = sched.tick().await.unwrap();
    assert_eq!(report.runs.len(), 1);
    let snapshot = store.run_environment(&report.runs[0]).await.unwrap();
    assert_eq!(
        snapshot.as_deref(),
        Some(spec),
        "the dispatcher needs the snapshot to start the run"
    );

    // The environment disappears: the next slot's run is cancelled with a reason, not stuck.
    store.delete_environment(s.team_id, "env-1").await.unwrap();
    clock.set(T0 + 2 * MIN + 1);
    let report = sched.tick().await.unwrap();
    let run = store.run(s.team_id, &report.runs[0]).await.unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    assert!(run.status_message.unwrap().contains("no longer exists"));
}

/// D12: two schedulers (replicas) on one database tick at the same moments,
/// through normal slots and after downtime; every slot has exactly one run.
async fn two_schedulers_one_run_per_slot(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(T0));
    let mut schedules = Vec::new();
    for _ in 0..4 {
        schedules.push(new_schedule(a.as_ref(), "* * * * *", T0).await);
    }
    let (sa, ra) = scheduler(a.clone(), &clock, CatchUp::One);
    let (sb, rb) = scheduler(b.clone(), &clock, CatchUp::One);
    let mut slots = 0;
    // 20 on-time slots, then 3 downtimes of 10 minutes (one catch-up run each).
    let mut times: Vec<i64> = (1..=20).map(|m| T0 + m * MIN + 300).collect();
    times.extend([T0 + 31 * MIN + 5, T0 + 42 * MIN + 5, T0 + 53 * MIN + 5]);
    for at in times {
        clock.set(at);
        slots += 1;
        let (x, y) = tokio::join!(sa.tick(), sb.tick());
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(
            x.runs.len() + y.runs.len(),
            schedules.len(),
            "at {at}: {x:?} {y:?}"
        );
    }
    let total = ra.count() + rb.count();
    assert_eq!(total, slots * schedules.len());
    for s in &schedules {
        let page = a
            .list_runs(
                s.team_id,
                &RunQuery {
                    limit: 500,
                    schedule_id: Some(s.id.clone()),
                    ..RunQuery::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.runs.len(), slots, "schedule {}", s.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d12_two_schedulers_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    two_schedulers_one_run_per_slot(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d12_two_schedulers_on_one_postgres_database() {
    let url = match std::env::var("HANGAR_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "HANGAR_TEST_DATABASE_URL is not set: this PostgreSQL test needs a database. \
             Run `eval \"$(scripts/pg-test-env)\"` (scripts/test does it for you)."
        ),
    };
    let schema = format!("hangar_test_{}", RunId::generate().0.replace('-', "_"));
    let connect = || {
        let config = PostgresConfig {
            schema: Some(schema.clone()),
            max_connections: 4,
            ..PostgresConfig::new(url.clone())
        };
        async move { PostgresStore::connect_with(&config).await.unwrap() }
    };
    let a = connect().await;
    let b = connect().await;
    two_schedulers_one_run_per_slot(Arc::new(a.clone()), Arc::new(b.clone())).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(a.pool())
        .await
        .unwrap();
    Store::close(&a).await;
    Store::close(&b).await;
}
