//! Environments and secrets: validation, encryption at rest, and injection into tasks.

use crate::suite::common::cluster_with;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn environment_variables_and_secrets_reach_the_task_and_secrets_never_leave_the_server() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo foo=$FOO; echo len=${#API_TOKEN}"}),
        ),
        Turn::text("checked"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("envw", &[]).await.unwrap();
    let client = cluster.client();
    let secret_value = "supersecret-value-123";

    let created: serde_json::Value = client
        .post_json(
            "api/v1/secrets",
            &json!({"name": "API_TOKEN", "value": secret_value}),
        )
        .await
        .unwrap();
    assert_eq!(created["name"], "API_TOKEN");
    assert!(
        created.get("value").is_none(),
        "values are write-only: {created}"
    );
    let list: serde_json::Value = client.get_json("api/v1/secrets").await.unwrap();
    assert!(!list.to_string().contains(secret_value));
    // Duplicate name: 409.
    let dup = client
        .post_json::<_, serde_json::Value>(
            "api/v1/secrets",
            &json!({"name": "API_TOKEN", "value": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(409), "{dup}");

    // Referencing a secret that does not exist is refused.
    let err = client
        .post_json::<_, serde_json::Value>(
            "api/v1/environments",
            &json!({"name": "dev", "secrets": ["NOPE"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("NOPE"), "{err}");

    let env: serde_json::Value = client
        .post_json(
            "api/v1/environments",
            &json!({"name": "dev", "env": {"FOO": "bar"}, "secrets": ["API_TOKEN"], "docker_image": "debian:bookworm"}),
        )
        .await
        .unwrap();
    let env_id = env["id"].as_str().unwrap().to_owned();
    let oz: serde_json::Value = client.get_json("api/v1/agent/environments").await.unwrap();
    assert_eq!(oz["environments"][0]["uid"], env_id.as_str());
    assert_eq!(oz["environments"][0]["config"]["name"], "dev");

    // A run naming the environment by name gets its variables and secrets.
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("check env".into()),
            config: Some(AgentConfig {
                worker_host: Some("envw".into()),
                environment_id: Some("dev".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    assert_eq!(
        done.agent_config.unwrap().environment_id.as_deref(),
        Some(env_id.as_str()),
        "name resolved to id"
    );
    let tool_output = llm.requests()[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(tool_output.contains("foo=bar"), "{tool_output}");
    assert!(
        tool_output.contains(&format!("len={}", secret_value.len())),
        "{tool_output}"
    );

    // Unknown environment: 400 naming it.
    let err = client
        .create_run(&RunAgentRequest {
            prompt: Some("x".into()),
            config: Some(AgentConfig {
                environment_id: Some("missing".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("missing"), "{err}");

    // C3: the database file holds no secret or key in clear.
    let db = std::fs::read(cluster.dir().join("data").join("hangar.db")).unwrap();
    let wal = std::fs::read(cluster.dir().join("data").join("hangar.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes
                .windows(secret_value.len())
                .any(|w| w == secret_value.as_bytes()),
            "secret in clear"
        );
        assert!(
            !bytes
                .windows(cluster.api_key.len())
                .any(|w| w == cluster.api_key.as_bytes()),
            "API key in clear"
        );
    }

    // Delete: environment then secret; a second delete is a 404.
    let del: serde_json::Value = client
        .send_delete(&format!("api/v1/environments/{env_id}"))
        .await
        .unwrap();
    assert_eq!(del["deleted"], true);
    let again = client
        .send_delete::<serde_json::Value>(&format!("api/v1/environments/{env_id}"))
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(404));
    client
        .send_delete::<serde_json::Value>("api/v1/secrets/API_TOKEN")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_and_secret_input_is_validated() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let cases = [
        (
            "api/v1/secrets",
            json!({"name": "1BAD", "value": "x"}),
            "invalid",
        ),
        (
            "api/v1/secrets",
            json!({"name": "HANGAR_RUN_TOKEN", "value": "x"}),
            "reserved",
        ),
        (
            "api/v1/secrets",
            json!({"name": "OK", "value": ""}),
            "empty",
        ),
        ("api/v1/environments", json!({"name": ""}), "invalid"),
        ("api/v1/environments", json!({"name": "a b"}), "invalid"),
        (
            "api/v1/environments",
            json!({"name": "x", "env": {"HANGAR_X": "1"}}),
            "reserved",
        ),
        (
            "api/v1/environments",
            json!({"name": "x", "repos": [{"url": "https://h/r", "path": "../up"}]}),
            "inside the workspace",
        ),
        (
            "api/v1/environments",
            json!({"name": "x", "network_policy": {"mode": "allowlist", "hosts": []}}),
            "at least one host",
        ),
        (
            "api/v1/environments",
            json!({"name": "x", "network_policy": {"mode": "sometimes"}}),
            "sometimes",
        ),
        (
            "api/v1/environments",
            json!({"name": "x", "colour": 1}),
            "colour",
        ),
    ];
    for (path, body, needle) in cases {
        let err = client
            .post_json::<_, serde_json::Value>(path, &body)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{path} {body}: {err}");
        assert!(err.to_string().contains(needle), "{path} {body}: {err}");
    }
}
