//! `--idle-on-complete` in the worker core: at most `max_concurrent_tasks`
//! sandboxes are kept, and a drain removes them. (Reuse by a follow-up and
//! expiry are in the conformance suite, `idle_reuse`, on every backend.)

use super::common::*;
use hangar_protocol::worker::WorkerToServer;

/// Runs one assignment to its `task_completed`.
async fn run_to_end(conn: &mut FakeConn, w: &TestWorker, run: &str, exec: &str) {
    conn.assign(w.assignment(run, exec, &[]));
    let done = conn.recv_end().await;
    assert!(
        matches!(&done, WorkerToServer::TaskCompleted(c) if c.execution_id.as_deref() == Some(exec)),
        "{done:?}"
    );
}

#[tokio::test]
async fn idle_workspaces_are_bounded_and_drain_removes_them() {
    let mut server = FakeServer::start().await;
    let mut w = TestWorker::start(&server, |c| {
        c.idle_on_complete = Some("10m".into());
        c.max_concurrent_tasks = 1;
    });
    let mut conn = server.accept().await;
    conn.hello().await;

    run_to_end(&mut conn, &w, "run-a", "exec-a").await;
    assert!(w.workspace_root.join("exec-a").exists());
    // Idle sandboxes take no slot, but at most max_concurrent_tasks are kept.
    run_to_end(&mut conn, &w, "run-b", "exec-b").await;
    wait_for_removal(&w.workspace_root.join("exec-a")).await;
    assert!(w.workspace_root.join("exec-b").exists());

    w.shutdown.cancel();
    w.join().await.unwrap();
    assert!(
        !w.workspace_root.join("exec-b").exists(),
        "drain removes idle workspaces"
    );
}
