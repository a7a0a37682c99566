//! A run through REST, the dispatcher, a direct worker and the agent's loop.

use crate::suite::common::{cluster_with, dir_entries};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::time::Duration;

fn request(prompt: &str, host: &str) -> RunAgentRequest {
    RunAgentRequest {
        prompt: Some(prompt.to_owned()),
        config: Some(AgentConfig {
            worker_host: Some(host.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Polls a run until it is terminal, recording each distinct state seen.
async fn states_until_done(
    client: &hangar_client::Client,
    run_id: &str,
    mut seen: Vec<RunState>,
) -> Vec<RunState> {
    // Every 5 ms, so that short-lived states are seen too.
    hangar_testkit::poll::within(
        "the run to end",
        Duration::from_secs(60),
        Duration::from_millis(5),
        async || {
            let run = client.get_run(run_id).await.expect("get run");
            if seen.last() != Some(&run.state) {
                seen.push(run.state);
            }
            if run.state.is_terminal() && run.is_sandbox_running == Some(false) {
                Ok(())
            } else {
                Err(format!("states so far {seen:?}"))
            }
        },
    )
    .await
    .unwrap();
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn run_goes_through_every_state_and_the_shell_tool_really_runs() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo hello-from-tool > proof.txt && cat proof.txt && pwd"}),
        ),
        Turn::text("All done: wrote proof.txt."),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let client = cluster.client();

    // Created with no worker for its host: observably QUEUED.
    let created = client
        .create_run(&request("Write proof.txt", "w1"))
        .await
        .unwrap();
    assert_eq!(created.state, RunState::Queued);
    assert!(
        created.at_capacity,
        "no worker is connected, so the system is at capacity"
    );
    let before = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(before.state, RunState::Queued);
    assert_eq!(before.is_sandbox_running, Some(false));

    // A setup command keeps the run CLAIMED long enough to observe it.
    let cfg = cluster.dir().join("w1.yaml");
    std::fs::write(&cfg, "backend:\n  direct:\n    setup_command: sleep 0.5\n").unwrap();
    let cfg_arg = cfg.display().to_string();
    let worker = cluster
        .start_worker("w1", &["--config-file", &cfg_arg])
        .await
        .unwrap();
    let ws_root = worker.workspace_root.clone();

    let seen = states_until_done(&client, &created.run_id, vec![before.state]).await;
    assert_eq!(
        seen,
        vec![
            RunState::Queued,
            RunState::Claimed,
            RunState::InProgress,
            RunState::Succeeded
        ],
        "state sequence"
    );
    let run = client.get_run(&created.run_id).await.unwrap();
    assert_eq!(
        run.status_message.as_ref().map(|m| m.message.as_str()),
        Some("All done: wrote proof.txt.")
    );
    assert_eq!(
        run.agent_config
            .as_ref()
            .and_then(|c| c.model_id.as_deref()),
        Some("fake/test-model")
    );

    // The model received the tool's real output, produced inside the workspace.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "one request per turn");
    assert_eq!(
        requests[0]["model"], "test-model",
        "gateway strips the provider prefix"
    );
    let messages = requests[1]["messages"].as_array().unwrap();
    let tool_msg = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("tool result sent to the model");
    let output = tool_msg["content"].as_str().unwrap();
    assert!(output.contains("hello-from-tool"), "tool output: {output}");
    assert!(
        output.contains(ws_root.to_str().unwrap()),
        "ran inside the workspace: {output}"
    );
    assert!(llm.violations().is_empty(), "{:?}", llm.violations());

    // The stored transcript holds the model's and the tool's events in order.
    let transcript = client.transcript(&created.run_id).await.unwrap();
    let seqs: Vec<u64> = transcript.events.iter().map(|e| e.event.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let kinds: Vec<String> = transcript
        .events
        .iter()
        .map(|e| {
            serde_json::to_value(&e.event).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .filter(|k| k != "usage")
        .collect();
    assert_eq!(
        kinds,
        vec![
            "user_message",
            "tool_call",
            "tool_result",
            "assistant_message",
            "status"
        ],
        "transcript order"
    );
    let tool_result = transcript
        .events
        .iter()
        .map(|e| serde_json::to_value(&e.event).unwrap())
        .find(|v| v["kind"] == "tool_result")
        .unwrap();
    assert!(
        tool_result["output"]
            .as_str()
            .unwrap()
            .contains("hello-from-tool")
    );

    // The workspace is gone.
    assert!(
        dir_entries(&ws_root).is_empty(),
        "workspace left behind: {:?}",
        dir_entries(&ws_root)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cleanup_keeps_the_workspace() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "echo kept > kept.txt"})),
        Turn::text("ok"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    let worker = cluster
        .start_worker("keeper", &["--no-cleanup"])
        .await
        .unwrap();
    let ws_root = worker.workspace_root.clone();
    let client = cluster.client();
    let created = client
        .create_run(&request("keep it", "keeper"))
        .await
        .unwrap();
    let run = cluster
        .wait_finished(&created.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Succeeded, "{:?}", run.status_message);
    let kept: Vec<_> = dir_entries(&ws_root)
        .into_iter()
        .filter(|p| p.join("kept.txt").exists())
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "exactly one kept workspace with the file: {:?}",
        dir_entries(&ws_root)
    );
    assert_eq!(
        std::fs::read_to_string(kept[0].join("kept.txt"))
            .unwrap()
            .trim(),
        "kept"
    );
}
