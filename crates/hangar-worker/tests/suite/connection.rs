//! Reconnects, reattach via hello, reports that survive a disconnect,
//! liveness, and a rejected key.

use super::common::*;
use axum::http::StatusCode;
use hangar_protocol::worker::{RunningTask, WorkerToServer};
use std::time::Duration;

#[tokio::test]
async fn reconnect_reannounces_running_tasks_and_delivers_reports_made_while_disconnected() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    let gate = w.gate("r");
    conn.assign(w.assignment("run-r", "exec-r", &[("GATE", gate.to_str().unwrap())]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;

    // 1. The server drops the socket: the worker reconnects and reattaches.
    conn.drop_connection();
    let mut conn = server.accept().await;
    let hello = conn.hello().await;
    assert_eq!(
        hello.running,
        vec![RunningTask {
            task_id: "run-r".into(),
            execution_id: "exec-r".into()
        }]
    );

    // 2. The server goes away; the task finishes while nobody listens.
    server.set_refusing(true);
    let refused_before = server.attempts();
    conn.drop_connection();
    w.open_gate(&gate);
    // The task's cleanup (workspace removal) precedes its report.
    wait_for_removal(&w.workspace_root.join("exec-r")).await;
    // Make sure the worker really was turned away at least once afterwards.
    hangar_testkit::poll::until_ok("the worker to keep reconnecting", WAIT, || {
        let attempts = server.attempts();
        if attempts >= refused_before + 2 {
            Ok(())
        } else {
            Err(attempts)
        }
    })
    .await;

    // 3. The server is back: hello first, then the report that was queued.
    server.set_refusing(false);
    let mut conn = server.accept().await;
    let hello = conn.hello().await;
    assert!(hello.running.is_empty(), "{:?}", hello.running);
    match conn.recv().await {
        WorkerToServer::TaskCompleted(c) => {
            assert_eq!(c.execution_id.as_deref(), Some("exec-r"));
            assert_eq!(c.task_state, None);
        }
        other => panic!("expected the queued task_completed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_server_is_detected_by_the_read_timeout() {
    let mut server = FakeServer::start().await;
    // Pings every 100 ms, dead after 600 ms of silence.
    let _w = TestWorker::start(&server, |c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.read_timeout = Duration::from_millis(600);
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    // A healthy server answers pings: the connection must outlive several deadlines.
    let healthy = tokio::time::timeout(Duration::from_millis(2000), server.accept()).await;
    assert!(healthy.is_err(), "the worker dropped a healthy connection");
    drop(healthy);
    // Now stop reading (and so stop answering pings) without closing the TCP connection.
    conn.stall();
    let mut again = server.accept().await;
    again.hello().await;
}

#[tokio::test]
async fn a_rejected_key_is_retried_and_the_worker_connects_once_accepted() {
    let mut server = FakeServer::start().await;
    server.reject_next(3, StatusCode::UNAUTHORIZED);
    let _w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    assert!(server.attempts() >= 4, "attempts: {}", server.attempts());
}

#[tokio::test]
async fn a_server_that_accepts_then_closes_does_not_cause_a_hot_loop() {
    let mut server = FakeServer::start().await;
    // Ceiling 400 ms after a few doublings; full jitter averages 200 ms.
    let _w = TestWorker::start(&server, |c| {
        c.reconnect_initial = Duration::from_millis(50);
        c.reconnect_max = Duration::from_millis(400);
    });
    let started = tokio::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let Ok(conn) = tokio::time::timeout(Duration::from_secs(2), server.accept()).await else {
            break;
        };
        conn.drop_connection();
        n += 1;
    }
    // Without backoff this would be thousands.
    assert!(n < 40, "{n} connections in 2 s");
    assert!(n >= 2, "the worker stopped reconnecting after {n}");
}
