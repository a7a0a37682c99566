//! What only PostgreSQL, or several replicas on one database, can show: no double assignment, signals across replicas.
//!
//! Needs `HANGAR_TEST_DATABASE_URL` (`eval "$(scripts/pg-test-env)"`). Without
//! it, or with a database that does not answer, these tests fail: they never
//! skip. Each test works in its own schema, dropped when it passes.

use hangar_protocol::{
    AgentConfig, ExecutionId, RunExecutionLocation, RunId, RunSourceType, RunState, Timestamp,
};
use hangar_store::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The test database URL; panics with how to get one.
pub fn database_url() -> String {
    match std::env::var("HANGAR_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "HANGAR_TEST_DATABASE_URL is not set: the PostgreSQL tests need a database. \
             Run `eval \"$(scripts/pg-test-env)\"` (installs and starts PostgreSQL, creates a \
             test role and database, exports the URL), then run the tests again. \
             scripts/test does this for you."
        ),
    }
}

/// A schema of its own for one test, on the test database.
pub struct TestSchema {
    pub url: String,
    pub schema: String,
}

impl TestSchema {
    pub fn new() -> Self {
        let id = RunId::generate().0.replace('-', "_");
        TestSchema {
            url: database_url(),
            schema: format!("hangar_test_{id}"),
        }
    }

    /// A store (a "replica") on this schema; migrations run on first use.
    pub async fn store(&self) -> PostgresStore {
        let config = PostgresConfig {
            schema: Some(self.schema.clone()),
            max_connections: 4,
            ..PostgresConfig::new(self.url.clone())
        };
        PostgresStore::connect_with(&config)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {} is unreachable or unusable: {e}. \
                 Run `eval \"$(scripts/pg-test-env)\"` to start it.",
                    redact_url(&self.url)
                )
            })
    }

    /// Drops the schema (call at the end of a passing test).
    pub async fn cleanup(self, store: &PostgresStore) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.schema
        )))
        .execute(store.pool())
        .await
        .unwrap();
        Store::close(store).await;
    }
}

#[tokio::test]
async fn data_survives_reconnect_and_migrations_are_idempotent() {
    let db = TestSchema::new();
    let store = db.store().await;
    store.create_team(&RunId::generate().0, "t").await.unwrap();
    Store::close(&store).await;
    let again = db.store().await;
    assert_eq!(again.team_count().await.unwrap(), 1);
    db.cleanup(&again).await;
}

#[tokio::test]
async fn open_picks_postgres_from_the_url() {
    let url = database_url();
    let opened = open_with_notifier(&url).await.unwrap();
    opened.store.ping().await.unwrap();
    assert!(opened.notifier.is_some());
    opened.store.close().await;
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_not_a_hang() {
    // Port 1 on localhost: nothing listens there.
    let started = std::time::Instant::now();
    let config = PostgresConfig {
        connect_timeout: Duration::from_secs(1),
        ..PostgresConfig::new("postgres://u:secret@127.0.0.1:1/db")
    };
    let err = PostgresStore::connect_with(&config).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)),
        "retryable: {err:?}"
    );
    assert!(!err.to_string().contains("secret"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn new_run(team_id: i64) -> NewRun {
    NewRun {
        id: RunId::generate(),
        team_id,
        creator_user_id: None,
        title: "t".into(),
        prompt: "p".into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig::default(),
        created_at: Timestamp::now().unix_millis(),
    }
}

fn new_execution(run: &RunId, worker: &str) -> NewExecution {
    let id = ExecutionId::generate();
    NewExecution {
        token_hash: id.0.as_bytes().to_vec(),
        id,
        run_id: run.clone(),
        worker_id: worker.into(),
        created_at: Timestamp::now().unix_millis(),
        lease_holder: None,
        lease_expires_at: None,
        issuer_key_id: None,
    }
}

/// Two replicas race to assign the same queue: every run gets exactly one execution.
#[tokio::test]
async fn concurrent_replicas_never_assign_a_run_twice() {
    const RUNS: usize = 60;
    let db = TestSchema::new();
    let a = Arc::new(db.store().await);
    let b = Arc::new(db.store().await);
    let team = a.create_team(&RunId::generate().0, "race").await.unwrap();
    let mut created = HashSet::new();
    for _ in 0..RUNS {
        created.insert(a.create_run(new_run(team.id)).await.unwrap().id);
    }
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            loop {
                let queued = store.queued_runs(7).await.unwrap();
                if queued.is_empty() {
                    return won;
                }
                for run in queued {
                    let exec = new_execution(&run.id, &format!("worker-{i}"));
                    match store.assign(exec).await.unwrap() {
                        Transition::Applied => won.push(run.id),
                        Transition::Stale => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        }));
    }
    let mut assigned = Vec::new();
    for task in tasks {
        assigned.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = assigned.iter().cloned().collect();
    assert_eq!(assigned.len(), RUNS, "each run assigned exactly once");
    assert_eq!(unique, created);
    for id in &created {
        let run = a.run_any_team(id).await.unwrap();
        assert!(run.current_execution_id.is_some());
    }
    let live: usize = a.all_live_executions().await.unwrap().len();
    assert_eq!(live, RUNS, "no orphan executions");
    Store::close(&*b).await;
    db.cleanup(&a).await;
}

/// Expired leases swept by several replicas at once: each is taken exactly once.
#[tokio::test]
async fn replicas_sweeping_at_once_take_each_expired_lease_once() {
    const RUNS: usize = 40;
    let db = TestSchema::new();
    let a = Arc::new(db.store().await);
    let b = Arc::new(db.store().await);
    let team = a.create_team(&RunId::generate().0, "sweep").await.unwrap();
    let now = Timestamp::now().unix_millis();
    for _ in 0..RUNS {
        let run = a.create_run(new_run(team.id)).await.unwrap();
        let mut exec = new_execution(&run.id, "gone");
        exec.lease_holder = Some("dead:1".into());
        exec.lease_expires_at = Some(now - 1);
        assert_eq!(a.assign(exec).await.unwrap(), Transition::Applied);
    }
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            for (_, exec) in store.expired_leases(now, 1000).await.unwrap() {
                if store.take_expired_lease(&exec.id, now).await.unwrap() {
                    taken.push(exec.id);
                }
            }
            taken
        }));
    }
    let mut taken = Vec::new();
    for task in tasks {
        taken.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = taken.iter().cloned().collect();
    assert_eq!(taken.len(), RUNS, "every expired lease taken exactly once");
    assert_eq!(unique.len(), RUNS);
    Store::close(&*b).await;
    db.cleanup(&a).await;
}

