//! The session stream survives a dropped connection: no gap, no duplicate.

use super::fake_hangar::{DropPlan, FakeHangar, Turn, final_state, kinds};
use hangar_agent::{CancellationToken, RunOutcome};
use hangar_protocol::RunState;
use serde_json::json;

#[tokio::test]
async fn dropped_socket_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start_with(
        "go",
        vec![
            Turn::tool_call("shell", json!({"command": "echo one"})),
            Turn::text("finished"),
        ],
        // Commit events 1-2, receive 3-4 without committing, then drop the socket.
        Some(DropPlan { commit: 2, lose: 2 }),
    )
    .await;

    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    assert_eq!(
        outcome,
        RunOutcome::Succeeded {
            message: "finished".into()
        }
    );

    // run_managed returns only after the last event was acked (or its flush
    // deadline passed), so the store is complete now.
    let events = fake.events();
    assert_eq!(
        final_state(&events),
        Some(RunState::Succeeded),
        "{:?}",
        kinds(&events)
    );
    assert_eq!(
        kinds(&events),
        [
            "user_message",
            "usage",
            "tool_call",
            "tool_result",
            "usage",
            "assistant_message",
            "status"
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );

    assert!(fake.connections() >= 2, "the agent reconnected");
    assert!(fake.gaps().is_empty(), "gaps: {:?}", fake.gaps());
    assert!(
        fake.duplicates().is_empty(),
        "duplicates: {:?}",
        fake.duplicates()
    );
    let received = fake.received();
    let first_conn: Vec<u64> = received
        .iter()
        .filter(|(c, _)| *c == 1)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(first_conn, [1, 2, 3, 4]);
    // The second connection starts right after the last committed event.
    let second_conn: Vec<u64> = received
        .iter()
        .filter(|(c, _)| *c == 2)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(second_conn.first(), Some(&3), "{received:?}");
    assert!(
        second_conn.windows(2).all(|w| w[1] == w[0] + 1),
        "{received:?}"
    );
}

#[tokio::test]
async fn a_restarted_execution_continues_its_spool() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start("go", vec![Turn::text("fine")]).await;
    // First run: completes and is acked.
    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    assert!(outcome.is_success());
    assert_eq!(fake.events().len(), 4);

    // Same execution restarted against a server that lost nothing: the spool
    // continues numbering, and nothing already committed is resent.
    fake.llm().push([Turn::text("fine again")]);
    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    assert!(outcome.is_success());
    let events = fake.events();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    assert!(
        fake.duplicates().is_empty(),
        "duplicates: {:?}",
        fake.duplicates()
    );

    // A fresh server (no events committed) gets the whole spool on the next
    // execution start, before the new events.
    let empty = FakeHangar::start("go", vec![Turn::text("again")]).await;
    let outcome = empty.run_agent(dir.path(), CancellationToken::new()).await;
    assert!(outcome.is_success());
    let events = empty.events();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert!(empty.gaps().is_empty() && empty.duplicates().is_empty());
}
