//! Direct-only guarantees: the exact minimal environment (S7), strays
//! killed when the agent exits, the configured setup and teardown hooks.
//! Cancel (D8), cleanup and containment (S3) are in the conformance suite.

use super::common::*;
use hangar_protocol::worker::{FailureReason, WorkerToServer};
use std::collections::BTreeMap;

#[tokio::test]
async fn s7_task_env_is_minimal_and_never_has_the_worker_key() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| {
        c.env = vec![("FROM_CONFIG".into(), "cfg".into())]
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-env", "exec-env", &[("SECRET_TOKEN", "s3cret")]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskCompleted(_)))
        .await;

    let env: BTreeMap<String, String> = w
        .read_out("exec-env", "env")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let mut expected: BTreeMap<String, String> = [
        ("HANGAR_RUN_TOKEN", "hr_run_token"),
        ("HANGAR_RUN_ID", "run-env"),
        ("HANGAR_EXECUTION_ID", "exec-env"),
        ("HANGAR_SERVER_URL", "http://server.invalid"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("GH_PROMPT_DISABLED", "1"),
        ("SECRET_TOKEN", "s3cret"),
        ("FROM_CONFIG", "cfg"),
        // The worker prepared the sandbox: an agent given --environment
        // does not clone or run setup commands again.
        ("HANGAR_ENVIRONMENT_PREPARED", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    expected.insert("TEST_OUT".into(), w.out.to_string_lossy().into_owned());
    expected.insert(
        "GIT_CONFIG_GLOBAL".into(),
        w.workspace_root
            .join("exec-env")
            .join(".gitconfig")
            .to_string_lossy()
            .into_owned(),
    );
    // In the sandbox the host's home and temporary directory do not exist:
    // HOME is the workspace, TMPDIR the private /tmp; PATH is the worker's.
    let workspace = w
        .workspace_root
        .join("exec-env")
        .to_string_lossy()
        .into_owned();
    expected.insert("HOME".into(), workspace.clone());
    expected.insert("PWD".into(), workspace);
    expected.insert("TMPDIR".into(), "/tmp".into());
    if let Ok(v) = std::env::var("PATH") {
        expected.insert("PATH".into(), v);
    }
    // The run's trace context, pointing at the worker's task span (W3C).
    let traceparent = env.get("TRACEPARENT").cloned().unwrap_or_default();
    assert!(
        hangar_telemetry::trace::TraceParent::parse(&traceparent).is_some_and(
            |t| t.trace_id == hangar_telemetry::trace::TraceParent::for_run("run-env").trace_id
        ),
        "TRACEPARENT={traceparent:?}"
    );
    expected.insert("TRACEPARENT".into(), traceparent);
    assert_eq!(env, expected);
    assert!(!env.contains_key("HANGAR_API_KEY"));
    assert!(
        !env.values().any(|v| v.contains(API_KEY)),
        "the worker's key leaked into the task"
    );
}

#[tokio::test]
async fn strays_are_killed_when_the_agent_exits_normally() {
    let mut server = FakeServer::start().await;
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("leaky.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\n(trap '' TERM HUP; exec sleep 1000) &\n\
         until grep -q sleep /proc/$!/cmdline 2>/dev/null; do sleep 0.01; done\n\
         setsid -f sleep 1001\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let w = TestWorker::start(&server, |c| c.agent_path = Some(script.clone()));
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-l", "exec-l", &[]));
    let done = conn
        .recv_until(|m| {
            !matches!(
                m,
                WorkerToServer::TaskClaimed(_) | WorkerToServer::TaskStarted(_)
            )
        })
        .await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    // Both the job in its group and the `setsid` daemon that left it.
    assert_eq!(
        execution_processes("exec-l"),
        Vec::new(),
        "background processes outlived the agent"
    );
}

#[tokio::test]
async fn setup_and_teardown_run_in_the_workspace_and_a_failing_setup_fails_the_task() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| {
        c.direct.setup_command = Some(
            "echo setup > \"$TEST_OUT/$HANGAR_EXECUTION_ID.setup\"; [ -z \"${FAIL_SETUP:-}\" ]"
                .into(),
        );
        c.direct.teardown_command =
            Some("pwd > \"$TEST_OUT/$HANGAR_EXECUTION_ID.teardown\"".into());
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-s", "exec-s", &[]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskCompleted(_)))
        .await;
    assert_eq!(w.read_out("exec-s", "setup").trim(), "setup");
    assert_eq!(
        w.read_out("exec-s", "teardown").trim(),
        w.workspace_root.join("exec-s").to_str().unwrap()
    );

    conn.assign(w.assignment("run-f", "exec-f", &[("FAIL_SETUP", "1")]));
    let WorkerToServer::TaskFailed(f) = conn
        .recv_until(|m| matches!(m, WorkerToServer::TaskFailed(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(f.failure_reason, Some(FailureReason::SetupCommand));
    assert!(
        !w.out_file("exec-f", "args").exists(),
        "the agent ran after a failed setup"
    );
    assert!(
        w.out_file("exec-f", "teardown").exists(),
        "teardown must run whatever happened"
    );
    assert!(!w.workspace_root.join("exec-f").exists());
}