/// Outcome and cancel racing through two replicas: exactly one wins, and the
/// loser sees the winner's terminal state.
#[tokio::test]
async fn racing_cancel_and_outcome_end_in_one_terminal_state() {
    let db = TestSchema::new();
    let a = Arc::new(db.store().await);
    let b = Arc::new(db.store().await);
    let team = a.create_team(&RunId::generate().0, "race").await.unwrap();
    for _ in 0..20 {
        let run = a.create_run(new_run(team.id)).await.unwrap();
        let exec = new_execution(&run.id, "w");
        let exec_id = exec.id.clone();
        assert_eq!(a.assign(exec).await.unwrap(), Transition::Applied);
        let now = Timestamp::now().unix_millis();
        a.claim(&run.id, &exec_id, now).await.unwrap();
        a.start(&run.id, &exec_id, now).await.unwrap();
        let (sa, sb) = (a.clone(), b.clone());
        let (run_id, e) = (run.id.clone(), exec_id.clone());
        let finish = tokio::spawn(async move {
            let end = ExecutionEnd {
                outcome: terminal(RunState::Succeeded, "ok"),
                exit_code: Some(0),
                failure_reason: None,
                at: Timestamp::now().unix_millis(),
            };
            sa.finish_execution(&run_id, &e, &end).await.unwrap()
        });
        let run_id = run.id.clone();
        let cancel =
            tokio::spawn(async move { sb.cancel_run(team.id, &run_id, "stop", now).await });
        let finished = finish.await.unwrap();
        let cancelled = cancel.await.unwrap();
        let state = a.run(team.id, &run.id).await.unwrap().state;
        match (finished, cancelled) {
            (Transition::Applied, Err(StoreError::Conflict(_))) => {
                assert_eq!(state, RunState::Succeeded)
            }
            (Transition::AlreadyTerminal, Ok(_)) => assert_eq!(state, RunState::Cancelled),
            other => panic!("inconsistent race outcome {other:?}, final state {state}"),
        }
        assert!(!a.run(team.id, &run.id).await.unwrap().sandbox_running);
    }
    Store::close(&*b).await;
    db.cleanup(&a).await;
}

async fn next_signal(listener: &mut dyn SignalListener) -> Signal {
    tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a signal within 10 s")
        .unwrap()
}

