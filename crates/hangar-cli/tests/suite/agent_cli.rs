//! `hangar agent run -p …` unmanaged, with no Hangar server: a provider from
//! the environment (the fake OpenAI server), a scratch directory, JSON output.

use crate::suite::common::hangar_bin;
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;

async fn hangar_agent(dir: &std::path::Path, llm: &FakeLlm, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(hangar_bin())
        .arg("agent")
        .arg("run")
        .args(args)
        .current_dir(dir)
        .env_remove("HANGAR_SERVER_URL")
        .env_remove("HANGAR_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("OPENAI_API_KEY", "sk-fake")
        .env("OPENAI_BASE_URL", llm.base_url())
        .env("HOME", dir)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn unmanaged_run_edits_a_file_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeting.txt"), "hello world\n").unwrap();
    let llm = FakeLlm::start(vec![
        Turn::tool_call("read_file", json!({"path": "greeting.txt"})),
        Turn::tool_call(
            "edit_file",
            json!({"path": "greeting.txt", "old_string": "world", "new_string": "hangar"}),
        ),
        Turn::text("Changed the greeting."),
    ])
    .await;
    let out = hangar_agent(
        dir.path(),
        &llm,
        &[
            "-p",
            "Greet hangar instead of the world",
            "--model",
            "openai/fake-model",
            "--output-format",
            "json",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("greeting.txt")).unwrap(),
        "hello hangar\n"
    );
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["state"], "SUCCEEDED");
    assert_eq!(result["result"], "Changed the greeting.");
    assert_eq!(result["model"], "openai/fake-model");
    assert!(result["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(llm.violations().is_empty(), "{:?}", llm.violations());
    assert_eq!(llm.remaining(), 0);
    let requests = llm.requests();
    assert_eq!(requests[0]["model"], "fake-model");
    let tool = requests[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(tool["content"], "hello world\n");
}

#[tokio::test]
async fn output_formats_and_failure_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let llm = FakeLlm::start(vec![
        Turn::text("All good."),
        Turn::error(400, "bad request"),
    ])
    .await;
    let out = hangar_agent(
        dir.path(),
        &llm,
        &[
            "-p",
            "hi",
            "--model",
            "openai/m",
            "--output-format",
            "ndjson",
        ],
    )
    .await;
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["user_message", "usage", "assistant_message", "status"]
    );
    assert_eq!(lines[3]["state"], "SUCCEEDED");
    assert_eq!(lines[3]["seq"], 4);

    // A failed run exits non-zero; text prints the final message.
    let out = hangar_agent(
        dir.path(),
        &llm,
        &["-p", "hi", "--model", "openai/m", "--output-format", "text"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("model call failed"));

    // A bare --mcp name needs a server to look it up on; without one that is explained.
    let out = hangar_agent(
        dir.path(),
        &llm,
        &["-p", "hi", "--model", "openai/m", "--mcp", "github"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`github`") && err.contains("HANGAR_SERVER_URL"),
        "{err}"
    );
}
