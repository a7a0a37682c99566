//! D13: a property test of the execution state machine with leases and
//! epochs. Random interleavings of assignments, claims, starts, renewals,
//! lease sweeps, outcomes, finishes, rejections and cancels, from current and
//! stale executions, on the real SQLite store: at most one result is ever
//! accepted per run, terminal states never reopen, a stale execution never
//! changes the run, and a run never has two live executions.

use hangar_protocol::{
    AgentConfig, ExecutionId, RunExecutionLocation, RunId, RunSourceType, RunState, Timestamp,
};
use hangar_store::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const LEASE_MS: i64 = 6_000;
const WORKERS: [&str; 2] = ["w0", "w1"];

#[derive(Debug, Clone)]
enum Op {
    Assign(usize),
    Claim(usize),
    Start(usize),
    Renew(usize),
    Advance(i64),
    Sweep,
    Outcome(usize, RunState),
    Finish(usize, RunState),
    Reject(usize),
    Cancel,
}

fn terminal_state() -> impl Strategy<Value = RunState> {
    prop_oneof![
        Just(RunState::Succeeded),
        Just(RunState::Failed),
        Just(RunState::Error),
        Just(RunState::Cancelled),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize).prop_map(Op::Assign),
        3 => (0..4usize).prop_map(Op::Claim),
        3 => (0..4usize).prop_map(Op::Start),
        2 => (0..2usize).prop_map(Op::Renew),
        2 => (500..8_000i64).prop_map(Op::Advance),
        3 => Just(Op::Sweep),
        2 => ((0..4usize), terminal_state()).prop_map(|(k, s)| Op::Outcome(k, s)),
        2 => ((0..4usize), terminal_state()).prop_map(|(k, s)| Op::Finish(k, s)),
        1 => (0..4usize).prop_map(Op::Reject),
        1 => Just(Op::Cancel),
    ]
}

