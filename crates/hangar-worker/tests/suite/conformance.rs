//! The backend conformance suite: every behaviour of the `Backend` /
//! `Execution` contract is written once here, as a function generic over a
//! [`Harness`], and run on every backend by [`conformance!`], one test per
//! behaviour and backend: `conformance::<backend>::<behaviour>`.
//!
//! Each backend lists every behaviour, in the same order (the macro refuses
//! a missing one); a backend that cannot do one declares it
//! `unsupported("reason")`, which makes that test an ignored test whose
//! ignore message is the reason.
//!
//! The harnesses (`harness.rs`) say how a backend is configured and where
//! its traces are (workspace, processes, containers); the behaviours only
//! use the fake control plane and the fake agent of `common.rs`, which runs
//! as the real agent binary would (`<agent> agent run …`).
//!
//! Adding a backend: write its harness, then one `conformance!` line.

mod harness;

use super::common::*;
use hangar_protocol::worker::{
    EnvironmentSpec, FailureReason, TaskClaimed, TaskCompleted, TaskRejected, TaskStarted,
    WorkerToServer,
};
use hangar_worker::WorkerConfig;
use harness::{CommandHarness, DirectHarness, DockerHarness, KubernetesHarness};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How the suite drives one backend.
trait Harness {
    /// The backend's name in `worker_hello`.
    const NAME: &'static str;
    /// Whether a failed setup command's output is in the failure message
    /// (docker: the tail of its log; direct: the setup's output goes to the
    /// worker's log only).
    const SETUP_OUTPUT_IN_MESSAGE: bool;
    /// Whether the worker's configured environment (`-e`) reaches the
    /// task (command: it is the dispatcher's, never the task's).
    const CONFIGURED_ENV_IN_TASK: bool;
    /// Whether the worker prepares the sandbox (clone, setup), telling the
    /// agent so (`HANGAR_ENVIRONMENT_PREPARED`); else the agent does.
    const WORKER_PREPARES: bool;
    /// Whether the worker learns the task's real exit code (command: the
    /// run's final state stands for it).
    const KNOWS_EXIT_CODE: bool;

    /// Switches a test config to this backend; `test` names the test
    /// (unique per backend), for names the backend derives from it.
    fn configure(&self, c: &mut WorkerConfig, test: &str);
    /// Called once the worker of a test started (and the fake server runs).
    fn attach(&self, _server: &FakeServer, _w: &TestWorker) {}
    /// Sets the limits of one execution.
    fn limit(&self, c: &mut WorkerConfig, pids: u64, memory_mb: u64);
    /// The agent's working directory, as the agent sees it.
    fn cwd(&self, w: &TestWorker, exec: &str) -> String;
    /// What the backend keeps of execution `exec` on the worker's host
    /// (workspace, control files).
    fn sandbox_dir(&self, w: &TestWorker, exec: &str) -> PathBuf {
        w.workspace_root.join(exec)
    }
    /// A file the agent (or a setup command) of `exec` wrote into its
    /// working directory, seen from the host.
    fn workspace_file(&self, w: &TestWorker, exec: &str, name: &str) -> PathBuf;
    /// Asserts that execution `exec` runs (processes, container), and
    /// remembers what runs so [`assert_nothing_left`](Self::assert_nothing_left)
    /// can check it is gone.
    fn assert_running(&self, w: &TestWorker, exec: &str);
    /// Asserts that nothing of execution `exec` is left: no process,
    /// container or cgroup, and no sandbox directory.
    async fn assert_nothing_left(&self, w: &TestWorker, exec: &str);
    /// Asserts that execution `exec` was kept (cleanup off, or idle), and
    /// privately.
    fn assert_kept(&self, w: &TestWorker, exec: &str);
    /// Asserts that what the agent of `exec` could write is private to it.
    fn assert_private(&self, w: &TestWorker, exec: &str);
    /// What identifies the sandbox the agent of `exec` ran in.
    fn sandbox_identity(&self, w: &TestWorker, exec: &str) -> String;
    /// After `new` reused the sandbox `kept` parked: what only the backend
    /// knows about the reuse.
    fn assert_reused(&self, w: &TestWorker, kept: &str, new: &str);
    /// Processes in execution `exec`'s pids cgroup.
    fn pids_current(&self, w: &TestWorker, exec: &str) -> Option<u64>;
    /// Checks the message of an OOM failure.
    fn assert_oom_message(&self, message: &str);
    /// Waits until execution `exec` ended while no worker watched it.
    async fn wait_ended(&self, w: &TestWorker, exec: &str);
}

