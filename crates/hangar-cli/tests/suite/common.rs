//! Shared helpers for the system tests.

use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::FakeLlm;
use std::path::{Path, PathBuf};

/// The binary under test.
pub fn hangar_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hangar"))
}

/// A cluster whose server uses `llm` as provider `fake` (default model `fake/test-model`).
pub async fn cluster_with(llm: &FakeLlm) -> TestCluster {
    TestCluster::start(
        &hangar_bin(),
        ClusterOptions::default().with_fake_llm(&llm.base_url()),
    )
    .await
    .expect("start cluster")
}

/// Runs `hangar ARGS` against `cluster` as `key`, with a clean environment
/// (no saved credentials or config of the machine running the tests).
pub async fn hangar_as(cluster: &TestCluster, key: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(hangar_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", cluster.dir())
        .env("XDG_CONFIG_HOME", cluster.dir().join("cli-config"))
        .env("HANGAR_SERVER_URL", &cluster.url)
        .env("HANGAR_API_KEY", key)
        .output()
        .await
        .expect("run hangar")
}

/// Processes whose working directory is inside `root` (the tasks of a worker).
pub fn processes_under(root: &Path) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) else {
            continue;
        };
        if cwd.starts_with(root) {
            let cmd = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmd));
        }
    }
    found
}

/// Entries of a directory (empty when it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The Python interpreter with `oz-agent-sdk` installed (scripts/test makes it).
pub fn test_python() -> String {
    match std::env::var("HANGAR_TEST_PYTHON") {
        Ok(p) if !p.trim().is_empty() => p,
        _ => panic!(
            "HANGAR_TEST_PYTHON is not set: this test drives the official Python SDK \
             (`oz-agent-sdk`). Run scripts/test, which creates a virtualenv with the SDK and \
             exports HANGAR_TEST_PYTHON, or point HANGAR_TEST_PYTHON at a python that has it."
        ),
    }
}

/// A `--sandbox-mount` value that shows `dir` read-write to sandboxed tasks
/// (which run as nobody under a root worker: the directory is made 0777).
pub fn shared_with_tasks(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    format!("{}:rw", dir.display())
}

/// Creates a run of `prompt` for worker `host`; answers its id.
pub async fn run_on(cluster: &TestCluster, host: &str, prompt: &str) -> String {
    cluster
        .client()
        .create_run(&hangar_protocol::RunAgentRequest {
            prompt: Some(prompt.into()),
            config: Some(hangar_protocol::AgentConfig {
                worker_host: Some(host.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .run_id
}

/// The run's details (JSON) once it is terminal and, unless it succeeded,
/// its worker reported the execution's end (`failure_reason`); at most a
/// minute.
pub async fn ended(cluster: &TestCluster, run_id: &str) -> serde_json::Value {
    // On timeout the last answer is returned all the same: the caller's
    // assertions on it say what is wrong.
    let mut last = serde_json::Value::Null;
    let limit = std::time::Duration::from_secs(60);
    let every = std::time::Duration::from_millis(100);
    let what = format!("run {run_id} to end");
    let done = hangar_testkit::poll::within(&what, limit, every, async || {
        let run: serde_json::Value = cluster
            .client()
            .get_json(&format!("api/v1/agent/runs/{run_id}"))
            .await
            .unwrap();
        let state = run["state"].as_str().unwrap_or_default().to_owned();
        let terminal = ["SUCCEEDED", "FAILED", "ERROR", "CANCELLED"].contains(&state.as_str());
        let reported =
            state == "SUCCEEDED" || state == "CANCELLED" || run["failure_reason"].is_string();
        if terminal && reported {
            return Ok(run);
        }
        last = run;
        Err(state)
    })
    .await;
    done.unwrap_or(last)
}