/// One case: a fresh store, one run, the operations in order.
async fn check(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = SqliteStore::in_memory().await.unwrap();
    let team = store.create_team("t", "t").await.unwrap();
    let run = store
        .create_run(NewRun {
            id: RunId::generate(),
            team_id: team.id,
            creator_user_id: None,
            title: "t".into(),
            prompt: "p".into(),
            source: RunSourceType::Api,
            execution_location: RunExecutionLocation::Remote,
            config: AgentConfig::default(),
            created_at: 0,
        })
        .await
        .unwrap();
    let mut clock: i64 = Timestamp::now().unix_millis();
    // Executions in creation order, with their worker.
    let mut execs: Vec<(ExecutionId, usize)> = Vec::new();
    let mut ended_in: Option<RunState> = None;
    let mut results_accepted = 0;

    for op in ops {
        let before = store.run(team.id, &run.id).await.unwrap();
        let current = before.current_execution_id.clone();
        let pick = |k: usize| execs.get(k % execs.len().max(1)).map(|(e, _)| e.clone());
        let mut touched: Option<(ExecutionId, Transition)> = None;
        match op {
            Op::Assign(w) => {
                let id = ExecutionId::generate();
                let t = store
                    .assign(NewExecution {
                        id: id.clone(),
                        run_id: run.id.clone(),
                        worker_id: WORKERS[w].into(),
                        token_hash: id.0.as_bytes().to_vec(),
                        created_at: clock,
                        lease_holder: Some(format!("r:{w}")),
                        lease_expires_at: Some(clock + LEASE_MS),
                        issuer_key_id: None,
                    })
                    .await
                    .unwrap();
                if t == Transition::Applied {
                    prop_assert_eq!(before.state, RunState::Queued);
                    prop_assert!(current.is_none(), "assigned over a live execution");
                    execs.push((id, w));
                }
            }
            Op::Claim(k) => {
                if let Some(e) = pick(k) {
                    let t = store.claim(&run.id, &e, clock).await.unwrap();
                    touched = Some((e, t));
                }
            }
            Op::Start(k) => {
                if let Some(e) = pick(k) {
                    let t = store.start(&run.id, &e, clock).await.unwrap();
                    touched = Some((e, t));
                }
            }
            Op::Renew(w) => {
                store
                    .renew_leases(
                        team.id,
                        &WORKERS[w].into(),
                        &format!("r:{w}"),
                        clock + LEASE_MS,
                        clock,
                    )
                    .await
                    .unwrap();
            }
            Op::Advance(ms) => clock += ms,
            Op::Sweep => {
                for (_, exec) in store.expired_leases(clock, 100).await.unwrap() {
                    if !store.take_expired_lease(&exec.id, clock).await.unwrap() {
                        continue;
                    }
                    let run_now = store.run(team.id, &run.id).await.unwrap();
                    let started = exec.state == ExecutionState::Started
                        || !matches!(
                            run_now.state,
                            RunState::Queued | RunState::Pending | RunState::Claimed
                        );
                    let t = if started {
                        let end = ExecutionEnd {
                            outcome: terminal(RunState::Error, "lease expired"),
                            exit_code: None,
                            failure_reason: Some("worker_lost".into()),
                            at: clock,
                        };
                        store
                            .finish_execution(&run.id, &exec.id, &end)
                            .await
                            .unwrap()
                    } else {
                        store
                            .reject(&run.id, &exec.id, "lease expired", clock)
                            .await
                            .unwrap()
                    };
                    touched = Some((exec.id, t));
                }
            }
            Op::Outcome(k, state) => {
                if let Some(e) = pick(k) {
                    let t = store
                        .report_outcome(&run.id, &e, &terminal(state, "outcome"))
                        .await
                        .unwrap();
                    touched = Some((e, t));
                }
            }
            Op::Finish(k, state) => {
                if let Some(e) = pick(k) {
                    let end = ExecutionEnd {
                        outcome: terminal(state, "finished"),
                        exit_code: None,
                        failure_reason: None,
                        at: clock,
                    };
                    let t = store.finish_execution(&run.id, &e, &end).await.unwrap();
                    touched = Some((e, t));
                }
            }
            Op::Reject(k) => {
                if let Some(e) = pick(k) {
                    let t = store.reject(&run.id, &e, "rejected", clock).await.unwrap();
                    touched = Some((e, t));
                }
            }
            Op::Cancel => {
                let _ = store.cancel_run(team.id, &run.id, "cancelled", clock).await;
            }
        }

        let after = store.run(team.id, &run.id).await.unwrap();
        // A stale execution (not the run's current one) never changes the run.
        if let Some((e, t)) = &touched
            && current.as_ref() != Some(e)
        {
            prop_assert_ne!(*t, Transition::Applied, "stale execution {} applied", e);
            prop_assert_eq!(after.state, before.state, "stale execution changed the run");
        }
        // Terminal states never reopen (no follow-up is sent here).
        if let Some(done) = ended_in {
            prop_assert_eq!(after.state, done, "terminal run changed state");
        } else if after.state.is_terminal() {
            results_accepted += 1;
            ended_in = Some(after.state);
        }
        prop_assert!(results_accepted <= 1);
        // Never two live executions of one run.
        let live = store
            .all_live_executions()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, e)| e.run_id == run.id)
            .count();
        prop_assert!(live <= 1, "{live} live executions");
        // A run waiting for a worker has no current execution, and the other way round.
        if after.state == RunState::Queued
            && let Some(current) = &after.current_execution_id
        {
            let exec = store.execution(current).await.unwrap();
            prop_assert!(
                exec.ended_at.is_none(),
                "queued run points at an ended execution"
            );
        }
    }
    store.close().await;
    Ok(())
}

#[test]
fn d13_leases_and_epochs_accept_one_result_per_run_and_never_reopen() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            rt.block_on(check(ops))
        })
        .unwrap();
}