/// A run created through replica B wakes replica A; a cancel through B names
/// the execution A's worker runs; requeues and freed slots signal too.
#[tokio::test]
async fn signals_reach_other_replicas() {
    let db = TestSchema::new();
    let a = db.store().await;
    let b = db.store().await;
    let mut on_a = Notifier::listen(&a).await.unwrap();

    // Another deployment on the same database (another schema) is not heard.
    let elsewhere = TestSchema::new();
    let other = elsewhere.store().await;
    let other_team = other.create_team("x", "x").await.unwrap();
    other.create_run(new_run(other_team.id)).await.unwrap();

    let team = b
        .create_team(&RunId::generate().0, "signals")
        .await
        .unwrap();
    let run = b.create_run(new_run(team.id)).await.unwrap();
    assert_eq!(
        next_signal(&mut *on_a).await,
        Signal::Dispatch {
            run_id: Some(run.id.clone()),
            execution_id: None,
            local: false
        }
    );

    // Rejected: back in the queue, and the execution's slot is free.
    let exec = new_execution(&run.id, "w");
    let e1 = exec.id.clone();
    b.assign(exec).await.unwrap();
    let now = Timestamp::now().unix_millis();
    assert_eq!(
        b.reject(&run.id, &e1, "full", now).await.unwrap(),
        Transition::Applied
    );
    let mut got = vec![next_signal(&mut *on_a).await, next_signal(&mut *on_a).await];
    got.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(
        got,
        vec![
            Signal::Dispatch {
                run_id: Some(run.id.clone()),
                execution_id: None,
                local: false
            },
            Signal::Dispatch {
                run_id: Some(run.id.clone()),
                execution_id: Some(e1.clone()),
                local: false
            },
        ]
    );

    // Cancel through B while A's worker (say) holds the claimed execution.
    let exec = new_execution(&run.id, "w");
    let e2 = exec.id.clone();
    b.assign(exec).await.unwrap();
    b.claim(&run.id, &e2, now).await.unwrap();
    b.cancel_run(team.id, &run.id, "stop", now).await.unwrap();
    assert_eq!(
        next_signal(&mut *on_a).await,
        Signal::Cancel {
            run_id: run.id.clone(),
            execution_id: Some(e2.clone()),
            local: false
        }
    );

    // The worker reports the end: its slot frees.
    b.finish_execution(
        &run.id,
        &e2,
        &ExecutionEnd {
            outcome: terminal(RunState::Cancelled, "stopped"),
            exit_code: None,
            failure_reason: None,
            at: now,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        next_signal(&mut *on_a).await,
        Signal::Dispatch {
            run_id: Some(run.id.clone()),
            execution_id: Some(e2),
            local: false
        }
    );

    // A's own changes are marked local; explicit signals work.
    let own = a.create_run(new_run(team.id)).await.unwrap();
    assert_eq!(
        next_signal(&mut *on_a).await,
        Signal::Dispatch {
            run_id: Some(own.id),
            execution_id: None,
            local: true
        }
    );
    b.notify_dispatch(None).await.unwrap();
    assert_eq!(
        next_signal(&mut *on_a).await,
        Signal::Dispatch {
            run_id: None,
            execution_id: None,
            local: false
        }
    );

    elsewhere.cleanup(&other).await;
    Store::close(&b).await;
    drop(on_a);
    db.cleanup(&a).await;
}

/// A database migrated before both dialects shared one numbering (`shares`
/// was PostgreSQL's 4, and it had no run-listing index migration) opens:
/// its versions move up by one, the new 4 runs, and every check passes.
#[tokio::test]
async fn a_database_of_the_old_migration_numbering_is_renumbered_and_opens() {
    let db = TestSchema::new();
    let store = db.store().await;
    store
        .create_team(&RunId::generate().0, "kept")
        .await
        .unwrap();
    // Back to how such a database looked: no version 4, 5..=15 one lower.
    let pool = store.pool();
    for sql in [
        "DROP INDEX runs_team_state_created",
        "DELETE FROM _sqlx_migrations WHERE version = 4",
        "UPDATE _sqlx_migrations SET version = -version WHERE version > 4",
        "UPDATE _sqlx_migrations SET version = -version - 1 WHERE version < 0",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    let shares: String =
        sqlx::query_scalar("SELECT description FROM _sqlx_migrations WHERE version = 4")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(shares, "shares", "the old numbering was rebuilt");
    Store::close(&store).await;

    let again = db.store().await;
    let versions: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(again.pool())
            .await
            .unwrap();
    // Every migration of the folder, numbered 1..=N (later migrations
    // apply after the renumbering).
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(versions.len(), files, "{versions:?}");
    assert!(
        versions.iter().zip(1..).all(|((v, _), n)| *v == n),
        "{versions:?}"
    );
    assert_eq!(versions[3], (4, "run_listing_index".to_owned()));
    assert_eq!(versions[4], (5, "shares".to_owned()));
    let index: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('runs_team_state_created')::text")
            .fetch_one(again.pool())
            .await
            .unwrap();
    assert!(index.is_some(), "the new migration 4 ran");
    assert_eq!(again.team_count().await.unwrap(), 1);
    db.cleanup(&again).await;
}
