//! Issue 17: the stock `oz-agent-worker` executes Hangar runs. A worker of
//! `hangar-testkit` speaks its protocol frame for frame and runs the real
//! `hangar agent run` with the stock command line, as its direct backend
//! (and, in `docker_`, as its Docker backend with the agent sidecar image).

use crate::suite::common::hangar_bin;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use hangar_testkit::git::one_commit_repo;
use hangar_testkit::oz_worker::{Launch, OzWorker, OzWorkerConfig};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const FINISH: Duration = Duration::from_secs(60);

/// A cluster whose server allows local repositories (for the environment
/// tests) and uses `llm`, plus `extra` server config.
async fn cluster(llm: &FakeLlm, extra: &str) -> TestCluster {
    TestCluster::start(
        &hangar_bin(),
        ClusterOptions {
            extra_config: format!("allow_local_repositories: true\n{extra}"),
            ..Default::default()
        }
        .with_fake_llm(&llm.base_url()),
    )
    .await
    .expect("start cluster")
}

/// A stock worker `id` on `cluster`, with a worker token bound to its id.
async fn stock_worker(cluster: &mut TestCluster, id: &str, launch: Launch) -> OzWorker {
    let token = cluster.worker_token(id).await.unwrap();
    let web_socket_url = format!(
        "{}/api/v1/selfhosted/worker/ws",
        cluster.url.replacen("http", "ws", 1)
    );
    let worker = OzWorker::start(OzWorkerConfig {
        web_socket_url,
        server_root_url: cluster.url.clone(),
        worker_id: id.to_owned(),
        api_key: token,
        launch,
    })
    .await
    .unwrap();
    cluster.wait_worker(id, true).await.unwrap();
    worker
}

fn direct(root: &Path) -> Launch {
    Launch::Direct {
        oz_path: hangar_bin(),
        workspace_root: root.to_owned(),
    }
}

