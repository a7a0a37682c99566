//! Follow-ups on ended runs: a new execution continues the conversation (the
//! model sees the earlier turns), the transcript holds both executions in
//! order; editors can also send follow-ups over the events WebSocket.

use crate::suite::common::{cluster_with, hangar_as};
use futures::{SinkExt, StreamExt};
use hangar_protocol::session::EventBody;
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn followup_on_a_finished_run_continues_the_conversation() {
    let llm = FakeLlm::start(vec![Turn::text("first answer: the bug is in parse()")]).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("w1", &[]).await.unwrap();
    let client = cluster.client();
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("find the bug".into()),
            config: Some(AgentConfig {
                worker_host: Some("w1".into()),
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

    // The CLI sends the follow-up; the ended run goes back to the queue.
    llm.push([Turn::text("second answer: tests added")]);
    let out = hangar_as(
        &cluster,
        &cluster.api_key,
        &[
            "run",
            "followup",
            &run.run_id,
            "-m",
            "now add a regression test",
            "--follow",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("new execution"), "{stdout}");
    assert!(stdout.contains("second answer"), "{stdout}");
    // Only what the follow-up produced is shown, not the earlier execution.
    assert!(!stdout.contains("find the bug"), "{stdout}");
    let done = cluster
        .wait_finished(&run.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);

    // The second model call carried the first conversation and the follow-up.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    let second = requests[1].to_string();
    for needle in [
        "find the bug",
        "first answer: the bug is in parse()",
        "now add a regression test",
    ] {
        assert!(second.contains(needle), "`{needle}` not in {second}");
    }
    let messages = requests[1]["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["system", "user", "assistant", "user"]);

    // The transcript holds both executions, in order.
    let t = client.transcript(&run.run_id).await.unwrap();
    let mut executions: Vec<&str> = Vec::new();
    for e in &t.events {
        if executions.last() != Some(&e.execution_id.as_str()) {
            executions.push(&e.execution_id);
        }
    }
    assert_eq!(executions.len(), 2, "{t:?}");
    let users: Vec<&str> = t
        .events
        .iter()
        .filter_map(|e| match &e.event.body {
            EventBody::UserMessage { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(users, vec!["find the bug", "now add a regression test"]);
    assert_eq!(t.followup.as_deref(), Some("now add a regression test"));

    // An editor on the WebSocket: same frames, and a follow-up is accepted.
    llm.push([Turn::text("third answer")]);
    let mut url = client
        .url(&format!("api/v1/agent/runs/{}/events/ws", run.run_id))
        .unwrap();
    url.set_query(Some("follow=false"));
    let mut ws = hangar_client::connect_websocket(&url, &cluster.api_key)
        .await
        .unwrap();
    let mut frames: Vec<Value> = Vec::new();
    while let Some(Ok(Message::Text(text))) = ws.next().await {
        let frame: Value = serde_json::from_str(&text).unwrap();
        let end = frame["event"] == "end";
        frames.push(frame);
        if end {
            break;
        }
    }
    let session_frames = frames.iter().filter(|f| f["event"] == "session").count();
    assert_eq!(session_frames, t.events.len());
    assert!(frames[0]["id"].as_str().unwrap().starts_with("1."));
    assert!(
        frames[session_frames - 1]["id"]
            .as_str()
            .unwrap()
            .starts_with("2.")
    );
    drop(ws);
    // After `end` the socket stays open for an editor's input.
    let mut url = client
        .url(&format!("api/v1/agent/runs/{}/events/ws", run.run_id))
        .unwrap();
    url.set_query(Some("after=2.1000"));
    let mut ws = hangar_client::connect_websocket(&url, &cluster.api_key)
        .await
        .unwrap();
    ws.send(Message::Text(r#"{"type":"steer"}"#.into()))
        .await
        .unwrap();
    ws.send(Message::Text(
        r#"{"type":"followup","message":"one more thing"}"#.into(),
    ))
    .await
    .unwrap();
    let mut replies = Vec::new();
    while replies.len() < 2 {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("socket closed before the replies: {replies:?}");
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if matches!(frame["event"].as_str(), Some("accepted" | "error")) {
            replies.push(frame);
        }
    }
    assert_eq!(replies[0]["event"], "error");
    assert_eq!(replies[0]["data"]["status"], 400);
    assert_eq!(replies[1]["event"], "accepted", "{replies:?}");
    assert_eq!(replies[1]["data"]["reopened"], true);
    // The same socket follows the third execution to its end.
    let mut end = None;
    let mut saw_third = false;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(text) = msg {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["event"] == "session" && frame["id"].as_str().unwrap().starts_with("3.") {
                saw_third = true;
            }
            if frame["event"] == "end" && saw_third {
                end = Some(frame);
                break;
            }
        }
    }
    let end = end.expect("no `end` on the editor's socket");
    assert_eq!(end["data"]["state"], "SUCCEEDED");
    assert_eq!(llm.requests().len(), 3);
    assert!(llm.requests()[2].to_string().contains("second answer"));

    // A follow-up while queued or with an empty message is refused clearly.
    let path = format!("api/v1/agent/runs/{}/followups", run.run_id);
    let err = client
        .post_json::<_, Value>(&path, &json!({"message": "  "}))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
}

/// `--idle-on-complete` end to end: the run ends, its workspace stays; a
/// follow-up's new execution lands on the same worker (affinity) and reuses
/// the sandbox, so what the first execution wrote is still there.
#[tokio::test(flavor = "multi_thread")]
async fn a_followup_reuses_the_idle_sandbox_of_the_ended_run() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call(
            "shell",
            json!({"command": "echo kept-between-executions > note.txt"}),
        ),
        Turn::text("wrote the note"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    cluster
        .start_worker("idle1", &["--idle-on-complete", "2m"])
        .await
        .unwrap();
    let client = cluster.client();
    // No host: any worker may take it, and only idle1 is connected yet.
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("write a note".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = cluster
        .wait_finished(&run.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    // A second, idle worker could take the follow-up too: affinity must win.
    cluster.start_worker("other", &[]).await.unwrap();

    llm.push([
        Turn::tool_call("shell", json!({"command": "cat note.txt"})),
        Turn::text("read the note"),
    ]);
    let _: Value = client
        .post_json(
            &format!("api/v1/agent/runs/{}/followups", run.run_id),
            &json!({"message": "read the note back"}),
        )
        .await
        .unwrap();
    // Wait for the second execution to end (the run is QUEUED again first).
    let t = hangar_testkit::poll::eventually_ok(
        "a second execution to end",
        Duration::from_secs(60),
        async || {
            let t = client.transcript(&run.run_id).await.unwrap();
            let ended = t
                .events
                .iter()
                .filter(|e| matches!(e.event.body, EventBody::Status { .. }))
                .count();
            if ended >= 2 { Ok(t) } else { Err(t) }
        },
    )
    .await;
    let outputs: Vec<&str> = t
        .events
        .iter()
        .filter_map(|e| match &e.event.body {
            EventBody::ToolResult { output, .. } => Some(output.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), 2, "{t:?}");
    assert!(
        outputs[1].contains("kept-between-executions"),
        "the follow-up did not run in the idle sandbox: {outputs:?}"
    );
    let done = client.get_run(&run.run_id).await.unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
}
