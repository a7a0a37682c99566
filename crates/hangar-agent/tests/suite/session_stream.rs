//! The durable session stream on its own (group-committed spool): events
//! emitted while the socket drops are resent in order, none lost or doubled,
//! and every emitted event is in the spool file.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use hangar_agent::{CancellationToken, EventBody, EventSink, SessionConfig, SessionStream};
use hangar_protocol::Envelope;
use hangar_protocol::session::{Ack, ServerToAgent, SessionEvent};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Seen {
    /// `(connection, seq)` in arrival order.
    received: Vec<(usize, u64)>,
    committed: u64,
    connections: usize,
}

fn ack(seq: u64) -> Message {
    Message::Text(
        ServerToAgent::Ack(Ack { seq })
            .to_envelope()
            .to_text()
            .into(),
    )
}

/// Commits in order; the first connection drops after receiving 3 events
/// (acking only the first 2).
async fn serve(seen: Arc<Mutex<Seen>>, mut socket: WebSocket) {
    let (conn, initial) = {
        let mut s = seen.lock().unwrap();
        s.connections += 1;
        (s.connections, s.committed)
    };
    if socket.send(ack(initial)).await.is_err() {
        return;
    }
    let mut here = 0;
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = msg else { continue };
        let event: SessionEvent = Envelope::parse(text.as_str()).unwrap().decode().unwrap();
        here += 1;
        let top = {
            let mut s = seen.lock().unwrap();
            s.received.push((conn, event.seq));
            if conn == 1 && here > 2 {
                return; // dropped without acking
            }
            if event.seq == s.committed + 1 {
                s.committed = event.seq;
            }
            s.committed
        };
        if socket.send(ack(top)).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn events_survive_a_dropped_socket_in_order_and_reach_the_spool() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/api/v1/agent/runs/{id}/session",
        axum::routing::get(move |ws: WebSocketUpgrade| {
            let seen = state.clone();
            async move { ws.on_upgrade(move |s| serve(seen, s)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool.ndjson");
    let (stream, _followups) = SessionStream::start(
        SessionConfig {
            client: hangar_client::Client::new(&url, "hr_test").unwrap(),
            run_id: "run-1".into(),
            execution_id: "exec-1".into(),
            spool_path: spool.clone(),
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    const N: u64 = 40;
    for i in 1..=N {
        stream
            .emit(EventBody::AssistantMessage {
                text: format!("m{i}"),
            })
            .await
            .unwrap();
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let report = stream.finish(Duration::from_secs(20)).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.last_seq, N);

    let s = seen.lock().unwrap();
    assert!(s.connections >= 2, "the socket was dropped and reopened");
    assert_eq!(s.committed, N);
    // On each connection, seqs arrive strictly increasing and without gaps.
    for conn in 1..=s.connections {
        let seqs: Vec<u64> = s
            .received
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, q)| *q)
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "conn {conn}: {seqs:?}"
        );
    }
    let lines: Vec<SessionEvent> = std::fs::read_to_string(&spool)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>()
    );
}
