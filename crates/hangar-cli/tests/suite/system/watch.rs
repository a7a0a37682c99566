//! The live session stream (`GET /agent/runs/{id}/events`, SSE) and
//! `hangar run watch`: a viewer connected before the agent sees events as they
//! are committed and gets `end`; a replay of the finished run is identical;
//! resuming after a `Last-Event-ID` has no gap and no duplicate (E1).

use crate::suite::common::{cluster_with, hangar_as};
use hangar_protocol::{AgentConfig, RunAgentRequest, RunState};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::{Value, json};
use std::time::Duration;

/// One SSE event as read off the wire.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    id: Option<String>,
    event: String,
    data: Value,
}

/// Parses a complete SSE body, the way `curl -N` shows it.
fn parse_sse(body: &str) -> Vec<Frame> {
    let mut frames = Vec::new();
    for block in body.split("\n\n") {
        let mut frame = Frame {
            id: None,
            event: String::new(),
            data: Value::Null,
        };
        let mut any = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                frame.id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("event:") {
                frame.event = v.trim().to_owned();
                any = true;
            } else if let Some(v) = line.strip_prefix("data:") {
                frame.data = serde_json::from_str(v.trim()).unwrap();
            }
        }
        if any {
            frames.push(frame);
        }
    }
    frames
}

/// `GET …/events` with plain HTTP, reading the body to its end.
async fn raw_stream(url: &str, key: &str, run_id: &str, query: &str, last: Option<&str>) -> String {
    let mut req = reqwest::Client::new()
        .get(format!("{url}/api/v1/agent/runs/{run_id}/events{query}"))
        .bearer_auth(key)
        .header("accept", "text/event-stream");
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    resp.text().await.unwrap()
}

fn sessions(frames: &[Frame]) -> Vec<Frame> {
    frames
        .iter()
        .filter(|f| f.event == "session")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn live_viewer_replay_resume_and_watch() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("shell", json!({"command": "sleep 2; echo slept"})),
        Turn::text("all done here"),
    ])
    .await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("w1", &[]).await.unwrap();
    let client = cluster.client();
    let run = client
        .create_run(&RunAgentRequest {
            prompt: Some("sleep a little".into()),
            config: Some(AgentConfig {
                worker_host: Some("w1".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();

    // A live viewer, connected before the agent starts.
    let viewer = {
        let client = client.clone();
        let run_id = run.run_id.clone();
        tokio::spawn(async move {
            let mut stream = client.run_events(&run_id, None, true).await.unwrap();
            let mut frames = Vec::new();
            let mut state_at_first_event = None;
            while let Some(e) = stream.next().await.unwrap() {
                if e.event == "session" && state_at_first_event.is_none() {
                    state_at_first_event = Some(client.get_run(&run_id).await.unwrap().state);
                }
                let end = e.event == "end";
                frames.push(Frame {
                    id: e.id,
                    event: e.event,
                    data: serde_json::from_str(&e.data).unwrap(),
                });
                if end {
                    break;
                }
            }
            (frames, state_at_first_event)
        })
    };
    let done = cluster
        .wait_finished(&run.run_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded, "{:?}", done.status_message);
    let (live, state_at_first) = tokio::time::timeout(Duration::from_secs(30), viewer)
        .await
        .expect("the live viewer never got `end`")
        .unwrap();
    // It saw the first event while the run was still working: live, not a replay.
    assert!(
        state_at_first.is_some_and(|s| !s.is_terminal()),
        "first event arrived when the run was {state_at_first:?}"
    );
    let last = live.last().unwrap();
    assert_eq!(last.event, "end");
    assert_eq!(last.data["state"], "SUCCEEDED");
    assert!(live.iter().any(|f| f.event == "run_state"));

    // Replay of the finished run: every stored event, identical to what the
    // live viewer got, then `end`.
    let key = cluster.api_key.clone();
    let body = raw_stream(&cluster.url, &key, &run.run_id, "?follow=false", None).await;
    let replay = parse_sse(&body);
    assert_eq!(replay.last().unwrap().event, "end");
    assert_eq!(sessions(&replay), sessions(&live));
    let transcript = client.transcript(&run.run_id).await.unwrap();
    assert_eq!(sessions(&replay).len(), transcript.events.len());
    assert!(transcript.events.len() >= 6, "{transcript:?}");
    let replayed = sessions(&replay);
    let kinds: Vec<&str> = replayed
        .iter()
        .map(|f| f.data["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"user_message"));
    assert!(kinds.contains(&"tool_call") && kinds.contains(&"tool_result"));
    assert_eq!(kinds.last(), Some(&"status"));
    // Following a finished run ends too, after the same events.
    let body = raw_stream(&cluster.url, &key, &run.run_id, "", None).await;
    assert_eq!(sessions(&parse_sse(&body)), sessions(&live));

    // E1: resume after a given Last-Event-ID: exactly the rest, no gap, no duplicate.
    let all = sessions(&replay);
    for cut in [0, 2, all.len() - 1] {
        let id = all[cut].id.clone().unwrap();
        let body = raw_stream(&cluster.url, &key, &run.run_id, "?follow=false", Some(&id)).await;
        assert_eq!(
            sessions(&parse_sse(&body)),
            all[cut + 1..].to_vec(),
            "after {id}"
        );
        // `after=` does the same; the header wins when both are given.
        let q = format!("?follow=false&after={id}");
        let body = raw_stream(&cluster.url, &key, &run.run_id, &q, None).await;
        assert_eq!(sessions(&parse_sse(&body)), all[cut + 1..].to_vec());
        let body = raw_stream(
            &cluster.url,
            &key,
            &run.run_id,
            "?follow=false&after=1.0",
            Some(&id),
        )
        .await;
        assert_eq!(sessions(&parse_sse(&body)).len(), all.len() - cut - 1);
    }
    // A malformed id is a clear 400.
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/agent/runs/{}/events",
            cluster.url, run.run_id
        ))
        .bearer_auth(&key)
        .header("last-event-id", "banana")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("banana"));

    // `hangar run watch` on the finished run: the transcript, the final state, exit 0.
    let out = hangar_as(&cluster, &key, &["run", "watch", &run.run_id]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("› sleep a little"), "{stdout}");
    assert!(stdout.contains("⚙ shell"), "{stdout}");
    assert!(stdout.contains("slept"), "{stdout}");
    assert!(stdout.contains("all done here"), "{stdout}");
    assert!(stdout.contains("SUCCEEDED"), "{stdout}");
    // ndjson: one stream event per line.
    let out = hangar_as(
        &cluster,
        &key,
        &["run", "watch", &run.run_id, "--output-format", "ndjson"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let session_lines = lines.iter().filter(|l| l["event"] == "session").count();
    assert_eq!(session_lines, all.len());
    assert_eq!(lines.last().unwrap()["event"], "end");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_exits_with_the_run_status() {
    let llm = FakeLlm::start(vec![Turn::error(400, "the model refuses")]).await;
    let mut cluster = cluster_with(&llm).await;
    cluster.start_worker("w1", &[]).await.unwrap();
    // `run-cloud --follow` streams the run it created and exits with its status.
    let out = hangar_as(
        &cluster,
        &cluster.api_key,
        &[
            "agent",
            "run-cloud",
            "-p",
            "doomed",
            "--host",
            "w1",
            "--follow",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("› doomed"), "{stdout}");
}
