//! [`LifecycleStore`] and [`ClusterStore`] conformance on SQLite and
//! PostgreSQL: every run state change is an event numbered per team, the
//! numbers stay gap-free and ordered when several replicas move runs at once,
//! the worker registry is team-scoped and fenced by connection, and only one
//! replica at a time holds the bootstrap lock.

use crate::suite::postgres::TestSchema;
use hangar_protocol::{
    AgentConfig, ExecutionId, RunExecutionLocation, RunId, RunSourceType, RunState, Timestamp,
};
use hangar_store::*;
use std::collections::BTreeMap;
use std::time::Duration;

async fn team(store: &dyn Store, name: &str) -> TeamRecord {
    store.create_team(&RunId::generate().0, name).await.unwrap()
}

fn new_run(team_id: i64) -> NewRun {
    NewRun {
        id: RunId::generate(),
        team_id,
        creator_user_id: None,
        title: "lifecycle".into(),
        prompt: "do it".into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig::default(),
        created_at: Timestamp::now().unix_millis(),
    }
}

fn all(since: i64) -> LifecycleQuery {
    LifecycleQuery {
        run_ids: Vec::new(),
        since,
        limit: 500,
    }
}

fn types(events: &[LifecycleEventRecord]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

pub(crate) async fn state_changes_are_numbered_per_team(store: &dyn Store) {
    let a = team(store, "lifecycle-a").await;
    let b = team(store, "lifecycle-b").await;
    let run = store.create_run(new_run(a.id)).await.unwrap();
    let other = store.create_run(new_run(b.id)).await.unwrap();
    let exec = ExecutionId::generate();
    store
        .assign(NewExecution {
            id: exec.clone(),
            run_id: run.id.clone(),
            worker_id: "w1".into(),
            token_hash: exec.0.as_bytes().to_vec(),
            created_at: Timestamp::now().unix_millis(),
            lease_holder: None,
            lease_expires_at: None,
            issuer_key_id: None,
        })
        .await
        .unwrap();
    let now = Timestamp::now().unix_millis();
    store.claim(&run.id, &exec, now).await.unwrap();
    store.start(&run.id, &exec, now).await.unwrap();
    // Starting twice changes nothing: no event.
    store.start(&run.id, &exec, now).await.unwrap();
    store
        .report_outcome(&run.id, &exec, &terminal(RunState::Succeeded, "done"))
        .await
        .unwrap();
    store
        .cancel_run(b.id, &other.id, "stop", now)
        .await
        .unwrap();

    let events = store.lifecycle_events(a.id, &all(0)).await.unwrap();
    assert_eq!(
        types(&events),
        [
            "run_queued",
            "run_claimed",
            "run_in_progress",
            "run_succeeded"
        ],
        "{events:?}"
    );
    let seqs: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [1, 2, 3, 4], "sequences are per team and gap-free");
    assert!(
        events
            .iter()
            .all(|e| e.run_id == run.id.0 && e.team_id == a.id)
    );
    assert_eq!(events[1].execution_id.as_deref(), Some(exec.as_str()));

    // Team B sees only its own run, numbered from 1.
    let theirs = store.lifecycle_events(b.id, &all(0)).await.unwrap();
    assert_eq!(types(&theirs), ["run_queued", "run_cancelled"]);
    assert_eq!(theirs[0].sequence, 1);
    assert_eq!(theirs[0].run_id, other.id.0);

    // The cursor and the limit page.
    let page = store
        .lifecycle_events(
            a.id,
            &LifecycleQuery {
                run_ids: Vec::new(),
                since: 1,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(types(&page), ["run_claimed", "run_in_progress"]);
}

pub(crate) async fn client_events_and_filters(store: &dyn Store) {
    let a = team(store, "lifecycle-client").await;
    let b = team(store, "lifecycle-client-b").await;
    let one = store.create_run(new_run(a.id)).await.unwrap();
    let two = store.create_run(new_run(a.id)).await.unwrap();
    let seq = store
        .record_lifecycle_event(
            a.id,
            &NewLifecycleEvent {
                run_id: one.id.0.clone(),
                event_type: "run_blocked".into(),
                execution_id: Some("client-exec".into()),
                ref_id: Some("msg-1".into()),
                occurred_at: 42,
            },
        )
        .await
        .unwrap();
    assert_eq!(seq, 3, "after the two runs' run_queued");
    // Another team's run is not found, and records nothing.
    let foreign = store
        .record_lifecycle_event(
            b.id,
            &NewLifecycleEvent {
                run_id: one.id.0.clone(),
                event_type: "run_failed".into(),
                execution_id: None,
                ref_id: None,
                occurred_at: 43,
            },
        )
        .await;
    assert!(matches!(foreign, Err(StoreError::NotFound)), "{foreign:?}");
    assert!(
        store
            .lifecycle_events(b.id, &all(0))
            .await
            .unwrap()
            .is_empty()
    );

    let only_one = store
        .lifecycle_events(
            a.id,
            &LifecycleQuery {
                run_ids: vec![one.id.0.clone()],
                since: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(types(&only_one), ["run_queued", "run_blocked"]);
    assert_eq!(only_one[1].ref_id.as_deref(), Some("msg-1"));
    assert_eq!(only_one[1].execution_id.as_deref(), Some("client-exec"));
    assert_eq!(only_one[1].occurred_at, 42);
    let both = store
        .lifecycle_events(
            a.id,
            &LifecycleQuery {
                run_ids: vec![one.id.0.clone(), two.id.0.clone()],
                since: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 3);
}

fn presence(team_id: i64, worker: &str, replica: &str, conn: &str, at: i64) -> WorkerPresence {
    WorkerPresence {
        team_id,
        worker_id: worker.into(),
        replica_id: replica.into(),
        connection_id: conn.into(),
        backend: "docker".into(),
        version: "1.2.3".into(),
        capacity: 4,
        running_tasks: 1,
        draining: false,
        labels: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        connected: true,
        connected_at: at,
        last_seen: at,
        credential_id: Some(format!("cred-{worker}")),
        heard_at: Some(at),
    }
}

pub(crate) async fn worker_registry_is_team_scoped_and_fenced(store: &dyn Store) {
    let a = team(store, "workers-a").await;
    let b = team(store, "workers-b").await;
    let w = presence(a.id, "w-1", "replica-a", "conn-1", 1_000);
    store.upsert_worker(&w).await.unwrap();
    store
        .upsert_worker(&presence(b.id, "w-b", "replica-a", "conn-b", 1_000))
        .await
        .unwrap();
    assert_eq!(store.list_workers(a.id).await.unwrap(), vec![w.clone()]);

    // The worker reconnects to replica B; the old connection closing later
    // does not mark the new one disconnected.
    let moved = presence(a.id, "w-1", "replica-b", "conn-2", 2_000);
    store.upsert_worker(&moved).await.unwrap();
    store
        .worker_disconnected(a.id, &"w-1".into(), "conn-1", 2_500)
        .await
        .unwrap();
    assert_eq!(store.list_workers(a.id).await.unwrap(), vec![moved]);
    store
        .worker_disconnected(a.id, &"w-1".into(), "conn-2", 3_000)
        .await
        .unwrap();
    let listed = store.list_workers(a.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].connected);
    assert_eq!(listed[0].running_tasks, 0);
    assert_eq!(listed[0].last_seen, 3_000);

    // Team B's worker is its own.
    let theirs = store.list_workers(b.id).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].worker_id.as_str(), "w-b");

    // Pruning forgets what was not seen since the cut-off.
    let pruned = store.prune_workers(2_000).await.unwrap();
    assert!(pruned >= 1);
    assert!(store.list_workers(b.id).await.unwrap().is_empty());
    assert_eq!(store.list_workers(a.id).await.unwrap().len(), 1);
}

/// A replica's refresh writes every worker it holds in one call, across
/// statement batches; a later refresh updates the rows in place, and one
/// worker is found by its id without listing the team.
pub(crate) async fn worker_registry_refreshes_in_batches(store: &dyn Store) {
    let t = team(store, "workers-batch").await;
    let other = team(store, "workers-batch-other").await;
    let n = hangar_store::WORKER_UPSERT_BATCH * 2 + 3;
    let rows: Vec<WorkerPresence> = (0..n)
        .map(|i| {
            presence(
                t.id,
                &format!("w-{i:05}"),
                "replica-a",
                &format!("c-{i}"),
                1_000,
            )
        })
        .collect();
    store.upsert_workers(&rows).await.unwrap();
    store.upsert_workers(&[]).await.unwrap();
    assert_eq!(store.list_workers(t.id).await.unwrap(), rows);

    let refreshed: Vec<WorkerPresence> = rows
        .iter()
        .map(|w| WorkerPresence {
            last_seen: 5_000,
            running_tasks: 2,
            ..w.clone()
        })
        .collect();
    store.upsert_workers(&refreshed).await.unwrap();
    assert_eq!(store.list_workers(t.id).await.unwrap(), refreshed);

    let one = store.worker(t.id, &"w-00007".into()).await.unwrap();
    assert_eq!(one.as_ref(), Some(&refreshed[7]));
    assert_eq!(store.worker(t.id, &"w-absent".into()).await.unwrap(), None);
    // Another team's id is not found through this team.
    assert_eq!(
        store.worker(other.id, &"w-00007".into()).await.unwrap(),
        None
    );
}

/// Runs of one team created and cancelled through three replicas at once:
/// the team's sequence numbers are exactly 1..=N, each run has its two events
/// in order, and a poller that follows the cursor while they are written sees
/// every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_sequences_stay_gap_free_across_postgres_replicas() {
    let db = TestSchema::new();
    let stores = [db.store().await, db.store().await, db.store().await];
    let t = team(&stores[0], "race").await;
    let poller = {
        let store = stores[0].clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut since = 0;
            for _ in 0..400 {
                let page = store
                    .lifecycle_events(
                        t.id,
                        &LifecycleQuery {
                            run_ids: Vec::new(),
                            since,
                            limit: 50,
                        },
                    )
                    .await
                    .unwrap();
                if let Some(last) = page.last() {
                    since = last.sequence;
                }
                seen.extend(page.into_iter().map(|e| e.sequence));
                if seen.len() >= 120 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };
    let mut tasks = Vec::new();
    for store in &stores {
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let run = store.create_run(new_run(t.id)).await.unwrap();
                store
                    .cancel_run(t.id, &run.id, "stop", Timestamp::now().unix_millis())
                    .await
                    .unwrap();
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = stores[1].lifecycle_events(t.id, &all(0)).await.unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, (1..=120).collect::<Vec<i64>>());
    let mut per_run: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in &events {
        per_run.entry(&e.run_id).or_default().push(&e.event_type);
    }
    assert_eq!(per_run.len(), 60);
    assert!(
        per_run
            .values()
            .all(|v| v == &["run_queued", "run_cancelled"])
    );
    let polled = poller.await.unwrap();
    assert_eq!(
        polled,
        (1..=120).collect::<Vec<i64>>(),
        "a cursor poll skipped or repeated an event"
    );
    for s in &stores[1..] {
        Store::close(s).await;
    }
    db.cleanup(&stores[0]).await;
}

/// Two replicas asking for the bootstrap lock at once: the second waits until
/// the first releases it, and gets it right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_lock_excludes_other_postgres_replicas() {
    let db = TestSchema::new();
    let a = db.store().await;
    let b = db.store().await;
    let held = a.bootstrap_lock().await.unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.bootstrap_lock().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "two replicas held the bootstrap lock"
    );
    held.release().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the lock was not handed over")
        .unwrap();
    // Dropping without release closes its connection, which frees it too.
    drop(second);
    let third = tokio::time::timeout(Duration::from_secs(10), a.bootstrap_lock())
        .await
        .expect("a dropped lock was not freed")
        .unwrap();
    third.release().await.unwrap();
    Store::close(&b).await;
    db.cleanup(&a).await;
}
