//! Behaviour every [`Store`] must have: fencing by execution, terminal states
//! that never reopen, idempotent event appends, team scoping.

use hangar_protocol::session::{EventBody, SessionEvent};
use hangar_protocol::{
    AgentConfig, ExecutionId, RunExecutionLocation, RunId, RunSourceType, RunState, Timestamp,
};
use hangar_store::*;

pub(crate) async fn team(store: &dyn Store, name: &str) -> TeamRecord {
    store.create_team(&RunId::generate().0, name).await.unwrap()
}

/// A new run of team `team_id`, on worker `host` if given.
pub(crate) fn run_spec(team_id: i64, host: Option<&str>) -> NewRun {
    NewRun {
        id: RunId::generate(),
        team_id,
        creator_user_id: None,
        title: "t".into(),
        prompt: "p".into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig {
            worker_host: host.map(str::to_owned),
            ..Default::default()
        },
        created_at: Timestamp::now().unix_millis(),
    }
}

pub(crate) async fn new_run(store: &dyn Store, team_id: i64, host: Option<&str>) -> RunRecord {
    store.create_run(run_spec(team_id, host)).await.unwrap()
}

pub(crate) async fn assign(store: &dyn Store, run: &RunRecord, worker: &str) -> ExecutionId {
    assign_with_lease(store, run, worker, None).await
}

/// Assigns `run` to `worker`, with a lease expiring at `lease_expires_at` if given.
pub(crate) async fn assign_with_lease(
    store: &dyn Store,
    run: &RunRecord,
    worker: &str,
    lease_expires_at: Option<i64>,
) -> ExecutionId {
    let exec = execution_spec(&run.id, worker, lease_expires_at);
    let id = exec.id.clone();
    let t = store.assign(exec).await.unwrap();
    assert_eq!(t, Transition::Applied);
    id
}

/// A new execution of `run` on `worker`, with a lease expiring at
/// `lease_expires_at` if given.
pub(crate) fn execution_spec(
    run: &RunId,
    worker: &str,
    lease_expires_at: Option<i64>,
) -> NewExecution {
    let id = ExecutionId::generate();
    NewExecution {
        token_hash: id.0.as_bytes().to_vec(),
        id,
        run_id: run.clone(),
        worker_id: worker.into(),
        created_at: Timestamp::now().unix_millis(),
        lease_holder: lease_expires_at.map(|_| "replica-a:1".into()),
        lease_expires_at,
        issuer_key_id: None,
    }
}

pub(crate) fn end(state: RunState) -> ExecutionEnd {
    ExecutionEnd {
        outcome: terminal(state, "done"),
        exit_code: None,
        failure_reason: None,
        at: Timestamp::now().unix_millis(),
    }
}

pub(crate) fn event(seq: u64) -> SessionEvent {
    SessionEvent {
        seq,
        at: Timestamp::now(),
        body: EventBody::AssistantMessage {
            text: format!("e{seq}"),
        },
    }
}

/// The aggregates behind metrics and the Overview page (issue 13): runs by
/// state over every team, the queue per target host with its oldest run,
/// and one team's runs, failures and cost.
pub(crate) async fn stats_count_runs_the_queue_and_a_teams_failures(store: &dyn Store) {
    let count = |counts: &[(String, i64)], state: RunState| {
        counts
            .iter()
            .find(|(s, _)| *s == state.to_string())
            .map_or(0, |c| c.1)
    };
    let before = store.run_state_counts().await.unwrap();
    let t = team(store, "stats").await;
    let host = format!("stats-host-{}", RunId::generate().0);
    let first = new_run(store, t.id, Some(&host)).await;
    new_run(store, t.id, Some(&host)).await;
    let failed = new_run(store, t.id, None).await;
    let exec = assign(store, &failed, "stats-worker").await;
    let mut ended = end(RunState::Failed);
    ended.failure_reason = Some("setup_command".into());
    store
        .finish_execution(&failed.id, &exec, &ended)
        .await
        .unwrap();
    store.add_usage(&failed.id, 10, 5, 0.25).await.unwrap();

    let after = store.run_state_counts().await.unwrap();
    assert_eq!(
        count(&after, RunState::Queued),
        count(&before, RunState::Queued) + 2
    );
    assert_eq!(
        count(&after, RunState::Failed),
        count(&before, RunState::Failed) + 1
    );
    let queue = store.queue_stats().await.unwrap();
    let mine = queue
        .iter()
        .find(|q| q.host.as_deref() == Some(host.as_str()))
        .expect("the host's queue");
    assert_eq!(mine.depth, 2);
    assert_eq!(mine.oldest_created_at, first.created_at);
    // An assigned run waits for no worker: not in the queue.
    assert!(queue.iter().all(|q| q.depth > 0));

    let overview = store.team_overview(t.id, 0).await.unwrap();
    assert_eq!(count(&overview.runs_by_state, RunState::Queued), 2);
    assert_eq!(count(&overview.runs_by_state, RunState::Failed), 1);
    assert_eq!(overview.runs_created, 3);
    assert_eq!(overview.failures, vec![("setup_command".to_owned(), 1)]);
    assert!(
        (overview.cost_usd - 0.25).abs() < 1e-9,
        "{}",
        overview.cost_usd
    );
    // Nothing of this team since a moment in the future.
    let later = store
        .team_overview(t.id, Timestamp::now().unix_millis() + 60_000)
        .await
        .unwrap();
    assert_eq!((later.runs_created, later.failures.len()), (0, 0));
}

