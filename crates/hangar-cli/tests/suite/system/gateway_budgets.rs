//! Gateway budgets end a real run on a real worker (issue 11, item 7).

use crate::suite::common::{hangar_bin, processes_under};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::time::Duration;

/// The first model call of the run already uses more than
/// `max_tokens_per_run` (its prompt alone does): the server ends the run
/// `FAILED` with a status message naming the limit, the worker stops the
/// task (the long tool the model asked for leaves no process), and the
/// agent makes no further model call.
#[tokio::test(flavor = "multi_thread")]
async fn gateway_run_over_max_tokens_is_stopped_on_its_worker() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "sleep 300 & sleep 301; echo never", "timeout_ms": 600000}),
        ),
        Turn::text("never asked"),
    ])
    .await;
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options
        .extra_config
        .push_str("llm_gateway:\n  max_tokens_per_run: 100\n");
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    let worker = cluster
        .start_worker("b1", &["--kill-grace", "2s"])
        .await
        .unwrap();
    let ws_root = worker.workspace_root.clone();
    let client = cluster.client();
    let created = client
        .create_run(&RunAgentRequest {
            prompt: Some("spend a lot".into()),
            config: Some(AgentConfig {
                worker_host: Some("b1".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Failed, "{:?}", run.status_message);
    let status = run.status_message.expect("a status message");
    assert!(
        status.message.starts_with("stopped: the run used ")
            && status
                .message
                .ends_with(" tokens, over the limit max_tokens_per_run = 100"),
        "{}",
        status.message
    );
    assert_eq!(
        serde_json::to_value(status.error_code).unwrap(),
        json!("budget_exceeded")
    );
    let left = processes_under(&ws_root);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert_eq!(llm.requests().len(), 1, "no model call after the budget");
}
