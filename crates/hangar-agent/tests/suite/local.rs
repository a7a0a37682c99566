//! A tracked unmanaged run: registered with `POST /api/v1/agent/runs/local`,
//! streamed over the durable session with the returned run token, with the
//! model reached through the server's gateway when no local provider serves it.

use super::fake_hangar::{API_KEY, FakeHangar, MODEL, TOKEN, Turn, final_state, kinds};
use super::runtime::VecSink;
use hangar_agent::{CancellationToken, LocalRun, TrackingServer, run_local};
use hangar_protocol::RunState;
use serde_json::json;

#[tokio::test]
async fn a_tracked_local_run_streams_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start(
        "make notes",
        vec![
            Turn::tool_call(
                "write_file",
                json!({"path": "notes.md", "content": "token hr_test_token"}),
            ),
            Turn::text("Wrote notes."),
        ],
    )
    .await;
    let mut opts = LocalRun::new("make notes", dir.path());
    opts.model = Some(MODEL.into());
    opts.server = Some(TrackingServer {
        url: fake.url(),
        api_key: API_KEY.into(),
        share: vec!["team:view".into()],
    });
    let printed = VecSink::default();
    let report = run_local(opts, &printed, CancellationToken::new())
        .await
        .unwrap();
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_eq!(report.run_id.as_deref(), Some("run-1"));
    // The gateway served the model (the fake checks the run token).
    assert_eq!(fake.llm_requests().len(), 2);
    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
    assert_eq!(final_state(&events), Some(RunState::Succeeded));
    assert_eq!(
        kinds(&events),
        printed.kinds(),
        "printer and server saw the same events"
    );
    assert!(fake.duplicates().is_empty() && fake.gaps().is_empty());
    // The run token is a secret: redacted from the transcript.
    let stored = serde_json::to_string(&events).unwrap();
    assert!(!stored.contains(TOKEN), "{stored}");
}