/// Gateway usage accumulates on the run, and per API key or user for
/// callers without a run, scoped to the team.
pub(crate) async fn usage_adds_up_per_run_and_per_caller(store: &dyn Store) {
    let t = team(store, "usage").await;
    let other = team(store, "usage-other").await;
    let run = new_run(store, t.id, None).await;
    store.add_usage(&run.id, 100, 20, 0.5).await.unwrap();
    store.add_usage(&run.id, 1, 2, 0.25).await.unwrap();
    let got = store.run(t.id, &run.id).await.unwrap();
    assert_eq!((got.prompt_tokens, got.completion_tokens), (101, 22));
    assert!((got.inference_cost - 0.75).abs() < 1e-9);

    let key = UsageSubject::ApiKey("key-1".into());
    let user = UsageSubject::User(42);
    store
        .add_caller_usage(t.id, &key, 10, 5, 0.125, 1_000)
        .await
        .unwrap();
    store
        .add_caller_usage(t.id, &key, 30, 7, 0.125, 2_000)
        .await
        .unwrap();
    store
        .add_caller_usage(t.id, &user, 3, 4, 0.0, 1_500)
        .await
        .unwrap();
    store
        .add_caller_usage(other.id, &key, 9, 9, 9.0, 1_500)
        .await
        .unwrap();
    let mut rows = store.caller_usage(t.id).await.unwrap();
    rows.sort_by_key(|r| r.subject.stored());
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].subject, key);
    assert_eq!(
        (
            rows[0].requests,
            rows[0].prompt_tokens,
            rows[0].completion_tokens
        ),
        (2, 40, 12)
    );
    assert!((rows[0].cost_usd - 0.25).abs() < 1e-9);
    assert_eq!(rows[0].updated_at, 2_000);
    assert_eq!(rows[1].subject, user);
    assert_eq!(rows[1].requests, 1);
    let others = store.caller_usage(other.id).await.unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].prompt_tokens, 9);
}

