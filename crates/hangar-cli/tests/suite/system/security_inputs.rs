//! Issue 11 against real server, worker and agent processes (direct backend):
//! repository input validated at the API (S9), secrets printed by a setup
//! command or a tool masked in the status message, the transcript and the
//! worker's log (S10).

use crate::suite::common::cluster_with;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn s9_the_api_refuses_option_refs_dash_urls_local_and_internal_repositories() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let cases = [
        (
            json!({"url": "https://example.com/r.git", "ref": "--pathspec-from-file=/etc/hostname"}),
            "starts with `-`",
        ),
        (json!({"url": "--upload-pack=/bin/true"}), "starts with `-`"),
        (json!({"url": "-oProxyCommand=x:y"}), "starts with `-`"),
        (json!({"url": "file:///etc"}), "allow_local_repositories"),
        (json!({"url": "/srv/git/app"}), "allow_local_repositories"),
        (json!({"url": "ext::sh"}), "transport::address"),
        (json!({"url": "ftp://example.com/r"}), "scheme"),
        (
            json!({"url": "https://169.254.169.254/r"}),
            "cloud metadata",
        ),
        (json!({"url": "https://localhost/r"}), "loopback"),
        (json!({"url": "git@127.0.0.1:r"}), "loopback"),
        (json!({"url": "https://[fe80::1]/r"}), "link-local"),
    ];
    for (i, (repo, why)) in cases.into_iter().enumerate() {
        let err = client
            .post_json::<_, serde_json::Value>(
                "api/v1/environments",
                &json!({"name": format!("bad-{i}"), "repos": [repo.clone()]}),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{repo}: {err}");
        let text = err.to_string();
        assert!(text.contains("repos[0]"), "{repo}: {text}");
        assert!(text.contains(why), "{repo}: {text}");
    }
    let err = client
        .post_json::<_, serde_json::Value>(
            "api/v1/environments",
            &json!({"name": "bad-image", "docker_image": "--privileged"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    // Ordinary repositories still work.
    client
        .post_json::<_, serde_json::Value>(
            "api/v1/environments",
            &json!({"name": "good", "repos": [
                {"url": "https://github.com/a/b.git", "ref": "main"},
                {"url": "git@github.com:a/c.git", "path": "c"},
                {"url": "ssh://git@10.0.0.5:2222/a/d", "path": "d"},
            ]}),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn s10_a_secret_printed_by_a_setup_command_or_a_tool_is_masked_everywhere() {
    let secret = "leaky-secret-value-5c1e";
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo \"tool says $LEAKY\"; exit 1"}),
        ),
        Turn::text("done"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let log = cluster.start_worker("s10w", &[]).await.unwrap().log.clone();
    let client = cluster.client();
    client
        .post_json::<_, serde_json::Value>(
            "api/v1/secrets",
            &json!({"name": "LEAKY", "value": secret}),
        )
        .await
        .unwrap();
    for (name, setup) in [
        ("setup-leak", vec!["echo \"setup says $LEAKY\"; exit 1"]),
        ("tool-leak", vec![]),
    ] {
        client
            .post_json::<_, serde_json::Value>(
                "api/v1/environments",
                &json!({"name": name, "secrets": ["LEAKY"], "setup_commands": setup}),
            )
            .await
            .unwrap();
    }
    let run_in = |env: &str| RunAgentRequest {
        prompt: Some("print the secret".into()),
        config: Some(AgentConfig {
            worker_host: Some("s10w".into()),
            environment_id: Some(env.into()),
            ..Default::default()
        }),
        ..Default::default()
    };

    // A setup command that prints the secret and fails.
    let run = client.create_run(&run_in("setup-leak")).await.unwrap();
    let done = cluster.wait_finished(&run.run_id, TIMEOUT).await.unwrap();
    assert_eq!(done.state, RunState::Failed, "{:?}", done.status_message);
    let status = serde_json::to_string(&done).unwrap();
    assert!(!status.contains(secret), "run: {status}");

    // A tool that prints it (and fails).
    let run2 = client.create_run(&run_in("tool-leak")).await.unwrap();
    let done2 = cluster.wait_finished(&run2.run_id, TIMEOUT).await.unwrap();
    assert_eq!(
        done2.state,
        RunState::Succeeded,
        "{:?}",
        done2.status_message
    );
    let tool_output = llm.requests()[1].to_string();
    assert!(
        tool_output.contains("tool says"),
        "the tool ran: {tool_output}"
    );
    assert!(!tool_output.contains(secret), "model saw: {tool_output}");

    for id in [&run.run_id, &run2.run_id] {
        let transcript: serde_json::Value = client
            .get_json(&format!("api/v1/agent/runs/{id}/transcript"))
            .await
            .unwrap();
        assert!(!transcript.to_string().contains(secret), "{transcript}");
        let item: serde_json::Value = client
            .get_json(&format!("api/v1/agent/runs/{id}"))
            .await
            .unwrap();
        assert!(!item.to_string().contains(secret), "{item}");
    }
    // The worker logs task output at debug (on in tests): masked there too.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("setup says [REDACTED]"),
        "setup output is logged: {text}"
    );
    assert!(!text.contains(secret), "worker log: {text}");
    let server_log = std::fs::read_to_string(cluster.dir().join("server.log")).unwrap();
    assert!(!server_log.contains(secret), "server log");
}
