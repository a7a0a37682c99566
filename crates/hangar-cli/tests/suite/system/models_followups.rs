//! Models listing, follow-ups to a running agent, and metered cost.

use crate::suite::common::hangar_bin;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn models_followups_and_cost() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "sleep 2; echo slept"})),
        Turn::text("done, and I read the follow-up"),
    ])
    .await;
    let options = ClusterOptions {
        extra_config: format!(
            "providers:\n  fake:\n    kind: openai\n    base_url: {}\n    api_key: k\n    default_model: test-model\n    models: [test-model, other-model]\n    prices:\n      test-model: {{input_per_mtok: 1000000, output_per_mtok: 1000000}}\n",
            llm.base_url()
        ),
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();
    cluster.start_worker("fw", &[]).await.unwrap();
    let client = cluster.client();

    let models: serde_json::Value = client.get_json("api/v1/agent/models").await.unwrap();
    assert_eq!(models["default_model_id"], "fake/test-model");
    let ids: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["fake/test-model", "fake/other-model"]);

    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("work slowly".into()),
            config: Some(AgentConfig {
                worker_host: Some("fw".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    // Deliver a follow-up as soon as the agent is connected.
    let path = format!("api/v1/agent/runs/{}/followups", run.run_id);
    // Retried every 20 ms: a 409 means the agent is not connected yet.
    hangar_testkit::poll::within(
        "the agent to connect and take the follow-up",
        Duration::from_secs(30),
        Duration::from_millis(20),
        async || match client
            .post_json::<_, serde_json::Value>(&path, &json!({"message": "also check the README"}))
            .await
        {
            Ok(v) => {
                assert_eq!(v["delivered"], true);
                Ok(())
            }
            Err(e) if e.status() == Some(409) => Err(e),
            Err(e) => panic!("follow-up failed: {e}"),
        },
    )
    .await
    .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let second = &llm.requests()[1];
    assert!(
        second.to_string().contains("also check the README"),
        "follow-up not in the next model call: {second}"
    );
    let cost = done.request_usage.unwrap().inference_cost.unwrap();
    assert!(cost > 0.0, "cost from the price table: {cost}");

    // Bad bodies are refused clearly (follow-ups on ended runs start a new
    // execution: system/followups_ended.rs).
    let err = client
        .post_json::<_, serde_json::Value>(&path, &json!({"msg": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
}
