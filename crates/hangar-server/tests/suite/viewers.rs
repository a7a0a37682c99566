//! Live viewers of one run share its feed: every viewer gets every event
//! exactly once and in order, whether it joined before the first event,
//! in the middle of the stream or with a resume point, and the run is
//! followed once however many watch it.

use crate::suite::common::TwoTeams;
use futures::{SinkExt, StreamExt};
use hangar_client::Client;
use hangar_protocol::Timestamp;
use hangar_protocol::session::{AgentToServer, EventBody, SessionEvent};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Sends event `seq` on the agent's session socket and waits for its ack
/// (so it is committed when this returns).
async fn send_event(agent: &mut hangar_client::WebSocket, seq: u64, body: EventBody) {
    let event = SessionEvent {
        seq,
        at: Timestamp::now(),
        body,
    };
    let frame = AgentToServer::Event(event).to_envelope().to_text();
    agent.send(Message::Text(frame.into())).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), agent.next())
            .await
            .expect("the server acks every event")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg
            && t.contains("\"ack\"")
            && t.contains(&format!("\"seq\":{seq}"))
        {
            return;
        }
    }
}

fn text(seq: u64) -> EventBody {
    EventBody::AssistantMessage {
        text: format!("event {seq}"),
    }
}

/// Reads a viewer's stream to its `end`: the seqs of its `session` frames.
async fn read_to_end(mut stream: hangar_client::SseStream) -> (Vec<u64>, Vec<String>) {
    let mut seqs = Vec::new();
    let mut ids = Vec::new();
    while let Some(e) = stream.next().await.unwrap() {
        match e.event.as_str() {
            "session" => {
                let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                seqs.push(v["seq"].as_u64().unwrap());
                ids.push(e.id.unwrap_or_default());
            }
            "end" => return (seqs, ids),
            _ => {}
        }
    }
    panic!("the stream closed without `end` after {seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_share_one_feed_and_get_every_event_once_in_order() {
    const EVENTS: u64 = 60;
    const EARLY: usize = 12;
    let t = TwoTeams::start().await;
    let (run_id, token) = t.local_run("watched by many").await;
    let client = Client::new(&t.url, t.key_a.clone()).unwrap();
    let mut agent = hangar_client::connect_websocket(
        &t.ws_url(&format!("/agent/runs/{run_id}/session")),
        &token,
    )
    .await
    .unwrap();

    let mut viewers = Vec::new();
    for _ in 0..EARLY {
        let stream = client.run_events(&run_id, None, true).await.unwrap();
        viewers.push(tokio::spawn(read_to_end(stream)));
    }
    for seq in 1..=EVENTS / 2 {
        send_event(&mut agent, seq, text(seq)).await;
    }
    // Joining in the middle: one from the start, one resuming after 1.10.
    let late = client.run_events(&run_id, None, true).await.unwrap();
    viewers.push(tokio::spawn(read_to_end(late)));
    let resumed = client
        .run_events(&run_id, Some("1.10"), true)
        .await
        .unwrap();
    let resumed = tokio::spawn(read_to_end(resumed));
    // Many viewers, one feed.
    assert_eq!(t.server().state().sessions.feeds.watched(), 1);

    for seq in EVENTS / 2 + 1..EVENTS {
        send_event(&mut agent, seq, text(seq)).await;
    }
    let last = EventBody::Status {
        state: Some(hangar_protocol::RunState::Succeeded),
        message: "done".into(),
        failure_reason: None,
    };
    send_event(&mut agent, EVENTS, last).await;

    let want: Vec<u64> = (1..=EVENTS).collect();
    for v in viewers {
        let (seqs, ids) = tokio::time::timeout(Duration::from_secs(30), v)
            .await
            .expect("every viewer gets `end`")
            .unwrap();
        assert_eq!(seqs, want, "every event once, in order");
        assert_eq!(ids.first().map(String::as_str), Some("1.1"));
    }
    let (seqs, _) = tokio::time::timeout(Duration::from_secs(30), resumed)
        .await
        .expect("the resumed viewer gets `end`")
        .unwrap();
    assert_eq!(seqs, (11..=EVENTS).collect::<Vec<_>>());
}

/// Access is re-checked per credential: revoking the grant one viewer
/// watches through closes that viewer's stream with `revoked`, while the
/// run's creator, watching the same feed, keeps receiving events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_viewer_is_cut_off_and_the_others_go_on() {
    let t = TwoTeams::start().await;
    let (_, alice) = t.member("alice").await;
    let (_, bob) = t.member("bob").await;
    let body = serde_json::json!({ "prompt": "alice's run" }).to_string();
    let created = t.ok("POST", "/agent/runs/local", &alice, Some(&body)).await;
    let run_id = created["run_id"].as_str().unwrap().to_owned();
    let token = created["run_token"].as_str().unwrap().to_owned();
    let grant = serde_json::json!({ "grantee": "team", "role": "view" }).to_string();
    let share = t
        .ok(
            "POST",
            &format!("/agent/runs/{run_id}/shares"),
            &alice,
            Some(&grant),
        )
        .await;
    let mut agent = hangar_client::connect_websocket(
        &t.ws_url(&format!("/agent/runs/{run_id}/session")),
        &token,
    )
    .await
    .unwrap();

    let as_alice = Client::new(&t.url, alice.clone()).unwrap();
    let as_bob = Client::new(&t.url, bob.clone()).unwrap();
    let mut alices = as_alice.run_events(&run_id, None, true).await.unwrap();
    let mut bobs = as_bob.run_events(&run_id, None, true).await.unwrap();
    send_event(&mut agent, 1, text(1)).await;
    for (who, stream) in [("alice", &mut alices), ("bob", &mut bobs)] {
        loop {
            let e = stream.next().await.unwrap().expect("open");
            if e.event == "session" {
                break;
            }
            assert_ne!(e.event, "revoked", "{who} still has access");
        }
    }

    let r = t
        .call(
            "DELETE",
            &format!(
                "/agent/runs/{run_id}/shares/{}",
                share["id"].as_str().unwrap()
            ),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let revoked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match bobs.next().await.unwrap() {
                Some(e) if e.event == "revoked" => return e,
                Some(e) => assert_ne!(e.event, "session", "no event after the revocation"),
                None => panic!("bob's stream closed without `revoked`"),
            }
        }
    })
    .await
    .expect("bob's stream is cut off promptly");
    assert!(revoked.data.contains("revoked"), "{}", revoked.data);
    assert!(
        bobs.next().await.unwrap().is_none(),
        "closed after `revoked`"
    );

    send_event(&mut agent, 2, text(2)).await;
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let e = alices
                .next()
                .await
                .unwrap()
                .expect("alice's stream stays open");
            if e.event == "session" {
                return e;
            }
            assert_ne!(e.event, "revoked", "alice keeps her access");
        }
    })
    .await
    .expect("alice still gets events");
    assert_eq!(next.id.as_deref(), Some("1.2"));
}
