//! Session fan-out benchmark (not a test): prints figures.
//!
//! `cargo bench -p hangar-cli --bench fanout` (release build). One in-process
//! server with SQLite; per round, a registered run whose "agent" is a session
//! WebSocket with the run token, and V live SSE viewers on
//! `GET /api/v1/agent/runs/{id}/events` over real HTTP, V from the
//! comma-separated `HANGAR_BENCH_VIEWERS` (default `100,1000`: one round
//! each). Each of `HANGAR_BENCH_EVENTS` events (default 200) is sent on the
//! agent socket one at a time; the latency of a sample is from that send
//! (before the commit) to its receipt by one viewer. Target: p99 ≤ 50 ms at
//! 1,000 viewers.
// Tests and benchmarks own the tasks they spawn (clippy.toml bans tokio::spawn in the product).
#![allow(clippy::disallowed_methods)]
// A test (or benchmark) is one scenario, read top to bottom: it may be long.
#![allow(clippy::too_many_lines)]
// A benchmark aborts on any failure; unwrapping says where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::{SinkExt, StreamExt};
use hangar_client::Client;
use hangar_protocol::Timestamp;
use hangar_protocol::session::{AgentToServer, EventBody, SessionEvent};
use hangar_server::{Server, ServerConfig};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rounds: Vec<usize> = std::env::var("HANGAR_BENCH_VIEWERS")
        .unwrap_or_else(|_| "100,1000".to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let events = env_usize("HANGAR_BENCH_EVENTS", 200);
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        cli_config_path: Some(std::path::PathBuf::new()),
        providers_from_env: false,
        ..ServerConfig::default()
    };
    let server = Server::start(config).await.expect("server");
    let key = server.issue_local_key("bench").await.unwrap();
    let client = Client::new(server.url(), key.clone()).unwrap();
    for viewers in rounds {
        round(&client, viewers, events).await;
    }
    server.shutdown().await;
}

/// One run watched by `viewers` SSE streams while `events` are committed.
async fn round(client: &Client, viewers: usize, events: usize) {
    let local: serde_json::Value = client
        .post_json(
            "api/v1/agent/runs/local",
            &serde_json::json!({"prompt": "fan-out bench"}),
        )
        .await
        .unwrap();
    let run_id = local["run_id"].as_str().unwrap().to_owned();
    let token = local["run_token"].as_str().unwrap().to_owned();
    let url = client
        .url(&format!("api/v1/agent/runs/{run_id}/session"))
        .unwrap();
    let mut agent = hangar_client::connect_websocket(&url, &token)
        .await
        .unwrap();

    // The viewers: each records when it received every seq, and nothing
    // else on the way (the latencies are computed at the end): the load
    // generator shares the cores with the server it measures.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Vec<(usize, Instant)>>(viewers);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(viewers);
    for _ in 0..viewers {
        let client = client.clone();
        let run_id = run_id.clone();
        let done_tx = done_tx.clone();
        let ready_tx = ready_tx.clone();
        tokio::spawn(async move {
            let mut stream = client.run_events(&run_id, None, true).await.unwrap();
            let mut received = Vec::with_capacity(events);
            let mut ready = false;
            while let Some(e) = stream.next().await.unwrap() {
                if e.event == "run_state" && !ready {
                    ready = true;
                    ready_tx.send(()).await.unwrap();
                    continue;
                }
                if e.event != "session" {
                    continue;
                }
                let at = Instant::now();
                // The id is `<execution>.<seq>`.
                let id = e.id.unwrap();
                let seq: usize = id.split_once('.').unwrap().1.parse().unwrap();
                received.push((seq, at));
                if seq == events {
                    break;
                }
            }
            done_tx.send(received).await.unwrap();
        });
    }
    drop(done_tx);
    for _ in 0..viewers {
        ready_rx.recv().await.unwrap();
    }

    let mut sent: Vec<Option<Instant>> = vec![None; events + 1];
    let started = Instant::now();
    for seq in 1..=events as u64 {
        let event = SessionEvent {
            seq,
            at: Timestamp::now(),
            body: EventBody::AssistantMessage {
                text: format!("event {seq}: {}", "x".repeat(200)),
            },
        };
        let frame = AgentToServer::Event(event).to_envelope().to_text();
        sent[seq as usize] = Some(Instant::now());
        agent.send(Message::Text(frame.into())).await.unwrap();
        // Wait for the ack, so events are measured one at a time.
        loop {
            match agent.next().await.unwrap().unwrap() {
                Message::Text(t)
                    if t.contains("\"ack\"") && t.contains(&format!("\"seq\":{seq}")) =>
                {
                    break;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut all = Vec::with_capacity(viewers * events);
    for _ in 0..viewers {
        let received = tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
            .await
            .expect("a viewer never got the last event")
            .unwrap();
        assert_eq!(received.len(), events, "a viewer missed events");
        all.extend(
            received
                .into_iter()
                .map(|(seq, at)| at - sent[seq].expect("sent before received")),
        );
    }
    all.sort();
    println!(
        "session fan-out: {viewers} SSE viewers x {events} events ({} samples, {:.1} s; the run's viewers share one feed)",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "commit → viewer receipt   p50={:.3} ms  p90={:.3} ms  p99={:.3} ms  max={:.3} ms  (target p99 ≤ 50 ms)",
        pct(&all, 0.5),
        pct(&all, 0.9),
        pct(&all, 0.99),
        pct(&all, 1.0)
    );
    drop(agent);
}
