//! A managed run end to end: run fetch, gateway model calls, tools, events, outcome.

use super::fake_hangar::{FakeHangar, MODEL, TOKEN, Turn, WAIT_LIMIT, final_state, kinds};
use hangar_agent::{CancellationToken, EventBody, RunOutcome};
use hangar_protocol::RunState;
use hangar_protocol::session::{Followup, ServerToAgent};
use hangar_testkit::poll::until;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn shell_round_trip_reaches_the_model_and_the_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start(
        "Write hello to f.txt",
        vec![
            Turn::tool_call(
                "shell",
                json!({"command": "echo hello > f.txt && cat f.txt"}),
            ),
            Turn::text("Wrote f.txt."),
        ],
    )
    .await;

    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    assert_eq!(
        outcome,
        RunOutcome::Succeeded {
            message: "Wrote f.txt.".into()
        }
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("f.txt")).unwrap(),
        "hello\n"
    );

    // The model saw the prompt, the system prompt and, on the second call, the tool output.
    let requests = fake.llm_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["model"], MODEL);
    assert_eq!(requests[0]["stream"], true);
    let tools = requests[0]["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t["function"]["name"] == "shell"));
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains(&dir.path().display().to_string()),
        "{system}"
    );
    assert!(system.ends_with("Answer in English."), "{system}");
    assert_eq!(
        requests[0]["messages"][1]["content"],
        "Write hello to f.txt"
    );
    let second = requests[1]["messages"].as_array().unwrap();
    let assistant = &second[second.len() - 2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["id"], "call_1");
    let tool = &second[second.len() - 1];
    assert_eq!(tool["role"], "tool");
    assert_eq!(tool["tool_call_id"], "call_1");
    assert_eq!(tool["content"], "exit code: 0\nhello\n");

    // The server has every event once, in order, ending with the outcome.
    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
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
    assert!(
        matches!(&events[0].body, EventBody::UserMessage { text } if text == "Write hello to f.txt")
    );
    assert!(
        matches!(&events[1].body, EventBody::Usage { model, prompt_tokens, .. } if model == MODEL && *prompt_tokens > 0)
    );
    assert!(matches!(&events[2].body,
        EventBody::ToolCall { call_id, name, arguments }
            if call_id == "call_1" && name == "shell" && arguments["command"] == "echo hello > f.txt && cat f.txt"));
    assert!(matches!(&events[3].body,
        EventBody::ToolResult { call_id, output, is_error: false, .. } if call_id == "call_1" && output.contains("hello")));
    assert!(matches!(&events[6].body,
        EventBody::Status { state: Some(RunState::Succeeded), message, .. } if message == "Wrote f.txt."));
    assert!(fake.duplicates().is_empty() && fake.gaps().is_empty());
    assert!(
        fake.llm().violations().is_empty(),
        "{:?}",
        fake.llm().violations()
    );
    assert_eq!(fake.llm().remaining(), 0);

    // The spool holds the same events, and is ignored by git.
    let spool = std::fs::read_to_string(dir.path().join(".hangar/session-exec-1.ndjson")).unwrap();
    assert_eq!(spool.lines().count(), 7);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".hangar/.gitignore")).unwrap(),
        "*\n"
    );
}

#[tokio::test]
async fn the_run_token_is_not_visible_to_commands() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start(
        "env",
        vec![
            Turn::tool_call("shell", json!({"command": "env > env.txt"})),
            Turn::text("ok"),
        ],
    )
    .await;
    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    assert!(outcome.is_success());
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    assert!(!env.contains(TOKEN));
}