async fn run_on(cluster: &TestCluster, host: &str, prompt: &str, config: AgentConfig) -> String {
    cluster
        .client()
        .create_run(&RunAgentRequest {
            prompt: Some(prompt.into()),
            config: Some(AgentConfig {
                worker_host: Some(host.into()),
                ..config
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .run_id
}

/// The content of every tool result the model was sent, joined.
fn tool_outputs(llm: &FakeLlm) -> String {
    llm.requests()
        .iter()
        .flat_map(|r| r["messages"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Creates secret `API_TOKEN` = `secret` and an environment `name` with
/// `repo`, `setup`, `FOO=bar` and the secret; answers its id.
async fn environment(
    cluster: &TestCluster,
    name: &str,
    repo: &Path,
    setup: &str,
    secret: &str,
) -> String {
    let client = cluster.client();
    let _: Value = client
        .post_json(
            "api/v1/secrets",
            &json!({"name": "API_TOKEN", "value": secret}),
        )
        .await
        .unwrap();
    let env: Value = client
        .post_json(
            "api/v1/environments",
            &json!({"name": name, "repos": [{"url": repo.to_str().unwrap()}],
                "setup_commands": [setup], "env": {"FOO": "bar"}, "secrets": ["API_TOKEN"]}),
        )
        .await
        .unwrap();
    env["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn oz_stock_worker_runs_the_real_agent_with_the_stock_command_line() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo ran-in-$(basename $PWD) > proof.txt; echo task=$TASK_ID"}),
        ),
        Turn::text("done"),
    ])
    .await;
    let mut cluster = cluster(&llm, "").await;
    let root = tempfile::tempdir().unwrap();
    let worker = stock_worker(&mut cluster, "oz-box", direct(root.path())).await;

    let config = AgentConfig {
        computer_use_enabled: Some(true),
        ..Default::default()
    };
    let run_id = run_on(&cluster, "oz-box", "write the proof", config).await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    // The agent's check-in moved it to INPROGRESS (the stock worker never says so).
    assert!(done.started_at.is_some(), "never INPROGRESS: {done:?}");
    // The shell tool really ran, in <workspace_root>/<task_id>.
    let proof = std::fs::read_to_string(root.path().join(&run_id).join("proof.txt")).unwrap();
    assert_eq!(proof.trim(), format!("ran-in-{run_id}"));
    assert!(tool_outputs(&llm).contains(&format!("task={run_id}")));

    // The exact stock argv, the flags Hangar lacks included.
    let argv = worker.argv().remove(0);
    let expected: Vec<String> = [
        "agent",
        "run",
        "--share",
        "team:edit",
        "--task-id",
        &run_id,
        "--sandboxed",
        "--server-root-url",
        &cluster.url,
        "--model",
        "fake/test-model",
        "--computer-use",
        "--idle-on-complete",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(argv, expected);
    // Stock frames: no hello, no execution_id in any report; claimed, then completed.
    let out: Vec<Value> = worker
        .frames()
        .into_iter()
        .filter(|f| f["dir"] == "out")
        .map(|f| f["frame"].clone())
        .collect();
    let kinds: Vec<&str> = out.iter().filter_map(|f| f["type"].as_str()).collect();
    assert_eq!(kinds, ["task_claimed", "task_completed"]);
    assert!(out.iter().all(|f| f["data"].get("execution_id").is_none()));
    // A stock worker gets the agent sidecar (Hangar's default image).
    let assignment = worker.assignments().remove(0);
    assert_eq!(
        assignment["sidecar_image"],
        hangar_server::config::DEFAULT_SIDECAR_IMAGE
    );
    // What the agent could not honour is recorded on the run, once.
    let transcript: Value = cluster
        .client()
        .get_json(&format!("api/v1/agent/runs/{run_id}/transcript"))
        .await
        .unwrap();
    let notes: Vec<&str> = transcript["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "status" && e["state"].is_null())
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?} in {transcript}");
    assert!(notes[0].contains("--computer-use"), "{}", notes[0]);
    assert!(notes[0].contains("--share team:edit"), "{}", notes[0]);
    assert_eq!(llm.remaining(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oz_stock_worker_runs_with_an_environment_the_agent_prepares() {
    let secret = "s3cr3t-env-value-4711";
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "cat app/README.md; cat setup.txt; echo FOO=$FOO; echo len=${#API_TOKEN}"}),
        ),
        Turn::text("environment checked"),
    ])
    .await;
    let mut cluster = cluster(&llm, "").await;
    let repos = tempfile::tempdir().unwrap();
    let repo = one_commit_repo(repos.path(), "hello-from-the-repo\n");
    let env_id = environment(
        &cluster,
        "oz-env",
        &repo,
        "echo setup-ran-with-$FOO >> setup.txt; test -d app",
        secret,
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let worker = stock_worker(&mut cluster, "oz-env-box", direct(root.path())).await;

    let config = AgentConfig {
        environment_id: Some(env_id.clone()),
        ..Default::default()
    };
    let run_id = run_on(&cluster, "oz-env-box", "check the environment", config).await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let argv = worker.argv().remove(0);
    let at = argv.iter().position(|a| a == "--environment").unwrap();
    assert_eq!(argv[at + 1], env_id);
    let out = tool_outputs(&llm);
    assert!(out.contains("hello-from-the-repo"), "not cloned: {out}");
    // Setup ran once, with the environment's variable.
    assert_eq!(out.matches("setup-ran-with-bar").count(), 1, "{out}");
    assert!(out.contains("FOO=bar"), "{out}");
    assert!(out.contains(&format!("len={}", secret.len())), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oz_stock_worker_setup_failure_fails_the_run_as_setup_command_with_the_secret_masked() {
    let secret = "leaky-setup-secret-9931";
    let llm = FakeLlm::start(vec![]).await;
    let mut cluster = cluster(&llm, "").await;
    let repos = tempfile::tempdir().unwrap();
    let repo = one_commit_repo(repos.path(), "hello-from-the-repo\n");
    let env_id = environment(
        &cluster,
        "oz-bad-env",
        &repo,
        "echo \"the token is $API_TOKEN\"; exit 3",
        secret,
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let _worker = stock_worker(&mut cluster, "oz-bad-box", direct(root.path())).await;

    let config = AgentConfig {
        environment_id: Some(env_id),
        ..Default::default()
    };
    let run_id = run_on(&cluster, "oz-bad-box", "never starts", config).await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Failed, "{done:?}");
    let message = done
        .status_message
        .clone()
        .map(|m| m.message)
        .unwrap_or_default();
    assert!(message.contains("setup command"), "{message}");
    assert!(message.contains("the token is [REDACTED]"), "{message}");
    assert!(!message.contains(secret), "{message}");
    // The agent's reason, not the stock worker's generic agent_invocation.
    let details = crate::suite::common::ended(&cluster, &run_id).await;
    assert_eq!(details["failure_reason"], "setup_command", "{details}");
    assert!(!details.to_string().contains(secret));
    assert!(llm.requests().is_empty(), "the model was called");
}

#[tokio::test(flavor = "multi_thread")]
async fn oz_a_follow_up_on_a_stock_workers_run_reaches_its_agent() {
    let llm = FakeLlm::start(vec![
        Turn::text("first answer"),
        Turn::text("second answer"),
    ])
    .await;
    let mut cluster = cluster(&llm, "").await;
    let root = tempfile::tempdir().unwrap();
    let worker = stock_worker(&mut cluster, "oz-follow", direct(root.path())).await;
    let run_id = run_on(
        &cluster,
        "oz-follow",
        "say something",
        AgentConfig::default(),
    )
    .await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);

    let _: Value = cluster
        .client()
        .post_json(
            &format!("api/v1/agent/runs/{run_id}/followups"),
            &json!({"message": "now the follow-up text"}),
        )
        .await
        .unwrap();
    hangar_testkit::poll::until_ok("a second execution", FINISH, || {
        let (assignments, requests) = (worker.assignments().len(), llm.requests().len());
        if assignments >= 2 && requests >= 2 {
            Ok(())
        } else {
            Err(format!(
                "{assignments} assignments, {requests} model requests"
            ))
        }
    })
    .await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let second = &llm.requests()[1];
    let users: Vec<&str> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(users.last(), Some(&"now the follow-up text"), "{users:?}");
    // On the Oz wire too: the follow-up is the task's prompt, with the conversation.
    let reassigned = &worker.assignments()[1];
    assert_eq!(
        reassigned["task"]["task_definition"]["prompt"],
        "now the follow-up text"
    );
    assert_eq!(reassigned["task"]["agent_conversation_id"], run_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn oz_a_hangar_worker_prepares_the_environment_once() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "cat setup-count.txt"})),
        Turn::text("counted"),
    ])
    .await;
    let mut cluster = cluster(&llm, "").await;
    let repos = tempfile::tempdir().unwrap();
    let repo = one_commit_repo(repos.path(), "hello-from-the-repo\n");
    let env_id = environment(
        &cluster,
        "once",
        &repo,
        "echo setup-line >> setup-count.txt",
        "x-secret-1",
    )
    .await;
    cluster
        .start_worker("hangar-box", &["--allow-local-repositories"])
        .await
        .unwrap();
    let config = AgentConfig {
        environment_id: Some(env_id),
        ..Default::default()
    };
    let run_id = run_on(&cluster, "hangar-box", "count", config).await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    // The worker passed --environment too, and told the agent it prepared the sandbox.
    assert_eq!(tool_outputs(&llm).matches("setup-line").count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn oz_docker_stock_container_start_from_the_sidecar_succeeds() {
    let base = tokio::task::spawn_blocking(hangar_testkit::images::base_image)
        .await
        .unwrap()
        .unwrap();
    let sidecar =
        tokio::task::spawn_blocking(|| hangar_testkit::images::sidecar_image(&hangar_bin()))
            .await
            .unwrap()
            .unwrap();
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo in=$PWD; ls /agent; cat /etc/debian_version >/dev/null && echo debian"}),
        ),
        Turn::text("ran in a container"),
    ])
    .await;
    let mut cluster = cluster(&llm, &format!("sidecar_image: {sidecar}\n")).await;
    let worker = stock_worker(
        &mut cluster,
        "oz-docker",
        Launch::Docker {
            default_image: base,
        },
    )
    .await;
    let run_id = run_on(
        &cluster,
        "oz-docker",
        "run in docker",
        AgentConfig::default(),
    )
    .await;
    let done = cluster.wait_finished(&run_id, FINISH).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    assert_eq!(worker.assignments()[0]["sidecar_image"], sidecar.as_str());
    let out = tool_outputs(&llm);
    assert!(out.contains("in=/workspace"), "{out}");
    assert!(out.contains("entrypoint.sh"), "{out}");
    assert!(out.contains("debian"), "{out}");
}
