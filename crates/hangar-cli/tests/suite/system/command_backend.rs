//! The command backend (issue 12): real runs through the example dispatcher
//! `examples/command-backend/hangar-dispatch.py`, which starts the real
//! `hangar agent run` as a detached process (local mode) or a container
//! (docker mode, in `docker_`).

use crate::suite::common::{cluster_with, ended, hangar_bin, run_on};
use hangar_protocol::RunState;
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::poll::{empty, until, until_ok};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const FINISH: Duration = Duration::from_secs(60);

fn dispatcher() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/command-backend/hangar-dispatch.py")
}

/// Writes a command-backend config for the example dispatcher in `mode`;
/// the cancel command first appends its external id to `cancelled` in the
/// cluster directory. Answers the config's path.
fn config(cluster: &TestCluster, id: &str, mode: &str) -> PathBuf {
    let script = dispatcher();
    let script = script.display();
    let root = cluster.dir().join(format!("dispatch-{id}"));
    let yaml = format!(
        "backend:\n  command:\n    dispatch_command: python3 {script} dispatch\n    \
         cancel_command: echo $HANGAR_EXTERNAL_ID >> {cancelled}; python3 {script} cancel\n    \
         status_command: python3 {script} status\n    \
         status_interval: 200ms\n    environment:\n      \
         - {{name: HANGAR_DISPATCH_MODE, value: {mode}}}\n      \
         - {{name: HANGAR_BIN, value: {bin}}}\n      \
         - {{name: HANGAR_DISPATCH_ROOT, value: {root}}}\n",
        bin = hangar_bin().display(),
        root = root.display(),
        cancelled = cluster.dir().join("cancelled").display(),
    );
    let path = cluster.dir().join(format!("command-{id}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn start(cluster: &mut TestCluster, id: &str, config: &Path) {
    cluster
        .start_worker_with(id, "command", &["--config-file", config.to_str().unwrap()])
        .await
        .unwrap();
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn command_backend_runs_a_run_end_to_end_through_the_example_dispatcher() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo worked-in-$PWD; echo run=$HANGAR_RUN_ID"}),
        ),
        Turn::text("done remotely"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let cfg = config(&cluster, "cmd-box", "local");
    start(&mut cluster, "cmd-box", &cfg).await;
    let run_id = run_on(&cluster, "cmd-box", "work remotely").await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let out = llm.requests()[1].to_string();
    assert!(out.contains(&format!("run={run_id}")), "{out}");
    assert!(out.contains("worked-in-"), "{out}");
    // The worker itself reports the execution's end once the run is over.
    let details = ended(&cluster, &run_id).await;
    assert_eq!(details["state"], "SUCCEEDED", "{details}");
    // The run token never was on a command line (ps shows them to everyone).
    let token_in_argv = processes_with("hr_");
    assert!(token_in_argv.is_empty(), "{token_in_argv:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn command_backend_cancel_runs_the_cancel_command_and_stops_the_task() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "sleep 300"})),
        Turn::text("never"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let cfg = config(&cluster, "cmd-cancel", "local");
    start(&mut cluster, "cmd-cancel", &cfg).await;
    let run_id = run_on(&cluster, "cmd-cancel", "sleep long").await;
    cluster
        .wait_run(&run_id, Duration::from_secs(30), |r| {
            r.state == RunState::InProgress
        })
        .await
        .unwrap();
    // The tool call is running remotely.
    until("the remote tool to start", FINISH, || {
        !processes_with("sleep 300").is_empty()
    })
    .await;
    cluster.client().cancel_run(&run_id).await.unwrap();
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Cancelled);
    // The worker ran cancel_command for the dispatched task (its external id: a pid).
    let cancelled = cluster.dir().join("cancelled");
    until("cancel_command to run", Duration::from_secs(20), || {
        cancelled.exists()
    })
    .await;
    let external = std::fs::read_to_string(&cancelled).unwrap();
    assert!(external.trim().parse::<u32>().is_ok(), "{external}");
    until_ok(
        "the remote task to end after its cancel",
        Duration::from_secs(20),
        || empty(processes_with("sleep 300")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn command_backend_dispatch_timeout_and_dispatch_failure_end_the_run_with_their_reasons() {
    let llm = FakeLlm::start(vec![]).await;
    let mut cluster = cluster_with(&llm).await;
    let slow = cluster.dir().join("slow.yaml");
    std::fs::write(
        &slow,
        "backend:\n  command:\n    dispatch_command: sleep 30\n    dispatch_timeout: 1s\n",
    )
    .unwrap();
    start(&mut cluster, "cmd-slow", &slow).await;
    let failing = cluster.dir().join("failing.yaml");
    std::fs::write(
        &failing,
        "backend:\n  command:\n    dispatch_command: \"cat >/dev/null; echo queue is full >&2; exit 4\"\n",
    )
    .unwrap();
    start(&mut cluster, "cmd-failing", &failing).await;

    let slow_run = run_on(&cluster, "cmd-slow", "never dispatched").await;
    let failing_run = run_on(&cluster, "cmd-failing", "never dispatched").await;
    let slow = ended(&cluster, &slow_run).await;
    assert_eq!(slow["failure_reason"], "dispatch_timeout", "{slow}");
    assert!(
        slow["status_message"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dispatch_timeout"),
        "{slow}"
    );
    let failing = ended(&cluster, &failing_run).await;
    assert_eq!(failing["failure_reason"], "dispatch_command", "{failing}");
    assert!(
        failing["status_message"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("queue is full"),
        "{failing}"
    );
    assert!(llm.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn command_backend_a_task_that_dies_without_a_word_ends_its_run() {
    let llm = FakeLlm::start(vec![]).await;
    let mut cluster = cluster_with(&llm).await;
    // Dispatches something that is not the agent and exits at once.
    let cfg = cluster.dir().join("mute.yaml");
    std::fs::write(
        &cfg,
        "backend:\n  command:\n    dispatch_command: \"cat >/dev/null; echo job-7\"\n    \
         status_command: \"exit 1\"\n    status_interval: 100ms\n",
    )
    .unwrap();
    start(&mut cluster, "cmd-mute", &cfg).await;
    let run_id = run_on(&cluster, "cmd-mute", "nobody runs this").await;
    let done = ended(&cluster, &run_id).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(done["failure_reason"], "agent_invocation", "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn command_backend_worker_refuses_a_config_without_dispatch_command() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let cfg = cluster.dir().join("empty.yaml");
    std::fs::write(&cfg, "backend:\n  command:\n    cancel_command: \"true\"\n").unwrap();
    let out = tokio::process::Command::new(hangar_bin())
        .args(["worker", "--worker-id", "x", "--server-url", &cluster.url])
        .args([
            "--backend",
            "command",
            "--config-file",
            cfg.to_str().unwrap(),
        ])
        .env("HANGAR_API_KEY", "hw_test")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dispatch_command"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn command_backend_a_restarted_worker_keeps_watching_its_dispatched_task() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "sleep 4; echo slept"})),
        Turn::text("finished after the worker came back"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let cfg = config(&cluster, "cmd-restart", "local");
    start(&mut cluster, "cmd-restart", &cfg).await;
    let run_id = run_on(&cluster, "cmd-restart", "outlive the worker").await;
    cluster
        .wait_run(&run_id, FINISH, |r| r.state == RunState::InProgress)
        .await
        .unwrap();
    // kill -9: the dispatched task runs on; its record stays in the state dir.
    cluster
        .worker("cmd-restart")
        .unwrap()
        .signal(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    start(&mut cluster, "cmd-restart", &cfg).await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    // The restarted worker reported the execution's end (it was not lost).
    let details = ended(&cluster, &run_id).await;
    assert_eq!(details["state"], "SUCCEEDED", "{details}");
    assert!(
        details.get("failure_reason").is_none_or(Value::is_null),
        "{details}"
    );
    let log = std::fs::read_to_string(&cluster.worker("cmd-restart").unwrap().log).unwrap();
    assert!(
        log.contains("picking up a dispatched task after a restart"),
        "{log}"
    );
}
