//! The shell tool as the model experiences it: timeouts and output caps.

use super::fake_hangar::{FakeHangar, Turn, final_state};
use hangar_agent::{CancellationToken, EventBody};
use serde_json::json;
use std::time::Duration;

fn tool_result(events: &[hangar_agent::SessionEvent]) -> (String, bool) {
    events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::ToolResult {
                output, is_error, ..
            } => Some((output.clone(), *is_error)),
            _ => None,
        })
        .expect("a tool result")
}

/// Whether a process is gone or a zombie.
fn is_dead(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')').is_some_and(|(_, rest)| {
                matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))
            })
        })
        .unwrap_or(true)
}

#[tokio::test]
async fn shell_timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let command = "sleep 100 & echo $! > bg; echo $$ > leader; sleep 100";
    let fake = FakeHangar::start(
        "hang",
        vec![
            Turn::tool_call("shell", json!({"command": command, "timeout_ms": 300})),
            Turn::text("it hung"),
        ],
    )
    .await;
    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    assert!(
        outcome.is_success(),
        "a tool timeout is the model's problem, not the run's: {outcome:?}"
    );

    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
    let (output, is_error) = tool_result(&events);
    assert!(is_error);
    assert!(
        output.starts_with("command timed out after 300 ms and was killed"),
        "{output}"
    );

    for file in ["bg", "leader"] {
        let pid: i32 = std::fs::read_to_string(dir.path().join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let what = format!("{file} process {pid} to die after the timeout");
        hangar_testkit::poll::until(&what, Duration::from_secs(2), || is_dead(pid)).await;
    }
    // The model was told.
    let requests = fake.llm_requests();
    let last = requests[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(last["content"].as_str().unwrap().contains("timed out"));
}

#[tokio::test]
async fn shell_output_is_capped_keeping_head_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHangar::start(
        "count",
        vec![
            Turn::tool_call(
                "shell",
                json!({"command": "echo BEGIN; seq 1 200000; echo END"}),
            ),
            Turn::text("counted"),
        ],
    )
    .await;
    let outcome = fake.run_agent(dir.path(), CancellationToken::new()).await;
    assert!(outcome.is_success());
    let events = fake
        .wait_events("the final status", |e| final_state(e).is_some())
        .await;
    let (output, is_error) = tool_result(&events);
    assert!(!is_error);
    assert!(
        output.starts_with("exit code: 0\nBEGIN\n1\n2\n3\n"),
        "{}",
        &output[..100]
    );
    assert!(
        output.ends_with("199999\n200000\nEND\n"),
        "{}",
        &output[output.len() - 100..]
    );
    assert!(output.contains(" bytes omitted …]"));
    assert!(output.len() < 32 * 1024, "{} bytes", output.len());
}
