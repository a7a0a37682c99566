//! Conformance behaviours of live executions: leases, follow-ups to a live
//! or an ended run, lost workers, and how each run last ended.

use super::conformance::{
    assign, assign_with_lease, end, event, execution_spec, new_run, run_spec, team,
};
use hangar_protocol::{ExecutionId, RunState, Timestamp};
use hangar_store::*;

pub(crate) async fn followups_reopen_only_ended_runs(store: &dyn Store) {
    let t = team(store, "reopen").await;
    let other = team(store, "reopen-other").await;
    let run = new_run(store, t.id, None).await;
    let now = Timestamp::now().unix_millis();
    let followup = |message: &str| NewFollowup {
        message: message.into(),
        sender: "user:1".into(),
        at: now,
    };
    assert_eq!(store.latest_followup(&run.id).await.unwrap(), None);
    // Queued: not ended, nothing to reopen.
    assert!(matches!(
        store.reopen_run(t.id, &run.id, &followup("x")).await,
        Err(StoreError::Conflict(_))
    ));
    let e1 = assign(store, &run, "w1").await;
    store.claim(&run.id, &e1, now).await.unwrap();
    store.start(&run.id, &e1, now).await.unwrap();
    store
        .append_events(&run.id, &e1, &[event(1), event(2)])
        .await
        .unwrap();
    // Running: never reopened.
    assert!(matches!(
        store.reopen_run(t.id, &run.id, &followup("x")).await,
        Err(StoreError::Conflict(_))
    ));
    // Terminal but the execution is still live (its sandbox winds down): refused.
    store
        .report_outcome(&run.id, &e1, &terminal(RunState::Succeeded, "ok"))
        .await
        .unwrap();
    assert!(matches!(
        store.reopen_run(t.id, &run.id, &followup("x")).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .finish_execution(&run.id, &e1, &end(RunState::Succeeded))
        .await
        .unwrap();
    // Another team cannot see it.
    assert!(matches!(
        store.reopen_run(other.id, &run.id, &followup("x")).await,
        Err(StoreError::NotFound)
    ));
    let reopened = store
        .reopen_run(t.id, &run.id, &followup("and now the tests"))
        .await
        .unwrap();
    assert_eq!(reopened.state, RunState::Queued);
    assert_eq!(reopened.current_execution_id, None);
    assert_eq!(reopened.status_message, None);
    let latest = store.latest_followup(&run.id).await.unwrap().unwrap();
    assert_eq!(latest.message, "and now the tests");
    assert_eq!(latest.sender, "user:1");
    // Only once: a second follow-up while queued is refused.
    assert!(matches!(
        store.reopen_run(t.id, &run.id, &followup("y")).await,
        Err(StoreError::Conflict(_))
    ));
    // The dispatcher sees it again, and a second execution keeps the first's events.
    assert!(
        store
            .queued_runs(1000)
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == run.id)
    );
    let e2 = assign(store, &run, "w1").await;
    store.claim(&run.id, &e2, now).await.unwrap();
    store.start(&run.id, &e2, now).await.unwrap();
    store
        .append_events(&run.id, &e2, &[event(1)])
        .await
        .unwrap();
    store
        .report_outcome(&run.id, &e2, &terminal(RunState::Succeeded, "again"))
        .await
        .unwrap();
    let events = store.run_events(&run.id).await.unwrap();
    let order: Vec<_> = events.iter().map(|(x, e)| (x.clone(), e.seq)).collect();
    assert_eq!(order, vec![(e1.clone(), 1), (e1, 2), (e2, 1)]);
    assert_eq!(
        store.run(t.id, &run.id).await.unwrap().state,
        RunState::Succeeded
    );
}

/// Leases: renewed by their worker's team only, listed once expired, taken by
/// exactly one sweeper and never after a renewal; a claimed run whose lease
/// expired before it started is queued again.
pub(crate) async fn leases_renew_expire_and_are_taken_once(store: &dyn Store) {
    let t = team(store, "leases").await;
    let other = team(store, "leases-other").await;
    let now = Timestamp::now().unix_millis();
    let run = new_run(store, t.id, Some("lw")).await;
    let exec = assign_with_lease(store, &run, "lw", Some(now + 1_000)).await;
    assert_eq!(
        store.claim(&run.id, &exec, now).await.unwrap(),
        Transition::Applied
    );

    // Not expired yet: nothing to sweep.
    let expired = |at| async move { store.expired_leases(at, 100).await.unwrap() };
    assert!(!expired(now).await.iter().any(|(_, e)| e.id == exec));
    // Another team's worker of the same id renews nothing of this team.
    assert_eq!(
        store
            .renew_leases(other.id, &"lw".into(), "replica-b:9", now + 60_000, now)
            .await
            .unwrap(),
        0
    );
    // Expired: listed with its team; then renewed by its worker, no longer.
    let later = now + 5_000;
    let found = expired(later).await;
    assert!(
        found.iter().any(|(team, e)| *team == t.id && e.id == exec),
        "{found:?}"
    );
    assert_eq!(
        store
            .renew_leases(t.id, &"lw".into(), "replica-b:2", later + 10_000, later)
            .await
            .unwrap(),
        1
    );
    assert!(!expired(later).await.iter().any(|(_, e)| e.id == exec));
    assert!(
        !store.take_expired_lease(&exec, later).await.unwrap(),
        "a renewed lease cannot be taken"
    );
    let leases = store.team_leases(t.id).await.unwrap();
    let lease = leases
        .iter()
        .find(|l| l.execution_id == exec)
        .expect("lease listed");
    assert_eq!(lease.holder.as_deref(), Some("replica-b:2"));
    assert_eq!(lease.expires_at, later + 10_000);
    assert_eq!(lease.epoch, 1);
    assert!(store.team_leases(other.id).await.unwrap().is_empty());

    // A server starting after an outage gives expired leases a fresh term.
    let outage_over = later + 12_000;
    assert!(expired(outage_over).await.iter().any(|(_, e)| e.id == exec));
    assert!(store.extend_leases(outage_over + 5_000).await.unwrap() >= 1);
    assert!(!expired(outage_over).await.iter().any(|(_, e)| e.id == exec));
    // Expired again: exactly one taker, and a renewal cannot revive it.
    let much_later = later + 20_000;
    assert!(store.take_expired_lease(&exec, much_later).await.unwrap());
    assert!(!store.take_expired_lease(&exec, much_later).await.unwrap());
    store
        .renew_leases(
            t.id,
            &"lw".into(),
            "replica-a:3",
            much_later + 10_000,
            much_later,
        )
        .await
        .unwrap();
    assert!(
        !expired(much_later + 60_000)
            .await
            .iter()
            .any(|(_, e)| e.id == exec)
    );

    // Never started: the claimed run goes back to the queue for a new execution.
    assert_eq!(
        store
            .reject(&run.id, &exec, "lease expired", much_later)
            .await
            .unwrap(),
        Transition::Applied
    );
    let back = store.run(t.id, &run.id).await.unwrap();
    assert_eq!(back.state, RunState::Queued);
    assert_eq!(back.current_execution_id, None);
    let again = assign_with_lease(store, &back, "lw", Some(much_later + 1_000)).await;
    let leases = store.team_leases(t.id).await.unwrap();
    assert_eq!(
        leases
            .iter()
            .find(|l| l.execution_id == again)
            .unwrap()
            .epoch,
        2
    );

    // Executions without a lease (unmanaged runs) are never swept.
    let local = new_run(store, t.id, None).await;
    let unleased = assign(store, &local, "lw2").await;
    assert!(
        !expired(i64::MAX / 2)
            .await
            .iter()
            .any(|(_, e)| e.id == unleased)
    );
}

/// Follow-ups to a live execution: stored in order, pending until the agent
/// acknowledges each (once), refused once the execution ended, and never
/// taken for the follow-up that reopens an ended run.
pub(crate) async fn live_followups_are_stored_pending_until_acked(store: &dyn Store) {
    let t = team(store, "live-followups").await;
    let run = new_run(store, t.id, Some("fw")).await;
    let exec = assign_with_lease(store, &run, "fw", None).await;
    let at = Timestamp::now().unix_millis();
    let note = |m: &str| NewFollowup {
        message: m.to_owned(),
        sender: "user:1".to_owned(),
        at,
    };
    let a = store
        .add_followup(&run.id, &exec, &note("a"))
        .await
        .unwrap();
    let b = store
        .add_followup(&run.id, &exec, &note("b"))
        .await
        .unwrap();
    assert!(a.id < b.id);
    let pending = store.pending_followups(&exec).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    store.followup_delivered(&exec, a.id, at).await.unwrap();
    store.followup_delivered(&exec, a.id, at + 1).await.unwrap();
    let pending = store.pending_followups(&exec).await.unwrap();
    assert_eq!(pending, vec![b.clone()]);
    // Another execution's ack changes nothing.
    store
        .followup_delivered(&ExecutionId("other".into()), b.id, at)
        .await
        .unwrap();
    assert_eq!(store.pending_followups(&exec).await.unwrap().len(), 1);
    // Live follow-ups are not what a reopened run continues with.
    assert_eq!(store.latest_followup(&run.id).await.unwrap(), None);

    store
        .finish_execution(&run.id, &exec, &end(RunState::Succeeded))
        .await
        .unwrap();
    assert!(matches!(
        store.add_followup(&run.id, &exec, &note("late")).await,
        Err(StoreError::Conflict(_))
    ));
}

/// `lease_expiry_policy: requeue`: a started run whose worker was lost goes
/// back to the queue in one step, counted as lost, and only while it is the
/// run's current execution.
pub(crate) async fn a_lost_started_run_can_be_queued_again(store: &dyn Store) {
    let t = team(store, "lost-requeue").await;
    let run = new_run(store, t.id, Some("lq")).await;
    let exec = assign_with_lease(store, &run, "lq", None).await;
    let now = Timestamp::now().unix_millis();
    store.claim(&run.id, &exec, now).await.unwrap();
    store.start(&run.id, &exec, now).await.unwrap();
    assert_eq!(store.lost_executions(&run.id).await.unwrap(), 0);
    assert_eq!(
        store
            .requeue_lost(&run.id, &exec, "lease expired; queued again", now)
            .await
            .unwrap(),
        Transition::Applied
    );
    let queued = store.run(t.id, &run.id).await.unwrap();
    assert_eq!(queued.state, RunState::Queued);
    assert_eq!(queued.current_execution_id, None);
    assert_eq!(store.lost_executions(&run.id).await.unwrap(), 1);
    assert!(store.execution(&exec).await.unwrap().ended_at.is_some());
    // A second time, for the same (ended) execution, changes nothing.
    assert_ne!(
        store
            .requeue_lost(&run.id, &exec, "again", now)
            .await
            .unwrap(),
        Transition::Applied
    );
}

/// A run's latest execution, ended or not, is what its details show
/// (`failure_reason`, `exit_code`): one per run, none for a run never assigned.
pub(crate) async fn last_executions_show_how_each_run_last_ended(store: &dyn Store) {
    let t = team(store, "last-exec").await;
    let retried = new_run(store, t.id, None).await;
    let live = new_run(store, t.id, None).await;
    let never = new_run(store, t.id, None).await;
    let now = Timestamp::now().unix_millis();
    let first = assign(store, &retried, "w").await;
    store
        .reject(&retried.id, &first, "full", now)
        .await
        .unwrap();
    // Later by the clock, so "latest" does not rest on the id tie-break.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let second = assign(store, &retried, "w").await;
    store.claim(&retried.id, &second, now).await.unwrap();
    let mut failed = end(RunState::Failed);
    failed.exit_code = Some(137);
    failed.failure_reason = Some("some_future_reason".into());
    store
        .finish_execution(&retried.id, &second, &failed)
        .await
        .unwrap();
    let running = assign(store, &live, "w").await;
    let ids = [retried.id.clone(), live.id.clone(), never.id.clone()];
    let mut last = store.last_executions(&ids).await.unwrap();
    last.sort_by_key(|e| if e.run_id == retried.id { 0 } else { 1 });
    assert_eq!(last.len(), 2, "{last:?}");
    assert_eq!(last[0].id, second);
    assert_eq!(last[0].exit_code, Some(137));
    assert_eq!(
        last[0].failure_reason.as_deref(),
        Some("some_future_reason")
    );
    assert_eq!(last[1].id, running);
    assert_eq!(last[1].failure_reason, None);
    assert!(store.last_executions(&[]).await.unwrap().is_empty());
}

/// The dispatcher's fast path: a run stored already assigned is what
/// creating it and then assigning it would have left, in one write.
pub(crate) async fn a_run_created_assigned_is_as_if_assigned_after_creation(store: &dyn Store) {
    let t = team(store, "fast-path").await;
    let now = Timestamp::now().unix_millis();
    let spec = run_spec(t.id, None);
    let run_id = spec.id.clone();
    let execution = execution_spec(&run_id, "w-fast", Some(now + 60_000));
    let exec = execution.id.clone();
    let run = store.create_assigned_run(spec, execution).await.unwrap();
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.current_execution_id.as_ref(), Some(&exec));
    // Not waiting in the queue, and not assignable a second time.
    assert!(store.queued_runs(10).await.unwrap().is_empty());
    let second = store
        .assign(execution_spec(&run_id, "w-other", None))
        .await
        .unwrap();
    assert_eq!(second, Transition::Stale);
    let stored = store.execution(&exec).await.unwrap();
    assert_eq!(stored.worker_id.as_str(), "w-fast");
    assert_eq!(
        store
            .execution_by_token(exec.0.as_bytes())
            .await
            .unwrap()
            .map(|e| e.id),
        Some(exec.clone())
    );
    assert_eq!(
        store.live_executions(&"w-fast".into()).await.unwrap().len(),
        1
    );
    // And it runs as any assigned run does.
    assert_eq!(
        store.claim(&run_id, &exec, now + 1).await.unwrap(),
        Transition::Applied
    );
    assert_eq!(
        store.start(&run_id, &exec, now + 2).await.unwrap(),
        Transition::Applied
    );
    assert_eq!(
        store
            .finish_execution(&run_id, &exec, &end(RunState::Succeeded))
            .await
            .unwrap(),
        Transition::Applied
    );
    assert_eq!(
        store.run(t.id, &run_id).await.unwrap().state,
        RunState::Succeeded
    );
}
