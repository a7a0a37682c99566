//! C7: fuzzed WebSocket frames on the worker and viewer sockets.

use super::*;

/// One WebSocket frame: random text, JSON, an envelope of a known type with a
/// random or mutated payload, random bytes.
fn frame_strategy(
    kinds: Vec<&'static str>,
    payload: Value,
    fields: Vec<&'static str>,
) -> BoxedStrategy<Frame> {
    let keys: Vec<&'static str> = fields.clone();
    let mutated = prop::collection::vec(
        (
            prop::sample::select(fields),
            prop::option::weighted(0.85, json_value(keys.clone())),
        ),
        0..3,
    )
    .prop_map(move |muts| {
        let mut doc = payload.clone();
        for (f, v) in muts {
            set(&mut doc, &format!("/{f}"), v);
        }
        doc
    });
    prop_oneof![
        3 => (prop::sample::select(kinds.clone()), mutated)
            .prop_map(|(k, d)| Frame::Text(json!({"type": k, "data": d}).to_string())),
        2 => (prop::sample::select(kinds), json_value(keys.clone()))
            .prop_map(|(k, d)| Frame::Text(json!({"type": k, "data": d}).to_string())),
        1 => json_value(keys).prop_map(|v| Frame::Text(v.to_string())),
        1 => nasty_string().prop_map(Frame::Text),
        1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Frame::Binary),
        1 => prop::collection::vec(any::<u8>(), 0..125).prop_map(Frame::Ping),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

impl Frame {
    fn message(self) -> tokio_tungstenite::tungstenite::Message {
        use tokio_tungstenite::tungstenite::Message;
        match self {
            Frame::Text(t) => Message::Text(t.into()),
            Frame::Binary(b) => Message::Binary(b.into()),
            Frame::Ping(b) => Message::Ping(b.into()),
        }
    }
}

/// Sends fuzzed frames over a socket that is reopened whenever the server
/// closes it; checks after each batch that the server still serves.
async fn fuzz_socket<C, Fut>(
    t: &Arc<TwoTeams>,
    label: &str,
    strategy: BoxedStrategy<Frame>,
    connect: C,
) -> Vec<String>
where
    C: Fn() -> Fut,
    Fut: std::future::Future<Output = hangar_client::WebSocket>,
{
    let mut failures = Vec::new();
    let mut runner = runner();
    let mut ws = connect().await;
    let mut reconnects = 0;
    for i in 0..cases() {
        let frame = strategy.new_tree(&mut runner).unwrap().current();
        if ws.send(frame.clone().message()).await.is_err() {
            reconnects += 1;
            ws = connect().await;
            let _ = ws.send(frame.message()).await;
        }
        // Drain what the server sent (acks, pongs, a close) without blocking.
        while let Ok(Some(msg)) =
            tokio::time::timeout(std::time::Duration::from_millis(1), ws.next()).await
        {
            if msg.is_err() {
                break;
            }
        }
        if i % 32 == 31 && !t.healthy().await {
            failures.push(format!("{label}: server stopped answering after frame {i}"));
            break;
        }
    }
    tracing::info!(reconnects, "{label}: done");
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c7_fuzzed_websocket_frames_never_crash_the_server() {
    let panics = count_panics();
    let t = Arc::new(TwoTeams::start().await);
    let (run, _, _) = fixture_ids(&t).await;
    let worker_payload = json!({"task_id": run, "worker_id": "fuzz-worker", "execution_id": "x",
        "message": "m", "task_state": "SUCCEEDED", "reason": "r", "failure_reason": "task_timeout",
        "exit_code": 1, "version": "1", "backend": "direct", "max_concurrent_tasks": 1,
        "labels": {}, "running": []});
    let worker_fields = vec![
        "task_id",
        "worker_id",
        "execution_id",
        "message",
        "task_state",
        "reason",
        "failure_reason",
        "exit_code",
        "version",
        "backend",
        "max_concurrent_tasks",
        "labels",
        "running",
    ];
    let worker_kinds = vec![
        "worker_hello",
        "task_claimed",
        "task_rejected",
        "task_started",
        "task_completed",
        "task_failed",
        "worker_draining",
        "unknown_kind",
    ];
    let t2 = t.clone();
    let worker_token = t.worker_token("fuzz-worker").await;
    let mut failures = fuzz_socket(
        &t,
        "worker socket",
        frame_strategy(worker_kinds, worker_payload, worker_fields),
        || {
            let (t, token) = (t2.clone(), worker_token.clone());
            async move {
                hangar_client::connect_websocket(
                    &t.ws_url("/selfhosted/worker/ws?worker_id=fuzz-worker"),
                    &token,
                )
                .await
                .unwrap()
            }
        },
    )
    .await;

    let event = json!({"seq": 1, "at": "2025-01-01T00:00:00Z", "kind": "assistant_message",
        "text": "hi", "state": "INPROGRESS", "message": "m"});
    let event_fields = vec![
        "seq",
        "at",
        "kind",
        "text",
        "state",
        "message",
        "name",
        "arguments",
    ];
    let t3 = t.clone();
    failures.extend(
        fuzz_socket(
            &t,
            "session socket",
            frame_strategy(vec!["event", "ack", "unknown_kind"], event, event_fields),
            || {
                let t = t3.clone();
                async move {
                    // A fresh run each time: a fuzzed terminal `status` event ends the last one.
                    let (run, token) = t.local_run("fuzz session").await;
                    hangar_client::connect_websocket(
                        &t.ws_url(&format!("/agent/runs/{run}/session")),
                        &token,
                    )
                    .await
                    .unwrap()
                }
            },
        )
        .await,
    );
    assert!(t.healthy().await, "the server stopped answering");
    // The API still works for everyone.
    t.ok("GET", "/agent/runs", &t.key_a, None).await;
    t.ok("GET", "/workers", &t.key_b, None).await;
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the server panicked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
