//! `--mcp NAME`: MCP servers configured on the server (`mcp_servers:`), looked
//! up by the CLI, started by the agent with `${VAR}` expanded from its own
//! environment. The server is the real rmcp stdio example of hangar-agent.

use crate::suite::common::hangar_bin;
use hangar_testkit::cluster::{ClusterOptions, TestCluster};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use serde_json::json;
use std::path::{Path, PathBuf};

/// hangar-agent's `mcp_stdio_server` example (built on first use).
fn stdio_server_bin() -> PathBuf {
    // target/<profile>/deps/all-<hash> → target/<profile>/examples/mcp_stdio_server
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/mcp_stdio_server");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "hangar-agent",
                "--example",
                "mcp_stdio_server",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

async fn agent_run(
    dir: &Path,
    llm: &FakeLlm,
    server: Option<&TestCluster>,
    args: &[&str],
) -> std::process::Output {
    // With a server, the model must be one of its providers (the same fake).
    let model = if server.is_some() {
        "fake/test-model"
    } else {
        "openai/fake-model"
    };
    let mut cmd = tokio::process::Command::new(hangar_bin());
    cmd.args(["agent", "run", "--model", model, "--output-format", "json"])
        .args(args)
        .current_dir(dir)
        .env_remove("HANGAR_SERVER_URL")
        .env_remove("HANGAR_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("OPENAI_API_KEY", "sk-fake")
        .env("OPENAI_BASE_URL", llm.base_url())
        .env("HOME", dir)
        // What a run's secret would be: only the agent's environment has it.
        .env("TOOLS_SECRET", "value-from-the-agent-env");
    if let Some(c) = server {
        cmd.env("HANGAR_SERVER_URL", &c.url)
            .env("HANGAR_API_KEY", &c.api_key);
    }
    cmd.output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_by_name_resolves_on_the_server_and_expands_in_the_agent() {
    let llm = FakeLlm::start(vec![
        Turn::tool_call("tools__echo", json!({"text": "hi"})),
        Turn::text("echoed"),
    ])
    .await;
    let extra = format!(
        "mcp_servers:\n  tools:\n    command: {}\n    env: {{ECHO_PREFIX: \"${{TOOLS_SECRET}}:\"}}\n  web:\n    url: http://127.0.0.1:9/mcp\n",
        stdio_server_bin().display()
    );
    let mut options = ClusterOptions::default().with_fake_llm(&llm.base_url());
    options.extra_config.push_str(&extra);
    let cluster = TestCluster::start(&hangar_bin(), options).await.unwrap();

    // The API: names and transports; one spec with its template unexpanded.
    let client = cluster.client();
    let list: serde_json::Value = client.get_json("api/v1/mcp-servers").await.unwrap();
    assert_eq!(
        list,
        json!({"mcp_servers": [
            {"name": "tools", "transport": "stdio"},
            {"name": "web", "transport": "http"}
        ]})
    );
    let one: serde_json::Value = client.get_json("api/v1/mcp-servers/tools").await.unwrap();
    assert_eq!(one["config"]["env"]["ECHO_PREFIX"], "${TOOLS_SECRET}:");

    let dir = tempfile::tempdir().unwrap();
    let out = agent_run(
        dir.path(),
        &llm,
        Some(&cluster),
        &["-p", "echo hi", "--mcp", "tools"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = llm.requests();
    let tools: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"tools__echo"), "{tools:?}");
    let result = requests[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        result["content"], "value-from-the-agent-env:hi",
        "the template was expanded from the agent's environment"
    );

    // Unknown names list what the server has; no server says how to get one.
    let out = agent_run(
        dir.path(),
        &llm,
        Some(&cluster),
        &["-p", "x", "--mcp", "nope"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown MCP server `nope`; configured: tools, web"),
        "{err}"
    );
    let out = agent_run(dir.path(), &llm, None, &["-p", "x", "--mcp", "tools"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HANGAR_SERVER_URL") && err.contains("`tools`"),
        "{err}"
    );
    assert_eq!(llm.remaining(), 0);

    // Cloud runs and schedules store the resolved spec, templates unexpanded
    // (the agent in the sandbox expands them from the run's secrets).
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(hangar_bin())
            .args(args)
            .args(["--output-format", "json"])
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("HANGAR_SERVER_URL", &cluster.url)
            .env("HANGAR_API_KEY", &cluster.api_key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hangar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let run = cli(&[
        "agent",
        "run-cloud",
        "-p",
        "later",
        "--host",
        "nobody",
        "--mcp",
        "tools",
    ]);
    let got = client
        .get_run(run["run_id"].as_str().unwrap())
        .await
        .unwrap();
    let servers = got
        .agent_config
        .and_then(|c| c.mcp_servers)
        .expect("run config has mcp_servers");
    assert_eq!(
        servers["tools"].env.as_ref().unwrap()["ECHO_PREFIX"],
        "${TOOLS_SECRET}:"
    );
    let sched = cli(&[
        "schedule",
        "create",
        "--name",
        "nightly",
        "--cron",
        "0 3 * * *",
        "-p",
        "x",
        "--mcp",
        "web",
    ]);
    assert_eq!(
        sched["agent_config"]["mcp_servers"]["web"]["url"], "http://127.0.0.1:9/mcp",
        "{sched}"
    );
}
