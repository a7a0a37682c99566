//! Shutdown: drain across reconnects and hard stop (the drain itself, D9,
//! is in the conformance suite).

use super::common::*;
use hangar_protocol::worker::{FailureReason, WorkerToServer};

#[tokio::test]
async fn drain_survives_a_reconnect() {
    let mut server = FakeServer::start().await;
    let mut w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    let gate = w.gate("drain2");
    conn.assign(w.assignment("run-1", "exec-1", &[("GATE", gate.to_str().unwrap())]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;
    w.shutdown.cancel();
    assert_eq!(conn.recv().await, WorkerToServer::WorkerDraining);

    conn.drop_connection();
    let mut conn = server.accept().await;
    assert_eq!(conn.hello().await.running.len(), 1);
    assert_eq!(
        conn.recv().await,
        WorkerToServer::WorkerDraining,
        "the new connection must know"
    );
    w.open_gate(&gate);
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskCompleted(_)))
        .await;
    w.join().await.unwrap();
}

#[tokio::test]
async fn hard_shutdown_stops_running_tasks_as_graceful_shutdown() {
    let mut server = FakeServer::start().await;
    let mut w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-h", "exec-h", &[("MODE", "ignore_term")]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;
    wait_for_file(&w.out_file("exec-h", "ready")).await;
    let pgid = group_of(execution_pid("exec-h", " agent run"));

    w.shutdown.cancel();
    w.hard_shutdown.cancel();
    assert_eq!(conn.recv().await, WorkerToServer::WorkerDraining);
    match conn.recv().await {
        WorkerToServer::TaskFailed(f) => {
            assert_eq!(f.failure_reason, Some(FailureReason::GracefulShutdown));
            assert_eq!(f.execution_id.as_deref(), Some("exec-h"));
        }
        other => panic!("expected task_failed, got {other:?}"),
    }
    w.join().await.unwrap();
    wait_for_group_gone(pgid).await;
    assert!(!w.workspace_root.join("exec-h").exists());
}

#[tokio::test]
async fn shutdown_with_nothing_running_returns_promptly() {
    let mut server = FakeServer::start().await;
    let mut w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    w.shutdown.cancel();
    assert_eq!(conn.recv().await, WorkerToServer::WorkerDraining);
    w.join().await.unwrap();
    let rest = conn.until_end().await;
    assert!(
        matches!(rest.as_slice(), [Seen::Close(Some(1000))]),
        "{rest:?}"
    );
}

#[tokio::test]
async fn reports_queued_while_disconnected_are_flushed_before_run_returns() {
    let mut server = FakeServer::start().await;
    let mut w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    let gate = w.gate("flush");
    conn.assign(w.assignment("run-f", "exec-f", &[("GATE", gate.to_str().unwrap())]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;

    server.set_refusing(true);
    conn.drop_connection();
    w.shutdown.cancel();
    w.open_gate(&gate);
    wait_for_removal(&w.workspace_root.join("exec-f")).await;
    // The task is done and the worker wants to leave, but must deliver first.
    let tried = server.attempts();
    hangar_testkit::poll::until_ok("the worker to keep delivering", WAIT, || {
        let attempts = server.attempts();
        if attempts >= tried + 2 {
            Ok(())
        } else {
            Err(attempts)
        }
    })
    .await;
    assert!(
        !w.handle.as_ref().unwrap().is_finished(),
        "run() returned with a report undelivered"
    );

    server.set_refusing(false);
    let mut conn = server.accept().await;
    conn.hello().await;
    let mut rest = conn.until_end().await.into_iter();
    assert!(matches!(
        rest.next(),
        Some(Seen::Msg(WorkerToServer::WorkerDraining))
    ));
    match rest.next() {
        Some(Seen::Msg(WorkerToServer::TaskCompleted(c))) => {
            assert_eq!(c.execution_id.as_deref(), Some("exec-f"))
        }
        other => panic!("expected task_completed, got {other:?}"),
    }
    assert!(matches!(rest.next(), Some(Seen::Close(Some(1000)))));
    w.join().await.unwrap();
}