#[tokio::test]
async fn cancel_frame_stops_a_long_tool() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start(
        "wait",
        vec![
            Turn::tool_call(
                "shell",
                json!({"command": "echo $$ > pid; touch started; sleep 100"}),
            ),
            Turn::text("unreachable"),
        ],
    )
    .await;
    let cancel = CancellationToken::new();
    let run = fake.run_agent(dir.path(), cancel.clone());
    let started = dir.path().join("started");
    let cancel_when_running = async {
        until("the tool to start", WAIT_LIMIT, || started.exists()).await;
        fake.send(ServerToAgent::Cancel);
        Instant::now()
    };
    let (outcome, sent_at) = tokio::join!(run, cancel_when_running);
    let took = sent_at.elapsed();
    assert_eq!(outcome, RunOutcome::Cancelled);
    assert!(
        cancel.is_cancelled(),
        "the cancel frame fires the run's token"
    );
    // Well under the 100 s sleep; the target is about a second.
    assert!(took < Duration::from_secs(3), "cancel took {took:?}");
    let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid));

    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
    assert_eq!(final_state(&events), Some(RunState::Cancelled));
    assert_eq!(
        kinds(&events),
        [
            "user_message",
            "usage",
            "tool_call",
            "tool_result",
            "status"
        ]
    );
    assert!(
        matches!(&events[3].body, EventBody::ToolResult { is_error: true, output, .. } if output.starts_with("command cancelled"))
    );
    assert_eq!(fake.llm_requests().len(), 1);
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[tokio::test]
async fn followup_becomes_a_user_message_at_the_next_turn() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start(
        "start",
        vec![
            Turn::tool_call(
                "shell",
                json!({"command": "touch waiting; while [ ! -f go ]; do sleep 0.02; done; echo went"}),
            ),
            Turn::text("done"),
        ],
    )
    .await;
    let run = fake.run_agent(dir.path(), CancellationToken::new());
    let steer = async {
        // While the tool runs, a person steers; then the tool is let go.
        fake.wait_events("the tool call", |e| {
            kinds(e).contains(&"tool_call".to_owned())
        })
        .await;
        let waiting = dir.path().join("waiting");
        until("the tool to wait", WAIT_LIMIT, || waiting.exists()).await;
        fake.send(ServerToAgent::Followup(Followup {
            message: "Also add a README.".into(),
            from: "ana".into(),
            id: None,
        }));
        // Give the frame a moment to cross before releasing the tool; the
        // assertions below hold whenever it arrives before the run ends.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(dir.path().join("go"), "").unwrap();
    };
    let (outcome, ()) = tokio::time::timeout(WAIT_LIMIT, async { tokio::join!(run, steer) })
        .await
        .unwrap();
    assert!(outcome.is_success(), "{outcome:?}");

    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
    let k = kinds(&events);
    let steer_at = events
        .iter()
        .position(
            |e| matches!(&e.body, EventBody::UserMessage { text } if text == "Also add a README."),
        )
        .expect("the follow-up is in the transcript");
    let result_at = k.iter().position(|k| k == "tool_result").unwrap();
    assert!(steer_at > result_at, "{k:?}");
    // The model's next request carries it as the last user message.
    let requests = fake.llm_requests();
    let next = requests[1]["messages"].as_array().unwrap();
    let last = next.last().unwrap();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"], "Also add a README.");
    assert_eq!(next[next.len() - 2]["role"], "tool");
}

#[tokio::test]
async fn model_error_fails_the_run_with_an_error_event() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start("x", vec![Turn::error(400, "context too long")]).await;
    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    let RunOutcome::Failed { message } = outcome else {
        panic!("expected failure, got {outcome:?}")
    };
    assert!(message.contains("400"), "{message}");
    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
    assert_eq!(kinds(&events), ["user_message", "error", "status"]);
    assert_eq!(final_state(&events), Some(RunState::Failed));
}

#[tokio::test]
async fn cancel_frame_stops_a_hanging_model_call() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start(
        "x",
        vec![Turn::delayed(Duration::from_secs(100), Turn::text("late"))],
    )
    .await;
    let run = fake.run_agent(dir.path(), CancellationToken::new());
    let cancel_when_asked = async {
        until("a model request", WAIT_LIMIT, || {
            !fake.llm_requests().is_empty()
        })
        .await;
        fake.send(ServerToAgent::Cancel);
        Instant::now()
    };
    let (outcome, sent_at) = tokio::join!(run, cancel_when_asked);
    assert_eq!(outcome, RunOutcome::Cancelled);
    assert!(
        sent_at.elapsed() < Duration::from_secs(3),
        "cancel took {:?}",
        sent_at.elapsed()
    );
    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
    assert_eq!(kinds(&events), ["user_message", "status"]);
    assert_eq!(final_state(&events), Some(RunState::Cancelled));
}