/// Instantiates every behaviour for one backend. The behaviours are listed
/// in a fixed order; `name: unsupported("why")` declares one the backend
/// cannot do.
macro_rules! conformance {
    ($backend:ident = $harness:expr => {
        launch $(: unsupported($r1:literal))?,
        env $(: unsupported($r2:literal))?,
        d8_cancel_with_grace $(: unsupported($r3:literal))?,
        d9_drain $(: unsupported($r4:literal))?,
        setup_failure $(: unsupported($r5:literal))?,
        idle_reuse $(: unsupported($r6:literal))?,
        cleanup $(: unsupported($r7:literal))?,
        d2_reattach $(: unsupported($r8:literal))?,
        s3_memory_contained $(: unsupported($r9:literal))?,
        s3_processes_contained $(: unsupported($r10:literal))? $(,)?
    }) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            conformance!(@case $harness, launch $(, $r1)?);
            conformance!(@case $harness, env $(, $r2)?);
            conformance!(@case $harness, d8_cancel_with_grace $(, $r3)?);
            conformance!(@case $harness, d9_drain $(, $r4)?);
            conformance!(@case $harness, setup_failure $(, $r5)?);
            conformance!(@case $harness, idle_reuse $(, $r6)?);
            conformance!(@case $harness, cleanup $(, $r7)?);
            conformance!(@case $harness, d2_reattach $(, $r8)?);
            conformance!(@case $harness, s3_memory_contained $(, $r9)?);
            conformance!(@case $harness, s3_processes_contained $(, $r10)?);
        }
    };
    (@case $harness:expr, $behaviour:ident) => {
        #[tokio::test]
        async fn $behaviour() {
            let harness = $harness;
            super::$behaviour(&harness).await;
        }
    };
    (@case $harness:expr, $behaviour:ident, $reason:literal) => {
        #[tokio::test]
        #[ignore = $reason]
        async fn $behaviour() {
            panic!("not supported by this backend: {}", $reason);
        }
    };
}

conformance!(direct = DirectHarness::new() => {
    launch,
    env,
    d8_cancel_with_grace,
    d9_drain,
    setup_failure,
    idle_reuse,
    cleanup,
    d2_reattach: unsupported(
        "direct executions are host processes contained with the worker: a restarted \
         worker reaps what the previous one left (backends::direct::state) instead of \
         reattaching"
    ),
    s3_memory_contained,
    s3_processes_contained,
});

conformance!(docker = DockerHarness::new().await => {
    launch,
    env,
    d8_cancel_with_grace,
    d9_drain,
    setup_failure,
    idle_reuse,
    cleanup,
    d2_reattach,
    s3_memory_contained,
    s3_processes_contained,
});

conformance!(kubernetes = KubernetesHarness::new().await => {
    launch,
    env,
    d8_cancel_with_grace,
    d9_drain,
    setup_failure: unsupported(
        "the agent prepares the environment in the pod (--environment), so an environment's \
         setup command failing is the agent's report; the worker's own \
         backend.kubernetes.setup_command is covered by kubernetes_spec and the system tests"
    ),
    idle_reuse: unsupported(
        "a pod is not kept after its agent ends: the kubernetes backend does not park"
    ),
    cleanup,
    d2_reattach,
    s3_memory_contained,
    s3_processes_contained: unsupported(
        "a pod's process limit is the node's (the kubelet's podPidsLimit), not the worker's"
    ),
});

conformance!(command = CommandHarness::default() => {
    launch,
    env,
    d8_cancel_with_grace: unsupported(
        "the command backend hands a cancel to the operator's cancel_command; how (and \
         after which grace) the task is stopped is the dispatcher's"
    ),
    d9_drain,
    setup_failure: unsupported(
        "the dispatched agent prepares its environment itself (--environment); a failing \
         setup is the agent's report on its session, not the backend's"
    ),
    idle_reuse: unsupported(
        "a dispatched task's sandbox is the dispatcher's, never kept by the worker: the \
         command backend does not park"
    ),
    cleanup: unsupported(
        "the dispatcher owns the task's sandbox, so --no-cleanup has nothing to keep; the \
         worker only forgets its record, which every behaviour checks"
    ),
    d2_reattach,
    s3_memory_contained: unsupported(
        "limits are the dispatcher's (its scheduler's), from the payload's instance_shape"
    ),
    s3_processes_contained: unsupported(
        "limits are the dispatcher's (its scheduler's), from the payload's instance_shape"
    ),
});

