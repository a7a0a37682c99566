//! The agent loop against the fake OpenAI and Anthropic servers (real wire
//! formats, SSE): multi-turn and parallel tool use, 429 then success, a
//! stream cut mid-answer, compaction, a follow-up mid-run, S6 and C6.

use hangar_agent::{
    Agent, COMPACTION_PREFIX, CancellationToken, EventBody, EventSink, LoopConfig, ModelProvider,
    Redactor, RunOutcome, SinkError, ToolRegistry,
};
use hangar_llm::{AnthropicConfig, AnthropicProvider, OpenAiConfig, OpenAiProvider, RetryPolicy};
use hangar_protocol::session::Followup;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

pub const WIRES: [Wire; 2] = [Wire::OpenAi, Wire::Anthropic];

pub fn provider(llm: &FakeLlm, wire: Wire) -> Arc<dyn ModelProvider> {
    let retry = RetryPolicy {
        max_attempts: 3,
        unreachable_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    match wire {
        Wire::OpenAi => Arc::new(
            OpenAiProvider::new(
                OpenAiConfig::new(llm.base_url())
                    .with_api_key("sk")
                    .with_retry(retry),
            )
            .unwrap(),
        ),
        Wire::Anthropic => Arc::new(
            AnthropicProvider::new(
                AnthropicConfig::new(llm.anthropic_base_url())
                    .with_api_key("sk")
                    .with_retry(retry),
            )
            .unwrap(),
        ),
    }
}

#[derive(Default)]
pub struct VecSink(pub Mutex<Vec<EventBody>>);

#[async_trait::async_trait]
impl EventSink for VecSink {
    async fn emit(&self, event: EventBody) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(event);
        Ok(())
    }
}

impl VecSink {
    pub fn events(&self) -> Vec<EventBody> {
        self.0.lock().unwrap().clone()
    }
    pub fn kinds(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
    pub fn results(&self) -> Vec<(String, String, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                EventBody::ToolResult {
                    name,
                    output,
                    is_error,
                    ..
                } => Some((name, output, is_error)),
                _ => None,
            })
            .collect()
    }
}

pub fn agent(llm: &FakeLlm, wire: Wire, dir: &Path, tools: ToolRegistry) -> Agent {
    Agent::new(
        provider(llm, wire),
        tools,
        LoopConfig::new("fake-model", dir, None),
    )
}

pub async fn run(agent: &Agent, prompt: &str) -> (RunOutcome, VecSink) {
    let sink = VecSink::default();
    let (_tx, mut rx) = mpsc::channel(4);
    let outcome = agent
        .run(prompt, &sink, &mut rx, &CancellationToken::new())
        .await
        .unwrap();
    (outcome, sink)
}

fn check(llm: &FakeLlm) {
    assert!(llm.violations().is_empty(), "{:?}", llm.violations());
    assert_eq!(llm.remaining(), 0);
}

#[tokio::test]
async fn multi_turn_and_parallel_tool_calls() {
    for wire in WIRES {
        let dir = tempfile::tempdir().unwrap();
        let llm = FakeLlm::start(vec![
            Turn::tool_calls([
                ("write_file", json!({"path": "a.txt", "content": "alpha\n"})),
                (
                    "write_file",
                    json!({"path": "src/b.txt", "content": "beta\n"}),
                ),
            ]),
            Turn::tool_calls([
                ("list_files", json!({})),
                ("grep", json!({"pattern": "^b"})),
            ]),
            Turn::tool_call(
                "edit_file",
                json!({"path": "a.txt", "old_string": "alpha", "new_string": "ALPHA"}),
            ),
            Turn::tool_call("read_file", json!({"path": "a.txt"})),
            Turn::text("Done."),
        ])
        .await;
        let a = agent(&llm, wire, dir.path(), ToolRegistry::with_builtins());
        let (outcome, sink) = run(&a, "write files").await;
        assert_eq!(
            outcome,
            RunOutcome::Succeeded {
                message: "Done.".into()
            },
            "{wire:?}"
        );
        check(&llm);
        let results = sink.results();
        assert_eq!(results.len(), 6, "{wire:?}: {results:?}");
        assert!(
            results.iter().all(|(_, _, err)| !err),
            "{wire:?}: {results:?}"
        );
        assert_eq!(results[2].1, "a.txt\nsrc/b.txt\n");
        assert_eq!(results[3].1, "src/b.txt:1:beta\n");
        assert_eq!(results[5].1, "ALPHA\n");
        // The second request answered both parallel calls.
        let requests = llm.requests();
        assert_eq!(requests.len(), 5);
    }
}