pub(crate) async fn run_filters(store: &dyn Store) {
    let t = team(store, "filters").await;
    let mk = |name: &str, model: &str, prompt: &str, created_at: i64| NewRun {
        id: RunId::generate(),
        team_id: t.id,
        creator_user_id: None,
        title: format!("title {prompt}"),
        prompt: prompt.into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig {
            name: Some(name.into()),
            model_id: Some(model.into()),
            environment_id: Some("env-1".into()),
            ..Default::default()
        },
        created_at,
    };
    let a = store
        .create_run(mk(
            "nightly",
            "openai/gpt-5",
            "Fix 100% of the flaky_tests",
            1_000,
        ))
        .await
        .unwrap();
    let b = store
        .create_run(mk("adhoc", "anthropic/claude", "Write docs", 2_000))
        .await
        .unwrap();
    let ids = |q: RunQuery| async move {
        let mut q = q;
        q.limit = 50;
        store
            .list_runs(t.id, &q)
            .await
            .unwrap()
            .runs
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(RunQuery {
            name: Some("nightly".into()),
            ..Default::default()
        })
        .await,
        vec![a.id.clone()]
    );
    assert_eq!(
        ids(RunQuery {
            model_id: Some("anthropic/claude".into()),
            ..Default::default()
        })
        .await,
        vec![b.id.clone()]
    );
    assert_eq!(
        ids(RunQuery {
            environment_id: Some("env-1".into()),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        ids(RunQuery {
            created_after: Some(1_500),
            ..Default::default()
        })
        .await,
        vec![b.id.clone()]
    );
    assert_eq!(
        ids(RunQuery {
            created_before: Some(1_500),
            ..Default::default()
        })
        .await,
        vec![a.id.clone()]
    );
    // Text search is case-insensitive and treats % and _ literally.
    assert_eq!(
        ids(RunQuery {
            text: Some("FLAKY_TESTS".into()),
            ..Default::default()
        })
        .await,
        vec![a.id.clone()]
    );
    assert_eq!(
        ids(RunQuery {
            text: Some("100%".into()),
            ..Default::default()
        })
        .await,
        vec![a.id.clone()]
    );
    assert!(
        ids(RunQuery {
            text: Some("1_0".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        ids(RunQuery {
            execution_location: Some(RunExecutionLocation::Local),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        ids(RunQuery {
            creator_user_id: Some(42),
            ..Default::default()
        })
        .await
        .is_empty()
    );
}

pub(crate) async fn lifecycle_and_fencing(store: &dyn Store) {
    let t = team(store, "fencing").await;
    let run = new_run(store, t.id, Some("a")).await;
    assert_eq!(run.state, RunState::Queued);
    assert!(
        store
            .queued_runs(1000)
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == run.id)
    );

    let e1 = assign(store, &run, "a").await;
    // A live execution takes the run off the queue and blocks a second assignment.
    assert!(
        !store
            .queued_runs(1000)
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == run.id)
    );
    let dup = store
        .assign(NewExecution {
            id: ExecutionId::generate(),
            run_id: run.id.clone(),
            worker_id: "a".into(),
            token_hash: b"other".to_vec(),
            created_at: 0,
            lease_holder: None,
            lease_expires_at: None,
            issuer_key_id: None,
        })
        .await
        .unwrap();
    assert_eq!(dup, Transition::Stale);

    let now = Timestamp::now().unix_millis();
    assert_eq!(
        store.claim(&run.id, &e1, now).await.unwrap(),
        Transition::Applied
    );
    assert_eq!(
        store.run(t.id, &run.id).await.unwrap().state,
        RunState::Claimed
    );
    assert_eq!(
        store.start(&run.id, &e1, now).await.unwrap(),
        Transition::Applied
    );
    let r = store.run(t.id, &run.id).await.unwrap();
    assert_eq!(r.state, RunState::InProgress);
    assert!(r.sandbox_running && r.started_at.is_some());

    // A report from an execution that is not the current one changes nothing.
    let stranger = ExecutionId::generate();
    assert_eq!(
        store
            .finish_execution(&run.id, &stranger, &end(RunState::Failed))
            .await
            .unwrap(),
        Transition::Stale
    );
    assert_eq!(
        store
            .report_outcome(&run.id, &stranger, &terminal(RunState::Failed, "x"))
            .await
            .unwrap(),
        Transition::Stale
    );
    assert_eq!(
        store.run(t.id, &run.id).await.unwrap().state,
        RunState::InProgress
    );

    // The agent's outcome makes the run terminal; the worker's report then only ends the execution.
    assert_eq!(
        store
            .report_outcome(&run.id, &e1, &terminal(RunState::Succeeded, "ok"))
            .await
            .unwrap(),
        Transition::Applied
    );
    assert_eq!(
        store
            .finish_execution(&run.id, &e1, &end(RunState::Failed))
            .await
            .unwrap(),
        Transition::AlreadyTerminal
    );
    let r = store.run(t.id, &run.id).await.unwrap();
    assert_eq!(r.state, RunState::Succeeded, "terminal states never reopen");
    assert_eq!(r.status_message.as_deref(), Some("ok"));
    assert!(!r.sandbox_running);
    // Duplicate terminal report: unchanged.
    assert_eq!(
        store
            .finish_execution(&run.id, &e1, &end(RunState::Error))
            .await
            .unwrap(),
        Transition::Unchanged
    );
    assert!(store.execution(&e1).await.unwrap().ended_at.is_some());
    assert!(
        store
            .execution_by_token(e1.0.as_bytes())
            .await
            .unwrap()
            .is_some()
    );
}

pub(crate) async fn rejected_runs_return_to_the_queue(store: &dyn Store) {
    let t = team(store, "reject").await;
    let run = new_run(store, t.id, None).await;
    let e1 = assign(store, &run, "w").await;
    let now = Timestamp::now().unix_millis();
    assert_eq!(
        store.reject(&run.id, &e1, "full", now).await.unwrap(),
        Transition::Applied
    );
    let r = store.run(t.id, &run.id).await.unwrap();
    assert_eq!(r.state, RunState::Queued);
    assert!(r.current_execution_id.is_none());
    assert!(
        store
            .queued_runs(1000)
            .await
            .unwrap()
            .iter()
            .any(|q| q.id == run.id)
    );
    // The rejected execution can no longer claim.
    let e2 = assign(store, &run, "w2").await;
    assert_eq!(
        store.claim(&run.id, &e1, now).await.unwrap(),
        Transition::Stale
    );
    assert_eq!(
        store.claim(&run.id, &e2, now).await.unwrap(),
        Transition::Applied
    );
    assert!(
        store
            .live_executions(&"w2".into())
            .await
            .unwrap()
            .iter()
            .any(|e| e.id == e2)
    );
    assert!(
        !store
            .live_executions(&"w".into())
            .await
            .unwrap()
            .iter()
            .any(|e| e.id == e1)
    );
}

pub(crate) async fn cancel_rules(store: &dyn Store) {
    let t = team(store, "cancel").await;
    let other = team(store, "other").await;
    let run = new_run(store, t.id, None).await;
    let now = Timestamp::now().unix_millis();
    assert!(matches!(
        store.cancel_run(other.id, &run.id, "x", now).await,
        Err(StoreError::NotFound)
    ));
    let e1 = assign(store, &run, "w").await;
    let before = store.cancel_run(t.id, &run.id, "stop", now).await.unwrap();
    assert_eq!(before.state, RunState::Queued);
    assert_eq!(before.current_execution_id.as_ref(), Some(&e1));
    // An unclaimed assignment ends with the cancel.
    assert!(store.execution(&e1).await.unwrap().ended_at.is_some());
    assert_eq!(
        store.run(t.id, &run.id).await.unwrap().state,
        RunState::Cancelled
    );
    assert!(matches!(
        store.cancel_run(t.id, &run.id, "again", now).await,
        Err(StoreError::Conflict(_))
    ));
    // Late claims and successes cannot resurrect it.
    assert_eq!(
        store.claim(&run.id, &e1, now).await.unwrap(),
        Transition::AlreadyTerminal
    );
    assert_eq!(
        store
            .report_outcome(&run.id, &e1, &terminal(RunState::Succeeded, "late"))
            .await
            .unwrap(),
        Transition::AlreadyTerminal
    );
    assert_eq!(
        store.run(t.id, &run.id).await.unwrap().state,
        RunState::Cancelled
    );
}

pub(crate) async fn events_are_stored_once_in_order(store: &dyn Store) {
    let t = team(store, "events").await;
    let run = new_run(store, t.id, None).await;
    let e1 = assign(store, &run, "w").await;
    assert_eq!(store.last_seq(&run.id, &e1).await.unwrap(), 0);
    assert_eq!(
        store
            .append_events(&run.id, &e1, &[event(1), event(2)])
            .await
            .unwrap(),
        2
    );
    // A gap: 4 arrives before 3; the contiguous position stays at 2.
    assert_eq!(
        store
            .append_events(&run.id, &e1, &[event(4)])
            .await
            .unwrap(),
        2
    );
    // Resent events are ignored, and 3 closes the gap.
    assert_eq!(
        store
            .append_events(&run.id, &e1, &[event(2), event(3)])
            .await
            .unwrap(),
        4
    );
    let all = store.run_events(&run.id).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|(_, e)| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(all[1].1, event_with_text(&all[1].1, "e2"));
}

fn event_with_text(e: &SessionEvent, text: &str) -> SessionEvent {
    SessionEvent {
        seq: e.seq,
        at: e.at,
        body: EventBody::AssistantMessage { text: text.into() },
    }
}

pub(crate) async fn runs_are_team_scoped_and_paged(store: &dyn Store) {
    let t = team(store, "paging").await;
    let other = team(store, "paging-other").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(new_run(store, t.id, None).await.id);
    }
    let foreign = new_run(store, other.id, None).await;
    assert!(matches!(
        store.run(t.id, &foreign.id).await,
        Err(StoreError::NotFound)
    ));
    let mut seen = Vec::new();
    let mut query = RunQuery {
        limit: 2,
        sort: RunSort::CreatedAt,
        ..Default::default()
    };
    loop {
        let page = store.list_runs(t.id, &query).await.unwrap();
        assert!(page.runs.len() <= 2);
        seen.extend(page.runs.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(
        seen, ids,
        "every run once, newest first, none of the other team"
    );
    let queued = RunQuery {
        limit: 50,
        states: vec![RunState::Succeeded],
        ..Default::default()
    };
    assert!(
        store
            .list_runs(t.id, &queued)
            .await
            .unwrap()
            .runs
            .is_empty()
    );
}

pub(crate) async fn api_keys(store: &dyn Store) {
    let t = team(store, "keys").await;
    let now = Timestamp::now().unix_millis();
    let key = store
        .create_api_key(NewApiKey {
            id: RunId::generate().0,
            team_id: t.id,
            user_id: None,
            name: "ci".into(),
            prefix: "hk_abcd".into(),
            hash: vec![7; 32],
            created_at: now,
            expires_at: None,
        })
        .await
        .unwrap();
    let found = store.api_key_by_hash(&[7; 32]).await.unwrap().unwrap();
    assert!(found.is_active(now));
    assert!(store.api_key_by_hash(&[8; 32]).await.unwrap().is_none());
    let other = team(store, "keys-other").await;
    assert!(matches!(
        store.revoke_api_key(other.id, &key.id, now).await,
        Err(StoreError::NotFound)
    ));
    store.revoke_api_key(t.id, &key.id, now).await.unwrap();
    assert!(
        !store
            .api_key_by_hash(&[7; 32])
            .await
            .unwrap()
            .unwrap()
            .is_active(now)
    );
}

/// `metadata[k]=v`, `ancestor_run_id` and the trigger's integration read the
/// run-level fields kept in the configuration (`_hangar`), in both SQL
/// dialects.
pub(crate) async fn metadata_and_ancestry_filters(store: &dyn Store) {
    let t = team(store, "metadata").await;
    let mk = |metadata: &[(&str, &str)], ancestors: &[&RunId]| NewRun {
        id: RunId::generate(),
        team_id: t.id,
        creator_user_id: None,
        title: "t".into(),
        prompt: "p".into(),
        source: RunSourceType::Api,
        execution_location: RunExecutionLocation::Remote,
        config: AgentConfig {
            hangar: Some(hangar_protocol::RunOptions {
                metadata: Some(
                    metadata
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ancestors: Some(ancestors.iter().map(|a| a.0.clone()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        },
        created_at: 1_000,
    };
    let root = store
        .create_run(mk(&[("team", "core"), ("ticket.id", "T-1")], &[]))
        .await
        .unwrap();
    let child = store
        .create_run(mk(&[("team", "core"), ("ticket.id", "T-2")], &[&root.id]))
        .await
        .unwrap();
    let other = store.create_run(mk(&[], &[])).await.unwrap();
    let ids = |q: RunQuery| async move {
        let mut q = q;
        q.limit = 50;
        let mut ids: Vec<RunId> = store
            .list_runs(t.id, &q)
            .await
            .unwrap()
            .runs
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        ids
    };
    let meta = |pairs: &[(&str, &str)]| RunQuery {
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    let mut both = vec![root.id.clone(), child.id.clone()];
    both.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ids(meta(&[("team", "core")])).await, both);
    assert_eq!(
        ids(meta(&[("team", "core"), ("ticket.id", "T-2")])).await,
        vec![child.id.clone()]
    );
    assert!(ids(meta(&[("team", "CORE")])).await.is_empty());
    assert!(ids(meta(&[("nope", "core")])).await.is_empty());
    let descendants = |id: &RunId| RunQuery {
        ancestor_run_id: Some(id.0.clone()),
        ..Default::default()
    };
    assert_eq!(ids(descendants(&root.id)).await, vec![child.id.clone()]);
    assert!(ids(descendants(&other.id)).await.is_empty());

    let mut triggered = mk(&[], &[]);
    if let Some(options) = triggered.config.hangar.as_mut() {
        options.trigger = Some(hangar_protocol::integration::RunTrigger {
            kind: hangar_protocol::integration::IntegrationKind::Webhook,
            integration_id: "int-1".into(),
            delivery_id: Some("d-1".into()),
            actor: None,
            url: None,
        });
    }
    let triggered = store.create_run(triggered).await.unwrap();
    let by_integration = |id: &str| RunQuery {
        trigger_integration_id: Some(id.to_owned()),
        ..Default::default()
    };
    assert_eq!(
        ids(by_integration("int-1")).await,
        vec![triggered.id.clone()]
    );
    assert!(ids(by_integration("int-2")).await.is_empty());
}