/// A worker on `h`'s backend, configured for `test`, then `tweak`ed.
fn start<H: Harness>(
    h: &H,
    server: &FakeServer,
    test: &str,
    tweak: impl FnOnce(&mut WorkerConfig),
) -> TestWorker {
    let w = TestWorker::start(server, |c| {
        h.configure(c, test);
        tweak(c);
    });
    h.attach(server, &w);
    w
}

fn environment(setup: &[&str]) -> EnvironmentSpec {
    EnvironmentSpec {
        id: "env-1".into(),
        name: "test env".into(),
        setup_commands: setup.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// The environment the fake agent of `exec` saw.
fn agent_env(w: &TestWorker, exec: &str) -> BTreeMap<String, String> {
    w.read_out(exec, "env")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The agent starts in its sandbox with its arguments, and the worker
/// reports exactly claimed → started → completed.
async fn launch<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let w = start(h, &server, "launch", |_| {});
    let mut conn = server.accept().await;
    let hello = conn.hello().await;
    assert_eq!(hello.backend, H::NAME);
    conn.assign(w.assignment("run-l", "exec-l", &[]));
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskClaimed(TaskClaimed {
            task_id: "run-l".into(),
            worker_id: w.worker_id.clone().into(),
            execution_id: Some("exec-l".into()),
        })
    );
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskStarted(TaskStarted {
            task_id: "run-l".into(),
            execution_id: "exec-l".into(),
            sandbox: None,
        })
    );
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_id: "run-l".into(),
            message: hangar_worker::COMPLETED_MESSAGE.into(),
            task_state: None,
            execution_id: Some("exec-l".into()),
        })
    );
    let args = w.read_out("exec-l", "args");
    assert!(
        args.starts_with("agent\nrun\n--task-id\nrun-l\n--server-url\n"),
        "{args}"
    );
    assert!(args.lines().any(|a| a == "--sandboxed"), "{args}");
    assert_eq!(w.read_out("exec-l", "pwd").trim(), h.cwd(&w, "exec-l"));
    h.assert_nothing_left(&w, "exec-l").await;
}

/// The agent gets the assignment's variables (secrets and odd values
/// intact), the configured ones, the run's trace context and the
/// "environment prepared" marker; never the worker's key (S7).
async fn env<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let w = start(h, &server, "env", |c| {
        c.env.push(("FROM_CONFIG".into(), "cfg".into()));
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    let secret = "s3cr3t-value";
    conn.assign(w.assignment(
        "run-env",
        "exec-env",
        &[
            ("MY_SECRET", secret),
            ("QUOTED", "it's $HOME `x` \"y\""),
            ("HANGAR_SECRET_NAMES", "MY_SECRET"),
        ],
    ));
    let done = conn.recv_end().await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    let env = agent_env(&w, "exec-env");
    for (k, v) in [
        ("HANGAR_RUN_TOKEN", "hr_run_token"),
        ("HANGAR_RUN_ID", "run-env"),
        ("HANGAR_EXECUTION_ID", "exec-env"),
        ("MY_SECRET", secret),
        ("QUOTED", "it's $HOME `x` \"y\""),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }
    let configured = env.get("FROM_CONFIG").map(String::as_str);
    assert_eq!(configured, H::CONFIGURED_ENV_IN_TASK.then_some("cfg"));
    // When the worker prepared the sandbox, an agent given --environment
    // does not clone or run setup commands again.
    let prepared = env.get("HANGAR_ENVIRONMENT_PREPARED").map(String::as_str);
    assert_eq!(prepared, H::WORKER_PREPARES.then_some("1"));
    let traceparent = env.get("TRACEPARENT").cloned().unwrap_or_default();
    assert!(
        hangar_telemetry::trace::TraceParent::parse(&traceparent).is_some_and(
            |t| t.trace_id == hangar_telemetry::trace::TraceParent::for_run("run-env").trace_id
        ),
        "TRACEPARENT={traceparent:?}"
    );
    assert!(!env.contains_key("HANGAR_API_KEY"));
    assert!(
        !env.values().any(|v| v.contains(API_KEY)),
        "the worker's key leaked into the task"
    );
}

/// D8: a cancel sends SIGTERM, which the agent may ignore; SIGKILL only
/// after the grace; then nothing of the execution is left.
async fn d8_cancel_with_grace<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    // Whole seconds: Kubernetes counts a grace period in seconds.
    let grace = Duration::from_secs(2);
    let w = start(h, &server, "d8", |c| c.kill_grace = grace);
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-d8", "exec-d8", &[("MODE", "ignore_term")]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;
    wait_for_file(&w.out_file("exec-d8", "ready")).await;
    h.assert_running(&w, "exec-d8");

    let cancelled_at = Instant::now();
    conn.cancel("run-d8");
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_id: "run-d8".into(),
            message: hangar_worker::CANCELLED_MESSAGE.into(),
            task_state: Some(hangar_worker::CANCELLED_STATE.into()),
            execution_id: Some("exec-d8".into()),
        })
    );
    let elapsed = cancelled_at.elapsed();
    // SIGTERM reached the agent first and was ignored…
    wait_for_file(&w.out_file("exec-d8", "signals")).await;
    assert!(w.read_out("exec-d8", "signals").contains("term"));
    // …so only SIGKILL after the grace ended it.
    assert!(elapsed >= grace, "{elapsed:?} < {grace:?}");
    h.assert_nothing_left(&w, "exec-d8").await;
}

