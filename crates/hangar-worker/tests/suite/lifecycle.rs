//! Assignment → claimed → started → terminal report, with the exact frames.

use super::common::*;
use hangar_protocol::AgentConfig;
use hangar_protocol::worker::{
    FailureReason, TaskClaimed, TaskCompleted, TaskFailed, TaskRejected, TaskStarted,
    WorkerToServer,
};

fn claimed(run: &str, exec: &str) -> WorkerToServer {
    WorkerToServer::TaskClaimed(TaskClaimed {
        task_id: run.into(),
        worker_id: "test-worker".into(),
        execution_id: Some(exec.into()),
    })
}

fn started(run: &str, exec: &str) -> WorkerToServer {
    WorkerToServer::TaskStarted(TaskStarted {
        task_id: run.into(),
        execution_id: exec.into(),
        sandbox: None,
    })
}

#[tokio::test]
async fn hello_comes_first_with_capacity_and_auth() {
    let mut server = FakeServer::start().await;
    let _w = TestWorker::start(&server, |c| c.max_concurrent_tasks = 3);
    let mut conn = server.accept().await;
    assert_eq!(conn.authorization, format!("Bearer {API_KEY}"));
    assert_eq!(conn.worker_id.as_deref(), Some("test-worker"));
    let hello = conn.hello().await;
    assert_eq!(hello.backend, "direct");
    assert_eq!(hello.max_concurrent_tasks, 3);
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    assert!(hello.running.is_empty());
}

#[tokio::test]
async fn successful_task_reports_exact_frames_and_agent_gets_its_arguments() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| c.idle_on_complete = Some("7m".into()));
    let mut conn = server.accept().await;
    conn.hello().await;

    let mut a = w.assignment("run-1", "exec-1", &[]);
    a.task.agent_config_snapshot = Some(AgentConfig {
        model_id: Some("local/qwen".into()),
        ..Default::default()
    });
    a.additional_oz_args = vec!["--extra".into(), "x y".into()];
    conn.assign(a);

    assert_eq!(conn.recv().await, claimed("run-1", "exec-1"));
    assert_eq!(conn.recv().await, started("run-1", "exec-1"));
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_id: "run-1".into(),
            message: "Task completed successfully.".into(),
            task_state: None,
            execution_id: Some("exec-1".into()),
        })
    );
    let args: Vec<String> = w
        .read_out("exec-1", "args")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        args,
        [
            "agent",
            "run",
            "--task-id",
            "run-1",
            "--server-url",
            &server.url,
            "--sandboxed",
            "--model",
            "local/qwen",
            "--idle-on-complete",
            "7m",
            "--extra",
            "x y",
        ]
    );
    assert_eq!(
        w.read_out("exec-1", "pwd").trim(),
        w.workspace_root.join("exec-1").to_str().unwrap()
    );
}

#[tokio::test]
async fn nonzero_exit_is_an_agent_invocation_failure_with_its_code() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-3", "exec-3", &[("EXIT_CODE", "3")]));
    assert_eq!(conn.recv().await, claimed("run-3", "exec-3"));
    assert_eq!(conn.recv().await, started("run-3", "exec-3"));
    let WorkerToServer::TaskFailed(f) = conn.recv().await else {
        panic!("expected task_failed")
    };
    assert_eq!(f.failure_reason, Some(FailureReason::AgentInvocation));
    assert_eq!(f.exit_code, Some(3));
    assert_eq!(f.execution_id.as_deref(), Some("exec-3"));
    assert_eq!(f.task_id, "run-3");
    assert!(f.message.contains('3'), "{}", f.message);
}

#[tokio::test]
async fn death_by_signal_reports_128_plus_signal() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-k", "exec-k", &[("MODE", "self_kill")]));
    let f = conn
        .recv_until(|m| matches!(m, WorkerToServer::TaskFailed(_)))
        .await;
    let WorkerToServer::TaskFailed(TaskFailed {
        failure_reason,
        exit_code,
        ..
    }) = f
    else {
        unreachable!()
    };
    assert_eq!(failure_reason, Some(FailureReason::AgentInvocation));
    assert_eq!(exit_code, Some(128 + 9));
}

#[tokio::test]
async fn at_capacity_a_second_assignment_is_rejected_and_the_slot_frees_afterwards() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| c.max_concurrent_tasks = 1);
    let mut conn = server.accept().await;
    conn.hello().await;
    let gate = w.gate("a");
    conn.assign(w.assignment("run-a", "exec-a", &[("GATE", gate.to_str().unwrap())]));
    assert_eq!(conn.recv().await, claimed("run-a", "exec-a"));
    assert_eq!(conn.recv().await, started("run-a", "exec-a"));

    conn.assign(w.assignment("run-b", "exec-b", &[]));
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskRejected(TaskRejected {
            task_id: "run-b".into(),
            reason: "worker at maximum concurrency".into(),
            execution_id: Some("exec-b".into()),
        })
    );
    assert!(
        !w.out_file("exec-b", "args").exists(),
        "a rejected task must not run"
    );

    w.open_gate(&gate);
    let done = conn.recv().await;
    assert!(
        matches!(&done, WorkerToServer::TaskCompleted(c) if c.execution_id.as_deref() == Some("exec-a")),
        "{done:?}"
    );
    conn.assign(w.assignment("run-b", "exec-b2", &[]));
    assert_eq!(conn.recv().await, claimed("run-b", "exec-b2"));
}

#[tokio::test]
async fn duplicate_delivery_runs_once_and_junk_frames_are_ignored() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.send_text("this is not json");
    conn.send_text(r#"{"type":"from_the_future","data":{"x":1}}"#);
    conn.send_text(r#"{"type":"task_assignment","data":{"task_id":5}}"#);
    conn.send_text(r#"{"type":"task_cancellation","data":{"task_id":"nobody"}}"#);
    let gate = w.gate("dup");
    let a = w.assignment("run-d", "exec-d", &[("GATE", gate.to_str().unwrap())]);
    conn.assign(a.clone());
    assert_eq!(conn.recv().await, claimed("run-d", "exec-d"));
    conn.assign(a);
    assert_eq!(conn.recv().await, started("run-d", "exec-d"));
    w.open_gate(&gate);
    let done = conn.recv().await;
    assert!(
        matches!(done, WorkerToServer::TaskCompleted(_)),
        "a duplicate produced {done:?}"
    );
    // Still serving: a new execution of the same run is a new claim.
    conn.assign(w.assignment("run-d", "exec-d2", &[]));
    assert_eq!(conn.recv().await, claimed("run-d", "exec-d2"));
}

#[tokio::test]
async fn an_unsafe_execution_id_fails_the_task_without_touching_the_filesystem() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-x", "../escape", &[]));
    assert_eq!(conn.recv().await, claimed("run-x", "../escape"));
    let WorkerToServer::TaskFailed(f) = conn.recv().await else {
        panic!("expected task_failed")
    };
    assert_eq!(f.failure_reason, Some(FailureReason::WorkspaceSetup));
    assert!(!w.workspace_root.parent().unwrap().join("escape").exists());
}
