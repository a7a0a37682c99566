//! The docker backend with real processes: a run created through REST on a
//! real `hangar server` reaches a real `hangar worker --backend docker`, whose
//! task container (from the locally built Debian minbase image, no git) runs
//! the real `hangar` binary materialised at `/agent`; the agent talks to the
//! server, which talks to the fake model.
//!
//! The server listens on 127.0.0.1, so the worker's config file puts task
//! containers on the host network (`network: host`, an explicit relaxation)
//! and sets `agent_server_url`. Nothing is pulled; these tests fail, never
//! skip, when Docker is unreachable. Grouped with the docker tests in
//! `.config/nextest.toml`.

use crate::suite::common::cluster_with;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::TestCluster;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) async fn base_image() -> String {
    tokio::task::spawn_blocking(hangar_testkit::images::base_image)
        .await
        .unwrap()
        .expect("cannot build the Debian base image (is Docker running?)")
}

/// Containers labelled with this worker id (any state).
pub(crate) fn containers_of(worker: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.hangar.worker={worker}"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Removes leftovers if a test failed half-way (the leak assertions run first).
pub(crate) struct Sweep(pub(crate) String);
impl Drop for Sweep {
    fn drop(&mut self) {
        for id in containers_of(&self.0) {
            let _ = Command::new("docker").args(["rm", "-fv", &id]).output();
        }
    }
}

/// Writes the worker's config file: docker backend, local image, host network.
pub(crate) fn worker_config(cluster: &TestCluster, image: &str) -> PathBuf {
    let path = cluster.dir().join("worker-docker.yaml");
    std::fs::write(
        &path,
        format!(
            "backend:\n  docker:\n    default_image: {image}\n    image_pull_policy: never\n    \
             network: host\n    agent_server_url: {url}\n    memory_mb: 1024\n    cpus: 1\n",
            url = cluster.url
        ),
    )
    .unwrap();
    path
}

async fn start_docker_worker(cluster: &mut TestCluster, id: &str, image: &str) -> PathBuf {
    let config = worker_config(cluster, image);
    let w = cluster
        .start_worker_with(id, "docker", &["--config-file", config.to_str().unwrap()])
        .await
        .unwrap();
    w.workspace_root.clone()
}

/// The output of the first tool call the model saw in request `n`.
fn tool_output(llm: &FakeLlm, n: usize) -> String {
    let requests = llm.requests();
    let messages = requests[n]["messages"].as_array().unwrap();
    messages
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool message in request {n}: {messages:?}"))["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_no_containers(worker: &str, root: &Path) {
    hangar_testkit::poll::until_ok("nothing left behind", Duration::from_secs(30), || {
        let left = containers_of(worker);
        let dirs: Vec<_> = std::fs::read_dir(root)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() && dirs.is_empty() {
            Ok(())
        } else {
            Err(format!("containers {left:?}, workspaces {dirs:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_real_agent_run_succeeds_in_unmodified_debian_image() {
    let image = base_image().await;
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo pwd=$(pwd); test -x /agent/hangar && echo agent=yes; \
                   command -v git >/dev/null || echo git=none; \
                   echo init=$(tr '\\0' ' ' < /proc/1/cmdline); echo debian=$(cat /etc/debian_version)"}),
        ),
        Turn::text("done in a container"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let worker = "dsys-run";
    let _sweep = Sweep(worker.into());
    let root = start_docker_worker(&mut cluster, worker, &image).await;
    let client = cluster.client();

    let started = Instant::now();
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("inspect the sandbox".into()),
            config: Some(AgentConfig {
                worker_host: Some(worker.into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, RUN_TIMEOUT)
        .await
        .unwrap();
    eprintln!(
        "docker system run: created → finished in {:?}",
        started.elapsed()
    );
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let out = tool_output(&llm, 1);
    // The shell ran inside the container: /workspace, the agent at /agent,
    // Docker's init as PID 1, an image without git.
    assert!(out.contains("pwd=/workspace"), "{out}");
    assert!(out.contains("agent=yes"), "{out}");
    assert!(out.contains("git=none"), "{out}");
    assert!(out.contains("init=/sbin/docker-init"), "{out}");
    assert!(out.contains("debian=12"), "{out}");
    assert_eq!(llm.remaining(), 0);
    wait_no_containers(worker, &root).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_environment_clone_and_setup_through_the_api() {
    let image = base_image().await;
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = hangar_testkit::git::one_commit_repo(repo_dir.path(), "hello-from-the-repo\n");

    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "cat /workspace/setup.txt; cat /workspace/src/README.md; echo FOO=$FOO"}),
        ),
        Turn::text("environment checked"),
    ])
    .await;
    // Local repositories are for tests: both the server and the worker allow them.
    let mut cluster = TestCluster::start(
        &crate::suite::common::hangar_bin(),
        hangar_testkit::cluster::ClusterOptions {
            extra_config: "allow_local_repositories: true\n".into(),
            ..Default::default()
        }
        .with_fake_llm(&llm.base_url()),
    )
    .await
    .unwrap();
    let worker = "dsys-env";
    let _sweep = Sweep(worker.into());
    let config = worker_config(&cluster, &image);
    let root = cluster
        .start_worker_with(
            worker,
            "docker",
            &[
                "--config-file",
                config.to_str().unwrap(),
                "--allow-local-repositories",
            ],
        )
        .await
        .unwrap()
        .workspace_root
        .clone();
    let client = cluster.client();

    let env: serde_json::Value = client
        .post_json(
            "api/v1/environments",
            &json!({
                "name": "docker-env",
                "docker_image": image,
                "env": {"FOO": "bar"},
                "repos": [{"url": format!("file://{}", repo.display()), "path": "src"}],
                "setup_commands": [
                    "echo setup-one > /workspace/setup.txt",
                    "test -f /workspace/src/README.md && echo setup-two-saw-clone >> /workspace/setup.txt",
                ],
            }),
        )
        .await
        .unwrap();
    let env_id = env["id"].as_str().unwrap().to_owned();
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("check the environment".into()),
            config: Some(AgentConfig {
                worker_host: Some(worker.into()),
                environment_id: Some(env_id.clone()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, RUN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let out = tool_output(&llm, 1);
    assert!(out.contains("setup-one\nsetup-two-saw-clone"), "{out}");
    assert!(out.contains("hello-from-the-repo"), "{out}");
    assert!(out.contains("FOO=bar"), "{out}");
    wait_no_containers(worker, &root).await;

    // A failing setup command ends the run FAILED; the agent never starts.
    let bad: serde_json::Value = client
        .post_json(
            "api/v1/environments",
            &json!({
                "name": "docker-bad-setup",
                "docker_image": image,
                "setup_commands": ["echo about-to-fail; exit 7"],
            }),
        )
        .await
        .unwrap();
    let requests_before = llm.requests().len();
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("never reaches the model".into()),
            config: Some(AgentConfig {
                worker_host: Some(worker.into()),
                environment_id: Some(bad["id"].as_str().unwrap().to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, RUN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Failed, "{:?}", done.status_message);
    let status = serde_json::to_string(&done.status_message).unwrap();
    assert!(status.contains("exit 7"), "{status}");
    assert_eq!(llm.requests().len(), requests_before, "the agent never ran");
    wait_no_containers(worker, &root).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_allowlist_environment_agent_reaches_the_server_through_the_relay() {
    let image = base_image().await;
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo proxy=$HTTPS_PROXY; echo hosts=$(grep -c . /etc/hosts)"}),
        ),
        Turn::text("allowlisted run done"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let worker = "dsys-allow";
    let _sweep = Sweep(worker.into());
    let root = start_docker_worker(&mut cluster, worker, &image).await;
    let client = cluster.client();
    let env: serde_json::Value = client
        .post_json(
            "api/v1/environments",
            &json!({
                "name": "docker-allowlist",
                "docker_image": image,
                "network_policy": {"mode": "allowlist", "hosts": ["allowed.test"]},
            }),
        )
        .await
        .unwrap();
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("talk through the relay".into()),
            config: Some(AgentConfig {
                worker_host: Some(worker.into()),
                environment_id: Some(env["id"].as_str().unwrap().to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, RUN_TIMEOUT)
        .await
        .unwrap();
    // The agent sits on an internal network: it reached the server (and so
    // the model) only through the worker's relay.
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let out = tool_output(&llm, 1);
    assert!(out.contains("proxy=http://"), "{out}");
    wait_no_containers(worker, &root).await;
}