#[tokio::test]
async fn rate_limit_then_success_and_a_cut_stream_is_retried() {
    for wire in WIRES {
        let dir = tempfile::tempdir().unwrap();
        let llm = FakeLlm::start(vec![
            Turn::rate_limited(0),
            Turn::tool_call("shell", json!({"command": "echo hi"})),
            Turn::CutStream,
            Turn::text("ok"),
        ])
        .await;
        let a = agent(&llm, wire, dir.path(), ToolRegistry::with_builtins());
        let (outcome, sink) = run(&a, "go").await;
        assert_eq!(
            outcome,
            RunOutcome::Succeeded {
                message: "ok".into()
            },
            "{wire:?}"
        );
        check(&llm);
        assert_eq!(llm.requests().len(), 4);
        // The cut answer left nothing half-reported.
        assert_eq!(
            sink.kinds(),
            [
                "user_message",
                "usage",
                "tool_call",
                "tool_result",
                "usage",
                "assistant_message",
                "status"
            ],
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn compaction_replaces_old_turns_with_a_summary() {
    for wire in WIRES {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.txt"), "x".repeat(4000) + "\n").unwrap();
        let llm = FakeLlm::start(vec![
            Turn::tool_call("read_file", json!({"path": "big.txt"})),
            Turn::tool_call("read_file", json!({"path": "big.txt", "limit": 1})),
            Turn::text("SUMMARY: read big.txt twice"),
            Turn::text("finished"),
        ])
        .await;
        let mut config = LoopConfig::new("fake-model", dir.path(), None);
        config.context_window = 1000;
        config.keep_recent_messages = 2;
        let a = Agent::new(provider(&llm, wire), ToolRegistry::with_builtins(), config);
        let (outcome, sink) = run(&a, "read it").await;
        assert_eq!(
            outcome,
            RunOutcome::Succeeded {
                message: "finished".into()
            },
            "{wire:?}"
        );
        check(&llm);
        let requests = llm.requests();
        assert_eq!(requests.len(), 4);
        // The summary call offers no tools and carries the old turns.
        assert!(
            requests[2]
                .get("tools")
                .is_none_or(|t| t.as_array().is_none_or(Vec::is_empty))
        );
        assert!(requests[2].to_string().contains("xxxx"), "{wire:?}");
        // The next call has the summary instead of the first exchange.
        let last = requests[3].to_string();
        assert!(last.contains(COMPACTION_PREFIX), "{wire:?}: {last}");
        assert!(last.contains("SUMMARY: read big.txt twice"));
        assert!(last.contains("read it"), "the task is kept");
        assert_eq!(
            last.matches(&"x".repeat(4000)).count(),
            1,
            "one big output left: {wire:?}"
        );
        assert!(sink.events().iter().any(
            |e| matches!(e, EventBody::Status { state: None, message, .. } if message.contains("compacted"))
        ));
    }
}

#[tokio::test]
async fn a_followup_sent_mid_run_joins_at_the_next_turn() {
    for wire in WIRES {
        let dir = tempfile::tempdir().unwrap();
        let llm = FakeLlm::start(vec![
            Turn::delayed(
                Duration::from_millis(300),
                Turn::tool_call("shell", json!({"command": "true"})),
            ),
            Turn::text("did both"),
        ])
        .await;
        let a = agent(&llm, wire, dir.path(), ToolRegistry::with_builtins());
        let sink = VecSink::default();
        let (tx, mut rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let (outcome, ()) = tokio::join!(a.run("first", &sink, &mut rx, &cancel), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(Followup {
                message: "also the docs".into(),
                from: "ana".into(),
                id: None,
            })
            .await
            .unwrap();
        });
        assert!(outcome.unwrap().is_success());
        check(&llm);
        let second = llm.requests()[1].to_string();
        assert!(second.contains("also the docs"), "{wire:?}: {second}");
        assert_eq!(
            sink.kinds(),
            [
                "user_message",
                "usage",
                "tool_call",
                "tool_result",
                "user_message",
                "usage",
                "assistant_message",
                "status"
            ]
        );
    }
}

#[tokio::test]
async fn s6_file_tools_refuse_escapes() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "top secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    let target = outside.path().join("new.txt");
    let llm = FakeLlm::start(vec![
        Turn::tool_calls([
            ("read_file", json!({"path": "../secret.txt"})),
            (
                "read_file",
                json!({"path": outside.path().join("secret.txt")}),
            ),
            ("read_file", json!({"path": "link/secret.txt"})),
            ("write_file", json!({"path": target, "content": "x"})),
            (
                "write_file",
                json!({"path": "link/new.txt", "content": "x"}),
            ),
            (
                "edit_file",
                json!({"path": "link/secret.txt", "old_string": "top", "new_string": "no"}),
            ),
            ("list_files", json!({"path": "link"})),
            ("grep", json!({"pattern": "secret", "path": "../"})),
            (
                "report_artifact",
                json!({"type": "file", "path": "link/secret.txt"}),
            ),
        ]),
        Turn::text("refused"),
    ])
    .await;
    let a = agent(
        &llm,
        Wire::OpenAi,
        dir.path(),
        ToolRegistry::with_builtins(),
    );
    let (outcome, sink) = run(&a, "escape").await;
    assert!(outcome.is_success());
    let results = sink.results();
    assert_eq!(results.len(), 9);
    for (name, output, is_error) in &results {
        assert!(is_error, "{name} was allowed: {output}");
        assert!(output.contains("outside the workspace"), "{name}: {output}");
        assert!(!output.contains("top secret"));
    }
    assert!(!target.exists());
    assert!(!outside.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "top secret"
    );
}

#[tokio::test]
async fn c6_secrets_never_reach_the_transcript() {
    const SECRET: &str = "SECRET-VALUE-123";
    let dir = tempfile::tempdir().unwrap();
    // Split across writes (and so across pipe reads), in tool arguments, and
    // straddling the head/tail cut of a long output.
    let split = "printf 'SECRET-VA'; sleep 0.2; printf 'LUE-123\\n'";
    let at_cut = "head -c 15355 /dev/zero | tr '\\0' a; printf 'SECRET-VALUE-123'; head -c 40000 /dev/zero | tr '\\0' b";
    let llm = FakeLlm::start(vec![
        Turn::tool_calls([
            ("shell", json!({"command": split})),
            ("shell", json!({"command": at_cut})),
            (
                "write_file",
                json!({"path": "leak.txt", "content": format!("key={SECRET}")}),
            ),
        ]),
        Turn::tool_call("read_file", json!({"path": "leak.txt"})),
        Turn::text(format!("the key is {SECRET}")),
    ])
    .await;
    let a = agent(
        &llm,
        Wire::OpenAi,
        dir.path(),
        ToolRegistry::with_builtins(),
    )
    .with_redactor(Arc::new(Redactor::new([SECRET])));
    let (outcome, sink) = run(&a, "leak it").await;
    assert!(outcome.is_success());
    let transcript = serde_json::to_string(&sink.events()).unwrap();
    assert!(!transcript.contains(SECRET));
    assert!(transcript.contains("[REDACTED]"));
    let results = sink.results();
    assert_eq!(results[0].1, "exit code: 0\n[REDACTED]\n");
    // Neither half of the value straddling the head/tail cut survives.
    assert!(!results[1].1.contains("SECRE") && !results[1].1.contains("E-123"));
    // Tool output the model is told back is redacted too (its own tool
    // call arguments are its own words and go back unchanged).
    let requests = llm.requests();
    let tool_messages: Vec<String> = requests[2]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].to_string())
        .collect();
    assert_eq!(tool_messages.len(), 4);
    assert!(
        tool_messages.iter().all(|m| !m.contains(SECRET)),
        "{tool_messages:?}"
    );
}

