//! `--idle-on-complete` on the direct backend (real processes): a finished
//! run's workspace is kept for a follow-up of the same run, reused without
//! setup again, and cleaned up after the idle time, on drain, or when too
//! many are kept. (The docker variant is in `docker.rs`.)

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
async fn a_follow_up_reuses_the_idle_workspace_which_expires_afterwards() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| {
        c.idle_on_complete = Some("3s".into());
        c.direct.setup_command = Some("echo ran >> setup-count".into());
    });
    let mut conn = server.accept().await;
    conn.hello().await;

    run_to_end(&mut conn, &w, "run-idle", "exec-1").await;
    let kept = w.workspace_root.join("exec-1");
    assert!(
        kept.join("setup-count").exists(),
        "workspace kept while idle"
    );

    // A follow-up of the same run: same workspace, no setup again, its own identity.
    run_to_end(&mut conn, &w, "run-idle", "exec-2").await;
    assert_eq!(w.read_out("exec-2", "pwd"), w.read_out("exec-1", "pwd"));
    assert_eq!(
        std::fs::read_to_string(kept.join("setup-count")).unwrap(),
        "ran\n"
    );
    assert!(!w.workspace_root.join("exec-2").exists());
    let env = w.read_out("exec-2", "env");
    assert!(env.contains("HANGAR_EXECUTION_ID=exec-2"), "{env}");

    // Another run gets a workspace of its own.
    run_to_end(&mut conn, &w, "run-other", "exec-3").await;
    assert_ne!(w.read_out("exec-3", "pwd"), w.read_out("exec-1", "pwd"));

    // Nothing follows: both are cleaned up once idle for 3 s.
    wait_for_removal(&kept).await;
    wait_for_removal(&w.workspace_root.join("exec-3")).await;
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
