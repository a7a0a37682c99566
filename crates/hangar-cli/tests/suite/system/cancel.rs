//! Cancelling a running run stops every process of its task.

use crate::suite::common::{cluster_with, processes_under};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_running_run_leaves_no_process_and_ends_cancelled() {
    let llm = FakeLlm::start(vec![Turn::tool_call(
        "shell",
        json!({"command": "sleep 300 & sleep 301; echo never", "timeout_ms": 600000}),
    )])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let worker = cluster
        .start_worker("c1", &["--kill-grace", "2s"])
        .await
        .unwrap();
    let ws_root = worker.workspace_root.clone();
    let client = cluster.client();
    let created = client
        .create_run(&RunAgentRequest {
            prompt: Some("sleep a long time".into()),
            config: Some(AgentConfig {
                worker_host: Some("c1".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();

    // Wait until the tool's processes are really running in the workspace.
    hangar_testkit::poll::until_ok("the tool to start", Duration::from_secs(30), || {
        let procs = processes_under(&ws_root);
        let sleeping = procs
            .iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep 30"))
            .count();
        if sleeping == 2 { Ok(()) } else { Err(procs) }
    })
    .await;
    assert_eq!(
        client.get_run(&created.run_id).await.unwrap().state,
        RunState::InProgress
    );

    let cancelled = client.cancel_run(&created.run_id).await.unwrap();
    assert_eq!(cancelled, created.run_id);
    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    let left = processes_under(&ws_root);
    assert!(left.is_empty(), "processes left behind: {left:?}");

    // A second cancel is refused: the run is terminal.
    let err = client.cancel_run(&created.run_id).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_queued_run_is_immediate() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let created = client
        .create_run(&RunAgentRequest {
            prompt: Some("never runs".into()),
            config: Some(AgentConfig {
                worker_host: Some("nobody".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    client.cancel_run(&created.run_id).await.unwrap();
    let run = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(run.state, RunState::Cancelled);
    assert_eq!(run.is_sandbox_running, Some(false));
}
