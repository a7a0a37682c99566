//! Unmanaged runs registered with the server (`POST /agent/runs/local`).

use crate::suite::common::cluster_with;
use futures::{SinkExt, StreamExt};
use hangar_protocol::session::{AgentToServer, EventBody, ServerToAgent, SessionEvent};
use hangar_protocol::{Envelope, RunExecutionLocation, RunSourceType, RunState, Timestamp};
use hangar_testkit::fake_llm::FakeLlm;
use tokio_tungstenite::tungstenite::Message;

async fn next_ack(ws: &mut hangar_client::WebSocket) -> u64 {
    loop {
        let Message::Text(text) = ws.next().await.unwrap().unwrap() else {
            continue;
        };
        if let Ok(Some(ServerToAgent::Ack(a))) =
            ServerToAgent::from_envelope(Envelope::parse(&text).unwrap())
        {
            return a.seq;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_run_streams_its_session_and_ends_with_its_status() {
    let llm = FakeLlm::start(vec![]).await;
    let cluster = cluster_with(&llm).await;
    let client = cluster.client();
    let created: serde_json::Value = client
        .post_json(
            "api/v1/agent/runs/local",
            &serde_json::json!({"prompt": "fix it locally"}),
        )
        .await
        .unwrap();
    let run_id = created["run_id"].as_str().unwrap().to_owned();
    let exec = created["execution_id"].as_str().unwrap();
    let token = created["run_token"].as_str().unwrap();
    assert!(token.starts_with("hr_"));
    assert_eq!(created["state"], "INPROGRESS");

    let run = client.get_run(&run_id).await.unwrap();
    assert_eq!(run.execution_location, Some(RunExecutionLocation::Local));
    assert_eq!(run.source, Some(RunSourceType::Local));
    assert_eq!(run.state, RunState::InProgress);

    // The run token reads its own run and streams its session.
    let agent = hangar_client::Client::new(&cluster.url, token).unwrap();
    assert_eq!(agent.get_run(&run_id).await.unwrap().run_id, run_id);
    let mut ws = agent
        .websocket(&format!(
            "api/v1/agent/runs/{run_id}/session?execution_id={exec}"
        ))
        .await
        .unwrap();
    assert_eq!(next_ack(&mut ws).await, 0);
    let events = [
        EventBody::UserMessage {
            text: "fix it locally".into(),
        },
        EventBody::AssistantMessage {
            text: "fixed".into(),
        },
        EventBody::Status {
            state: Some(RunState::Succeeded),
            message: "fixed".into(),
            failure_reason: None,
        },
    ];
    for (i, body) in events.into_iter().enumerate() {
        let frame = AgentToServer::Event(SessionEvent {
            seq: i as u64 + 1,
            at: Timestamp::now(),
            body,
        });
        ws.send(Message::Text(frame.to_envelope().to_text().into()))
            .await
            .unwrap();
        assert_eq!(next_ack(&mut ws).await, i as u64 + 1);
    }
    let run = client.get_run(&run_id).await.unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.is_sandbox_running, Some(false));
    assert_eq!(client.transcript(&run_id).await.unwrap().events.len(), 3);
    // The execution ended, so its token is dead.
    let err = agent.get_run(&run_id).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    // A run token cannot create runs.
    let other = hangar_client::Client::new(&cluster.url, token).unwrap();
    assert!(
        other
            .get_json::<serde_json::Value>("api/v1/workers")
            .await
            .is_err()
    );
}
