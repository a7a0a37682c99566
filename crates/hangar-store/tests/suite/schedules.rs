//! [`ScheduleStore`] conformance on SQLite and PostgreSQL: team scoping, the
//! slot floor, and the slot claim that makes one cron slot one run, even when
//! several stores (replicas) race for it (scenario D12).

use crate::suite::postgres::TestSchema;
use hangar_protocol::{
    AgentConfig, RunExecutionLocation, RunId, RunSourceType, RunState, Timestamp,
};
use hangar_store::*;
use std::sync::Arc;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;

async fn team(store: &dyn Store) -> TeamRecord {
    store
        .create_team(&RunId::generate().0, "sched")
        .await
        .unwrap()
}

fn new_schedule(team_id: i64, name: &str) -> NewSchedule {
    NewSchedule {
        id: RunId::generate().0,
        team_id,
        name: name.into(),
        cron_schedule: "*/5 * * * *".into(),
        timezone: None,
        enabled: true,
        prompt: "check the build".into(),
        config: Some(AgentConfig {
            model_id: Some("fake/m".into()),
            ..Default::default()
        }),
        created_by: None,
        created_at: T0,
        next_run: Some(T0 + 5 * MIN),
    }
}

fn run_for(s: &ScheduleRecord) -> SlotAction {
    SlotAction::Run(Box::new(NewRun {
        id: RunId::generate(),
        team_id: s.team_id,
        creator_user_id: None,
        title: s.name.clone(),
        prompt: s.prompt.clone(),
        source: RunSourceType::ScheduledAgent,
        execution_location: RunExecutionLocation::Remote,
        config: s.config.clone().unwrap_or_default(),
        created_at: Timestamp::now().unix_millis(),
    }))
}

fn update_of(s: &ScheduleRecord, at: i64) -> ScheduleUpdate {
    ScheduleUpdate {
        name: s.name.clone(),
        cron_schedule: s.cron_schedule.clone(),
        timezone: s.timezone.clone(),
        enabled: s.enabled,
        prompt: s.prompt.clone(),
        config: s.config.clone(),
        updated_by: None,
        updated_at: at,
        next_run: s.next_run,
    }
}