#[tokio::test]
async fn report_artifact_records_an_artifact_event() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plan.md"), "# plan").unwrap();
    let llm = FakeLlm::start(vec![
        Turn::tool_calls([
            (
                "report_artifact",
                json!({"type": "pull_request", "url": "https://git.example/pr/1", "title": "Fix"}),
            ),
            (
                "report_artifact",
                json!({"type": "plan", "path": "plan.md"}),
            ),
            ("report_artifact", json!({"type": "pull_request"})),
        ]),
        Turn::text("ok"),
    ])
    .await;
    let a = agent(
        &llm,
        Wire::OpenAi,
        dir.path(),
        ToolRegistry::with_builtins(),
    );
    let (_, sink) = run(&a, "ship").await;
    let artifacts: Vec<EventBody> = sink
        .events()
        .into_iter()
        .filter(|e| matches!(e, EventBody::Artifact { .. }))
        .collect();
    assert_eq!(
        artifacts,
        [
            EventBody::Artifact {
                artifact_type: "pull_request".into(),
                url: Some("https://git.example/pr/1".into()),
                path: None,
                title: Some("Fix".into())
            },
            EventBody::Artifact {
                artifact_type: "plan".into(),
                url: None,
                path: Some("plan.md".into()),
                title: None
            },
        ]
    );
    assert!(sink.results()[2].2, "a PR without url is a tool error");
}

