//! C8: oversized bodies are a 413 problem on every route that takes one;
//! oversized WebSocket frames close the connection cleanly and the server keeps serving.

use crate::suite::common::TwoTeams;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_oversized_bodies_get_413_on_every_body_route() {
    let t = TwoTeams::start_with(|c| c.max_body_bytes = LIMIT).await;
    let a = t.key_a.clone();
    let run = t
        .ok("POST", "/agent/runs", &a, Some(r#"{"prompt":"x"}"#))
        .await;
    let run = run["run_id"].as_str().unwrap();
    let sched = t
        .ok(
            "POST",
            "/agent/schedules",
            &a,
            Some(r#"{"name":"s","cron_schedule":"0 * * * *","prompt":"p"}"#),
        )
        .await;
    let sched = sched["id"].as_str().unwrap();
    let env = t
        .ok("POST", "/environments", &a, Some(r#"{"name":"e"}"#))
        .await;
    let env = env["id"].as_str().unwrap();
    let routes = [
        ("POST", "/agent/runs".to_owned()),
        ("POST", "/agent/run".to_owned()),
        ("POST", "/agent/runs/local".to_owned()),
        ("POST", format!("/agent/runs/{run}/followups")),
        ("POST", "/agent/schedules".to_owned()),
        ("PUT", format!("/agent/schedules/{sched}")),
        ("POST", "/api-keys".to_owned()),
        ("POST", "/environments".to_owned()),
        ("PUT", format!("/environments/{env}")),
        ("POST", "/secrets".to_owned()),
        ("PUT", "/secrets/ANY".to_owned()),
        ("POST", "/llm/chat/completions".to_owned()),
    ];
    // A JSON string just past the limit: only its size is wrong.
    let big = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(LIMIT));
    for (method, path) in &routes {
        let reply = t.call(method, path, Some(&a), Some(&big)).await;
        reply.assert_problem(413, &format!("{method} {path}"));
        // Without a key too: the size is refused before anything is parsed.
        let reply = t.call(method, path, None, Some(&big)).await;
        assert!(
            reply.status == 413 || reply.status == 401,
            "{method} {path} without a key: {} {}",
            reply.status,
            reply.text
        );
    }
    // Just under the limit is parsed (and judged on its content).
    let fits = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(LIMIT - 64));
    let reply = t.call("POST", "/agent/runs", Some(&a), Some(&fits)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// Sends one frame of `size` bytes and waits until the server closes the
/// connection with a close handshake.
async fn oversized_frame_closes(ws: &mut hangar_client::WebSocket, size: usize) -> Option<String> {
    let _ = ws.send(Message::Text("x".repeat(size).into())).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Some("the server kept the connection open".to_owned()),
            Ok(None) => return Some("the connection ended without a close frame".to_owned()),
            Ok(Some(Err(e))) => return Some(format!("the connection broke: {e}")),
            Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c8_oversized_websocket_frames_close_the_connection() {
    let t = TwoTeams::start().await;
    let worker_url = t.ws_url("/selfhosted/worker/ws?worker_id=big-frames");
    let worker_token = t.worker_token("big-frames").await;
    let mut ws = hangar_client::connect_websocket(&worker_url, &worker_token)
        .await
        .unwrap();
    if let Some(e) = oversized_frame_closes(&mut ws, 1024 * 1024 + 1).await {
        panic!("worker socket: {e}");
    }
    let (run, token) = t.local_run("big frames").await;
    let mut ws =
        hangar_client::connect_websocket(&t.ws_url(&format!("/agent/runs/{run}/session")), &token)
            .await
            .unwrap();
    if let Some(e) = oversized_frame_closes(&mut ws, 4 * 1024 * 1024 + 1).await {
        panic!("session socket: {e}");
    }
    // The server keeps serving, and both sockets accept a new connection.
    assert!(t.healthy().await);
    hangar_client::connect_websocket(&worker_url, &worker_token)
        .await
        .unwrap();
    hangar_client::connect_websocket(&t.ws_url(&format!("/agent/runs/{run}/session")), &token)
        .await
        .unwrap();
}

/// Issue 16, item 5: shutdown has a deadline. A task of the server that
/// never ends (here: one planted in its tracker) does not hold the stop
/// past it, and a live viewer's stream ends with the server.
#[tokio::test]
async fn shutdown_stops_within_its_deadline_even_when_a_task_never_ends() {
    let mut t = TwoTeams::start().await;
    let (run_id, _) = t.local_run("watch me").await;
    // A live viewer: its pump runs in the server's tracker until shutdown.
    let stream = reqwest::Client::new()
        .get(t.api(&format!("/agent/runs/{run_id}/events?follow=true")))
        .bearer_auth(&t.key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let server = t.take_server();
    server
        .state()
        .runtime
        .tasks
        .spawn(std::future::pending::<()>());
    let started = std::time::Instant::now();
    server
        .shutdown_within(std::time::Duration::from_millis(300))
        .await;
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(300) && took < std::time::Duration::from_secs(5),
        "shutdown took {took:?}"
    );
    // The viewer's stream was ended by the shutdown, not left hanging.
    let body = tokio::time::timeout(std::time::Duration::from_secs(5), stream.text()).await;
    assert!(body.is_ok(), "the viewer's stream outlived the server");
}