pub(crate) async fn crud_is_team_scoped(store: &dyn Store) {
    let t = team(store).await;
    let other = team(store).await;
    let b = store
        .create_schedule(new_schedule(t.id, "beta"))
        .await
        .unwrap();
    let a = store
        .create_schedule(new_schedule(t.id, "alpha"))
        .await
        .unwrap();
    assert_eq!(a.last_slot, T0, "creation is the first slot floor");
    assert_eq!(a.updated_at, T0);
    assert_eq!(
        a.config.as_ref().unwrap().model_id.as_deref(),
        Some("fake/m")
    );
    assert_eq!(store.schedule(t.id, &a.id).await.unwrap(), a);
    let names: Vec<String> = store
        .list_schedules(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["alpha", "beta"], "sorted by name");

    // Another team sees nothing and changes nothing.
    assert!(store.list_schedules(other.id).await.unwrap().is_empty());
    assert!(matches!(
        store.schedule(other.id, &a.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_schedule(other.id, &a.id, update_of(&a, T0 + 1))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .set_schedule_enabled(other.id, &a.id, false, None, None, T0 + 1)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_schedule(other.id, &a.id).await,
        Err(StoreError::NotFound)
    ));

    // Full replace.
    let mut u = update_of(&a, T0 + 1_000);
    u.name = "alpha 2".into();
    u.prompt = "new prompt".into();
    u.config = None;
    u.timezone = Some("Europe/Berlin".into());
    let replaced = store.update_schedule(t.id, &a.id, u).await.unwrap();
    assert_eq!(replaced.name, "alpha 2");
    assert_eq!(replaced.prompt, "new prompt");
    assert_eq!(replaced.config, None);
    assert_eq!(replaced.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(replaced.updated_at, T0 + 1_000);
    assert_eq!(replaced.created_at, T0);

    store.delete_schedule(t.id, &b.id).await.unwrap();
    assert!(matches!(
        store.schedule(t.id, &b.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_schedule(t.id, &b.id).await,
        Err(StoreError::NotFound)
    ));
}

pub(crate) async fn the_slot_floor_moves_on_resume_and_on_a_new_cron(store: &dyn Store) {
    let t = team(store).await;
    let s = store
        .create_schedule(new_schedule(t.id, "floor"))
        .await
        .unwrap();

    // A rename keeps the floor.
    let mut u = update_of(&s, T0 + MIN);
    u.name = "renamed".into();
    let s = store.update_schedule(t.id, &s.id, u).await.unwrap();
    assert_eq!(s.last_slot, T0);

    // A new cron expression moves it: slots of the old one never fire.
    let mut u = update_of(&s, T0 + 2 * MIN);
    u.cron_schedule = "* * * * *".into();
    let s = store.update_schedule(t.id, &s.id, u).await.unwrap();
    assert_eq!(s.last_slot, T0 + 2 * MIN);

    // Pausing keeps it and clears next_run; resuming moves it to the resume time.
    let paused = store
        .set_schedule_enabled(t.id, &s.id, false, None, None, T0 + 3 * MIN)
        .await
        .unwrap();
    assert!(!paused.enabled);
    assert_eq!((paused.last_slot, paused.next_run), (T0 + 2 * MIN, None));
    assert!(
        !store
            .due_schedules(T0 + 60 * MIN, 1000)
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == s.id),
        "paused schedules are never due"
    );
    let resumed = store
        .set_schedule_enabled(t.id, &s.id, true, Some(T0 + 11 * MIN), None, T0 + 10 * MIN)
        .await
        .unwrap();
    assert!(resumed.enabled);
    assert_eq!(resumed.last_slot, T0 + 10 * MIN);
    // Re-enabling through a replace moves it too.
    let off = store
        .set_schedule_enabled(t.id, &s.id, false, None, None, T0 + 12 * MIN)
        .await
        .unwrap();
    let mut u = update_of(&off, T0 + 20 * MIN);
    u.enabled = true;
    u.next_run = Some(T0 + 21 * MIN);
    let on = store.update_schedule(t.id, &s.id, u).await.unwrap();
    assert_eq!(on.last_slot, T0 + 20 * MIN);
    // A floor never moves back.
    let mut u = update_of(&on, T0 + 15 * MIN);
    u.cron_schedule = "0 * * * *".into();
    let back = store.update_schedule(t.id, &s.id, u).await.unwrap();
    assert_eq!(back.last_slot, T0 + 20 * MIN);
}

pub(crate) async fn a_slot_is_claimed_once_with_its_run(store: &dyn Store) {
    let t = team(store).await;
    let s = store
        .create_schedule(new_schedule(t.id, "claims"))
        .await
        .unwrap();
    let due = store.due_schedules(T0 + 5 * MIN, 1000).await.unwrap();
    assert!(due.iter().any(|d| d.id == s.id));
    assert!(
        !store
            .due_schedules(T0 + 5 * MIN - 1, 1000)
            .await
            .unwrap()
            .iter()
            .any(|d| d.id == s.id),
        "not due before next_run"
    );

    // A slot at or before the floor is never claimed.
    assert_eq!(
        store
            .claim_schedule_slot(&s.id, T0, Some(T0 + 5 * MIN), run_for(&s), T0)
            .await
            .unwrap(),
        SlotClaim::Taken
    );

    let slot = T0 + 5 * MIN;
    let now = slot + 1_000;
    let claim = store
        .claim_schedule_slot(&s.id, slot, Some(T0 + 10 * MIN), run_for(&s), now)
        .await
        .unwrap();
    let SlotClaim::Claimed(Some(run)) = claim else {
        panic!("expected a run, got {claim:?}");
    };
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.source, RunSourceType::ScheduledAgent);
    let info = run.schedule.clone().unwrap();
    assert_eq!(
        (
            info.schedule_id.as_str(),
            info.schedule_name.as_str(),
            info.cron_schedule.as_str()
        ),
        (s.id.as_str(), "claims", "*/5 * * * *")
    );
    assert_eq!(store.run(t.id, &run.id).await.unwrap().schedule, Some(info));
    assert!(
        store
            .queued_runs(10_000)
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == run.id),
        "a scheduled run waits for dispatch like any other"
    );
    let after = store.schedule(t.id, &s.id).await.unwrap();
    assert_eq!(
        (after.last_slot, after.last_ran, after.next_run),
        (slot, Some(now), Some(T0 + 10 * MIN))
    );

    // The same slot again, or an earlier one: taken, nothing stored.
    for again in [slot, slot - MIN] {
        assert_eq!(
            store
                .claim_schedule_slot(&s.id, again, Some(T0 + 10 * MIN), run_for(&s), now)
                .await
                .unwrap(),
            SlotClaim::Taken
        );
    }

    // A failure consumes its slot and says why; a skip keeps last_ran.
    let failed = store
        .claim_schedule_slot(
            &s.id,
            T0 + 10 * MIN,
            Some(T0 + 15 * MIN),
            SlotAction::Fail("model gone".into()),
            T0 + 10 * MIN,
        )
        .await
        .unwrap();
    assert_eq!(failed, SlotClaim::Claimed(None));
    let after = store.schedule(t.id, &s.id).await.unwrap();
    assert_eq!(after.last_spawn_error.as_deref(), Some("model gone"));
    assert_eq!(after.last_ran, Some(now));
    let skipped = store
        .claim_schedule_slot(
            &s.id,
            T0 + 15 * MIN,
            Some(T0 + 20 * MIN),
            SlotAction::Skip,
            T0 + 16 * MIN,
        )
        .await
        .unwrap();
    assert_eq!(skipped, SlotClaim::Claimed(None));
    let after = store.schedule(t.id, &s.id).await.unwrap();
    assert_eq!(after.last_spawn_error.as_deref(), Some("model gone"));
    assert_eq!(
        (after.last_slot, after.last_ran),
        (T0 + 15 * MIN, Some(now))
    );
    // The next run clears the error.
    store
        .claim_schedule_slot(
            &s.id,
            T0 + 20 * MIN,
            Some(T0 + 25 * MIN),
            run_for(&s),
            T0 + 20 * MIN,
        )
        .await
        .unwrap();
    assert_eq!(
        store.schedule(t.id, &s.id).await.unwrap().last_spawn_error,
        None
    );

    // A paused schedule claims nothing.
    store
        .set_schedule_enabled(t.id, &s.id, false, None, None, T0 + 21 * MIN)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_schedule_slot(&s.id, T0 + 25 * MIN, None, run_for(&s), T0 + 25 * MIN)
            .await
            .unwrap(),
        SlotClaim::Taken
    );

    // Runs by schedule: the filter finds exactly this schedule's runs.
    let page = store
        .list_runs(
            t.id,
            &RunQuery {
                limit: 100,
                schedule_id: Some(s.id.clone()),
                ..RunQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 2);
    assert!(
        page.runs
            .iter()
            .all(|r| r.source == RunSourceType::ScheduledAgent)
    );
    let none = store
        .list_runs(
            t.id,
            &RunQuery {
                limit: 100,
                schedule_id: Some("no-such-schedule".into()),
                ..RunQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(none.runs.is_empty());
}

/// D12 at the store: many claimers on several stores race for each slot; one wins.
async fn concurrent_claims_make_one_run_per_slot(stores: Vec<Arc<dyn Store>>) {
    let t = team(stores[0].as_ref()).await;
    let s = stores[0]
        .create_schedule(new_schedule(t.id, "race"))
        .await
        .unwrap();
    for n in 1..=10 {
        let slot = T0 + n * 5 * MIN;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = stores[i % stores.len()].clone();
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .claim_schedule_slot(&s.id, slot, Some(slot + 5 * MIN), run_for(&s), slot)
                    .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                SlotClaim::Claimed(Some(_)) => won += 1,
                SlotClaim::Taken => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(won, 1, "slot {n}: exactly one claimer wins");
    }
    let page = stores[0]
        .list_runs(
            t.id,
            &RunQuery {
                limit: 100,
                schedule_id: Some(s.id.clone()),
                ..RunQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_slots_race_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangar.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    concurrent_claims_make_one_run_per_slot(vec![a, b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_slots_race_on_postgres_replicas() {
    let db = TestSchema::new();
    let a = db.store().await;
    let b = db.store().await;
    let c = db.store().await;
    concurrent_claims_make_one_run_per_slot(vec![
        Arc::new(a.clone()),
        Arc::new(b.clone()),
        Arc::new(c.clone()),
    ])
    .await;
    Store::close(&b).await;
    Store::close(&c).await;
    db.cleanup(&a).await;
}