#[tokio::test]
async fn read_file_pages_and_refuses_binaries() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bin"), [0u8, 1, 2, 255]).unwrap();
    std::fs::write(dir.path().join("lines"), "1\n2\n3\n4\n").unwrap();
    std::fs::write(dir.path().join("dup"), "x x\n").unwrap();
    std::fs::write(dir.path().join(".gitignore"), "ignored/\n").unwrap();
    std::fs::create_dir(dir.path().join("ignored")).unwrap();
    std::fs::write(dir.path().join("ignored/x"), "x").unwrap();
    let llm = FakeLlm::start(vec![
        Turn::tool_calls([
            ("read_file", json!({"path": "bin"})),
            (
                "read_file",
                json!({"path": "lines", "offset": 2, "limit": 2}),
            ),
            (
                "edit_file",
                json!({"path": "dup", "old_string": "x", "new_string": "y"}),
            ),
            (
                "edit_file",
                json!({"path": "dup", "old_string": "z", "new_string": "y"}),
            ),
            (
                "edit_file",
                json!({"path": "dup", "old_string": "x", "new_string": "y", "replace_all": true}),
            ),
            ("list_files", json!({"glob": "*"})),
        ]),
        Turn::text("ok"),
    ])
    .await;
    let a = agent(
        &llm,
        Wire::OpenAi,
        dir.path(),
        ToolRegistry::with_builtins(),
    );
    let (_, sink) = run(&a, "files").await;
    let r = sink.results();
    assert!(r[0].2 && r[0].1.contains("binary file"), "{:?}", r[0]);
    assert_eq!(
        r[1].1,
        "2\n3\n[… lines 2-3 of 4 shown; read more with offset=4]\n"
    );
    assert!(r[2].2 && r[2].1.contains("occurs 2 times"), "{:?}", r[2]);
    assert!(r[3].2 && r[3].1.contains("not found"), "{:?}", r[3]);
    assert_eq!(r[4].1, "replaced 2 occurrences in dup");
    assert_eq!(r[5].1, "bin\ndup\nlines\n");
}
