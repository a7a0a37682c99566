//! Direct backend guarantees: minimal environment (S7), cancel that leaves
//! nothing running (D8), private workspaces that are removed.

use super::common::*;
use hangar_protocol::worker::{FailureReason, TaskCompleted, WorkerToServer};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
async fn d8_cancel_sigterm_then_sigkill_leaves_nothing_running() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| c.kill_grace = Duration::from_millis(700));
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-c", "exec-c", &[("MODE", "ignore_term")]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;
    wait_for_file(&w.out_file("exec-c", "ready")).await;
    let pgid = group_of(execution_pid("exec-c", " agent run"));
    let stray = execution_pid("exec-c", "sleep 1000");
    assert!(alive(stray));
    assert!(
        live_group_members(pgid).len() >= 2,
        "script and its stray run in one group"
    );

    let cancelled_at = Instant::now();
    conn.cancel("run-c");
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_id: "run-c".into(),
            message: "Task cancelled by user request.".into(),
            task_state: Some("CANCELLED".into()),
            execution_id: Some("exec-c".into()),
        })
    );
    // SIGTERM reached the script's trap first; SIGKILL came only after the grace.
    assert!(w.read_out("exec-c", "signals").contains("term"));
    assert!(cancelled_at.elapsed() >= Duration::from_millis(700));
    assert!(!alive(stray), "the stray that ignored SIGTERM survived");
    assert_eq!(
        live_group_members(pgid),
        Vec::<i32>::new(),
        "processes left in the task's group"
    );
    assert!(!w.workspace_root.join("exec-c").exists());
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
async fn workspace_is_private_and_removed_afterwards() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    // Something else in the root that must survive everything.
    std::fs::create_dir_all(w.workspace_root.join("someone-else")).unwrap();
    conn.assign(w.assignment("run-w", "exec-w", &[]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskCompleted(_)))
        .await;
    assert_eq!(w.read_out("exec-w", "mode").trim(), "700");
    assert!(
        !w.workspace_root.join("exec-w").exists(),
        "workspace not removed"
    );
    assert!(w.workspace_root.join("someone-else").exists());

    let mut w = w;
    w.shutdown.cancel();
    w.join().await.unwrap();
    assert!(
        w.workspace_root.join("someone-else").exists(),
        "shutdown removed a foreign workspace"
    );
}

#[tokio::test]
async fn no_cleanup_keeps_the_workspace() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| c.cleanup = false);
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-n", "exec-n", &[]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskCompleted(_)))
        .await;
    let ws = w.workspace_root.join("exec-n");
    assert!(ws.is_dir(), "workspace removed despite no_cleanup");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&ws).unwrap().permissions().mode() & 0o777,
        0o700
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

/// The `pids.current` of execution `exec`'s cgroup: v2 when its controller
/// is delegated, else the v1 `pids` hierarchy (hybrid hosts).
fn execution_pids(exec: &str) -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "pids") {
            candidates.push(format!(
                "/sys/fs/cgroup/pids/{path}/hangar-{exec}/pids.current"
            ));
        } else if controllers.is_empty() {
            for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                candidates.push(format!("{base}/{path}/hangar-{exec}/pids.current"));
            }
        }
    }
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().parse().unwrap())
}

#[tokio::test]
async fn s3_direct_fork_bomb_and_memory_hog_are_contained() {
    let mut server = FakeServer::start().await;
    let w = TestWorker::start(&server, |c| {
        c.direct.pids_limit = Some(64);
        c.direct.memory_mb = Some(64);
        c.kill_grace = Duration::from_millis(300);
    });
    let mut conn = server.accept().await;
    conn.hello().await;

    // Memory hog: OOM-killed inside its limit, reported as container_oom.
    conn.assign(w.assignment("run-mem", "exec-mem", &[("MODE", "mem_hog")]));
    let done = conn.recv_end().await;
    let WorkerToServer::TaskFailed(f) = done else {
        panic!("{done:?}")
    };
    assert_eq!(
        f.failure_reason,
        Some(FailureReason::ContainerOom),
        "{}",
        f.message
    );
    assert!(f.message.contains("64 MiB"), "{}", f.message);

    // Fork bomb: the process count stops at the limit; the worker stays
    // responsive (it handles a cancel) and nothing is left.
    conn.assign(w.assignment("run-fork", "exec-fork", &[("MODE", "fork_bomb")]));
    wait_for_file(&w.out_file("exec-fork", "ready")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = execution_pids("exec-fork").expect("pids cgroup of the execution");
    assert!(pids <= 64, "pids {pids} over the limit");
    assert!(pids >= 32, "the bomb did fork ({pids})");
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success(),
        "the host can still start processes"
    );
    let asked = Instant::now();
    conn.cancel("run-fork");
    let done = conn.recv_end().await;
    assert!(
        matches!(&done, WorkerToServer::TaskCompleted(c) if c.task_state.as_deref() == Some("CANCELLED")),
        "{done:?}"
    );
    assert!(asked.elapsed() < WAIT);
    assert_eq!(execution_pids("exec-fork"), None, "the cgroup is removed");
}
