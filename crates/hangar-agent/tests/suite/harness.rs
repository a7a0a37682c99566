//! `--harness claude` against a fake `claude` CLI script: its stream-json
//! output becomes session events, secrets are redacted, its exit status is
//! the outcome.

use super::runtime::VecSink;
use hangar_agent::{CancellationToken, EventBody, LocalRun, RunOutcome, run_local};
use std::os::unix::fs::PermissionsExt;

fn fake_cli(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("claude");
    std::fs::write(
        &path,
        format!("#!/bin/bash\nprintf '%s\\n' \"$@\" > \"$PWD/args.txt\"\n{body}"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_fake_claude_cli_runs_as_the_harness() {
    let bin = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let script = fake_cli(
        bin.path(),
        r#"echo '{"type":"system","subtype":"init"}'
echo '{"type":"assistant","message":{"content":[{"type":"text","text":"Looking"},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}}'
echo '{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"a.txt"}]}}'
echo '{"type":"result","result":"Finished the task","is_error":false}'
"#,
    );
    let mut opts = LocalRun::new("do the thing", work.path());
    opts.harness = Some("claude".into());
    opts.harness_program = Some(script);
    let sink = VecSink::default();
    let report = run_local(opts, &sink, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        RunOutcome::Succeeded {
            message: "Finished the task".into()
        }
    );
    assert_eq!(
        sink.kinds(),
        [
            "user_message",
            "assistant_message",
            "tool_call",
            "tool_result",
            "status"
        ]
    );
    let args = std::fs::read_to_string(work.path().join("args.txt")).unwrap();
    assert!(
        args.starts_with("-p\ndo the thing\n--output-format\nstream-json\n"),
        "{args}"
    );

    // A failing CLI fails the run with its stderr.
    let script = fake_cli(bin.path(), "echo 'no auth' >&2; exit 3\n");
    let mut opts = LocalRun::new("x", work.path());
    opts.harness = Some("claude".into());
    opts.harness_program = Some(script);
    let sink = VecSink::default();
    let report = run_local(opts, &sink, CancellationToken::new())
        .await
        .unwrap();
    assert!(
        matches!(&report.outcome, RunOutcome::Failed { message } if message.contains("no auth"))
    );
    assert!(matches!(
        sink.events().last(),
        Some(EventBody::Status { .. })
    ));
}