/// D9: on shutdown the worker drains: it says so, rejects new work, lets
/// the running task finish and report, then closes the socket with 1000.
async fn d9_drain<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let mut w = start(h, &server, "d9", |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    let gate = w.gate("drain");
    conn.assign(w.assignment("run-d9", "exec-d9", &[("GATE", gate.to_str().unwrap())]));
    conn.recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
        .await;
    wait_for_file(&w.out_file("exec-d9", "ready")).await;

    w.shutdown.cancel();
    assert_eq!(conn.recv().await, WorkerToServer::WorkerDraining);
    conn.assign(w.assignment("run-d9-late", "exec-d9-late", &[]));
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskRejected(TaskRejected {
            task_id: "run-d9-late".into(),
            reason: hangar_worker::REJECT_DRAINING.into(),
            execution_id: Some("exec-d9-late".into()),
        })
    );
    // Still running, still connected: run() has not returned.
    assert!(!w.handle.as_ref().unwrap().is_finished());
    h.assert_running(&w, "exec-d9");

    w.open_gate(&gate);
    assert_eq!(
        conn.recv().await,
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_id: "run-d9".into(),
            message: hangar_worker::COMPLETED_MESSAGE.into(),
            task_state: None,
            execution_id: Some("exec-d9".into()),
        })
    );
    let rest = conn.until_end().await;
    assert!(
        matches!(rest.as_slice(), [Seen::Close(Some(1000))]),
        "{rest:?}"
    );
    w.join().await.unwrap();
    assert!(!w.out_file("exec-d9-late", "args").exists());
    h.assert_nothing_left(&w, "exec-d9").await;
}

/// The environment's setup commands run in order in the agent's working
/// directory before it; one that fails fails the task as `setup_command`,
/// the agent never starts, and nothing is left.
async fn setup_failure<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let w = start(h, &server, "setup", |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;

    let gate = w.gate("setup");
    let mut ok = w.assignment("run-ok", "exec-ok", &[("GATE", gate.to_str().unwrap())]);
    ok.environment = Some(environment(&["echo one > order", "echo two >> order"]));
    conn.assign(ok);
    wait_for_file(&w.out_file("exec-ok", "ready")).await;
    assert_eq!(
        std::fs::read_to_string(h.workspace_file(&w, "exec-ok", "order")).unwrap(),
        "one\ntwo\n",
        "both setup commands ran, in order, where the agent runs"
    );
    w.open_gate(&gate);
    let done = conn.recv_end().await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");

    let mut bad = w.assignment("run-bad", "exec-bad", &[]);
    bad.environment = Some(environment(&[
        "echo preparing",
        "echo boom-output >&2; exit 3",
        "echo never",
    ]));
    conn.assign(bad);
    let done = conn.recv_end().await;
    let WorkerToServer::TaskFailed(f) = done else {
        panic!("{done:?}")
    };
    assert_eq!(f.failure_reason, Some(FailureReason::SetupCommand));
    assert_eq!(f.execution_id.as_deref(), Some("exec-bad"));
    assert!(f.message.contains("exit 3"), "{}", f.message);
    if H::SETUP_OUTPUT_IN_MESSAGE {
        assert!(f.message.contains("boom-output"), "{}", f.message);
        assert!(f.message.contains("preparing"), "{}", f.message);
        assert!(!f.message.contains("never\n"), "{}", f.message);
    }
    assert!(
        !w.out_file("exec-bad", "args").exists(),
        "the agent ran after a failed setup"
    );
    h.assert_nothing_left(&w, "exec-bad").await;
}

/// `--idle-on-complete`: a finished run's sandbox is kept; a follow-up of
/// the same run reuses it (no setup again, its own identity and
/// environment); another run gets its own; kept sandboxes go once idle
/// for the configured time.
async fn idle_reuse<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let w = start(h, &server, "idle", |c| {
        c.idle_on_complete = Some("3s".into())
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    let run = |run: &str, exec: &str| {
        let mut a = w.assignment(run, exec, &[("MY_SECRET", exec)]);
        a.environment = Some(environment(&["echo ran >> setup-count"]));
        a
    };
    let run_to_end = async |conn: &mut FakeConn, a: hangar_protocol::worker::TaskAssignment| {
        let exec = a.execution_id.clone();
        conn.assign(a);
        let done = conn.recv_end().await;
        assert!(
            matches!(&done, WorkerToServer::TaskCompleted(c) if c.execution_id.as_deref() == Some(exec.as_str())),
            "{done:?}"
        );
    };

    run_to_end(&mut conn, run("run-idle", "exec-idle-1")).await;
    h.assert_kept(&w, "exec-idle-1");

    // A follow-up of the same run: same sandbox, no setup again, its own identity.
    run_to_end(&mut conn, run("run-idle", "exec-idle-2")).await;
    assert_eq!(
        h.sandbox_identity(&w, "exec-idle-2"),
        h.sandbox_identity(&w, "exec-idle-1"),
        "the follow-up ran in the kept sandbox"
    );
    assert_eq!(
        std::fs::read_to_string(h.workspace_file(&w, "exec-idle-1", "setup-count")).unwrap(),
        "ran\n",
        "setup commands do not run again"
    );
    let env = agent_env(&w, "exec-idle-2");
    assert_eq!(env["HANGAR_EXECUTION_ID"], "exec-idle-2");
    assert_eq!(env["MY_SECRET"], "exec-idle-2", "a fresh environment");
    h.assert_reused(&w, "exec-idle-1", "exec-idle-2");

    // Another run gets a sandbox of its own.
    run_to_end(&mut conn, run("run-other", "exec-idle-3")).await;
    assert_ne!(
        h.sandbox_identity(&w, "exec-idle-3"),
        h.sandbox_identity(&w, "exec-idle-1")
    );

    // Nothing follows: both are cleaned up once idle for 3 s.
    wait_for_removal(&h.sandbox_dir(&w, "exec-idle-1")).await;
    wait_for_removal(&h.sandbox_dir(&w, "exec-idle-3")).await;
    h.assert_nothing_left(&w, "exec-idle-1").await;
    h.assert_nothing_left(&w, "exec-idle-3").await;
}

/// After a task the worker removes its sandbox, and only its own (another
/// directory in the workspace root survives the task and the worker's
/// shutdown); with cleanup off the sandbox is kept.
async fn cleanup<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let mut w = start(h, &server, "cleanup", |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    let foreign = w.workspace_root.join("someone-else");
    std::fs::create_dir_all(&foreign).unwrap();
    conn.assign(w.assignment("run-w", "exec-w", &[]));
    let done = conn.recv_end().await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    h.assert_private(&w, "exec-w");
    h.assert_nothing_left(&w, "exec-w").await;
    assert!(foreign.exists());
    w.shutdown.cancel();
    w.join().await.unwrap();
    assert!(foreign.exists(), "shutdown removed a foreign workspace");

    let w = start(h, &server, "no-cleanup", |c| c.cleanup = false);
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-n", "exec-n", &[]));
    let done = conn.recv_end().await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
    h.assert_kept(&w, "exec-n");
}

/// D2: a worker killed with tasks running leaves them running; a new
/// worker with the same id announces them, reports the one that ended
/// meanwhile with its real exit code, waits on the other, and cleans up both.
async fn d2_reattach<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let mut w = start(h, &server, "d2", |_| {});
    let mut conn = server.accept().await;
    conn.hello().await;
    let gate_run = w.gate("d2-running");
    let gate_done = w.gate("d2-done");
    conn.assign(w.assignment("run-a", "exec-a", &[("GATE", gate_run.to_str().unwrap())]));
    conn.assign(w.assignment(
        "run-b",
        "exec-b",
        &[("GATE", gate_done.to_str().unwrap()), ("EXIT_CODE", "4")],
    ));
    // Both launched (the worker reported them started), and both agents ready.
    let mut started = Vec::new();
    while started.len() < 2 {
        if let WorkerToServer::TaskStarted(s) = conn
            .recv_until(|m| matches!(m, WorkerToServer::TaskStarted(_)))
            .await
        {
            started.push(s.execution_id);
        }
    }
    wait_for_file(&w.out_file("exec-a", "ready")).await;
    wait_for_file(&w.out_file("exec-b", "ready")).await;

    // "kill -9": the worker's future is dropped; nothing is cleaned up.
    w.handle.take().unwrap().abort();
    conn.drop_connection();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.assert_running(&w, "exec-a");
    h.assert_running(&w, "exec-b");
    // exec-b ends while no worker is there.
    w.open_gate(&gate_done);
    h.wait_ended(&w, "exec-b").await;

    // A new worker with the same id and directories.
    let (shutdown, hard) = (
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let mut config = test_config(&server.url, w.dir.path());
    config.direct.workspace_root = Some(w.workspace_root.clone());
    h.configure(&mut config, "d2");
    let handle = tokio::spawn(
        hangar_worker::Worker::new(config)
            .unwrap()
            .run(shutdown.clone(), hard.clone()),
    );
    // The aborted worker's connection task may still reconnect (empty hello): skip it.
    let (mut conn2, hello) = loop {
        let mut c = server.accept().await;
        let h = c.hello().await;
        if !h.running.is_empty() {
            break (c, h);
        }
    };
    let mut running: Vec<String> = hello
        .running
        .iter()
        .map(|r| r.execution_id.clone())
        .collect();
    running.sort();
    assert_eq!(running, ["exec-a", "exec-b"], "both reported for reattach");

    // The ended one is reported with its real exit code and removed.
    let b = conn2
        .recv_until(|m| matches!(m, WorkerToServer::TaskFailed(f) if f.task_id == "run-b"))
        .await;
    let WorkerToServer::TaskFailed(f) = b else {
        unreachable!()
    };
    assert_eq!(f.execution_id.as_deref(), Some("exec-b"));
    if H::KNOWS_EXIT_CODE {
        assert_eq!(f.exit_code, Some(4));
        assert!(f.message.contains('4'), "{}", f.message);
    }
    h.assert_nothing_left(&w, "exec-b").await;

    // The running one is waited on again and finishes normally.
    w.open_gate(&gate_run);
    let a = conn2
        .recv_until(|m| matches!(m, WorkerToServer::TaskCompleted(c) if c.task_id == "run-a"))
        .await;
    assert!(matches!(
        a,
        WorkerToServer::TaskCompleted(TaskCompleted {
            task_state: None,
            ..
        })
    ));
    h.assert_nothing_left(&w, "exec-a").await;
    shutdown.cancel();
    hard.cancel();
    let _ = tokio::time::timeout(WAIT, handle).await;
}

/// S3, memory: a memory hog is OOM-killed inside its limit and reported
/// as `container_oom`; the worker stays responsive and nothing is left.
async fn s3_memory_contained<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let w = start(h, &server, "s3-mem", |c| {
        h.limit(c, 64, 64);
        c.kill_grace = Duration::from_millis(300);
    });
    let mut conn = server.accept().await;
    conn.hello().await;
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
    h.assert_oom_message(&f.message);
    h.assert_nothing_left(&w, "exec-mem").await;
    // Still responsive: the next task runs.
    conn.assign(w.assignment("run-after", "exec-after", &[]));
    let done = conn.recv_end().await;
    assert!(matches!(done, WorkerToServer::TaskCompleted(_)), "{done:?}");
}

/// S3, processes: a fork bomb stops at the process limit, the host and the
/// worker stay responsive (it handles a cancel), and nothing is left.
async fn s3_processes_contained<H: Harness>(h: &H) {
    let mut server = FakeServer::start().await;
    let w = start(h, &server, "s3-fork", |c| {
        h.limit(c, 64, 64);
        c.kill_grace = Duration::from_millis(300);
    });
    let mut conn = server.accept().await;
    conn.hello().await;
    conn.assign(w.assignment("run-fork", "exec-fork", &[("MODE", "fork_bomb")]));
    wait_for_file(&w.out_file("exec-fork", "ready")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pids = h
        .pids_current(&w, "exec-fork")
        .expect("pids cgroup of the execution");
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
    h.assert_nothing_left(&w, "exec-fork").await;
}
