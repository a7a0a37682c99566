//! MCP servers as tools: a real stdio server (the `mcp_stdio_server`
//! example, rmcp) and a real streamable-HTTP server (rmcp, in this test).

use super::runtime::{VecSink, Wire, provider};
use crate::support::mcp_server::TestMcp;
use hangar_agent::mcp::{McpOptions, McpServers, parse_mcp_spec};
use hangar_agent::{Agent, CancellationToken, LoopConfig, ToolRegistry};
use hangar_testkit::fake_llm::{FakeLlm, Turn};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

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

async fn http_server() -> (String, tokio::task::JoinHandle<()>) {
    let service = StreamableHttpService::new(
        || {
            Ok(TestMcp {
                prefix: "http:".into(),
            })
        },
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/mcp"), task)
}

fn options(dir: &std::path::Path, strict: bool) -> McpOptions {
    McpOptions {
        startup_timeout: Duration::from_secs(20),
        strict,
        workdir: dir.to_path_buf(),
    }
}

#[tokio::test]
async fn stdio_and_http_servers_serve_tools_to_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = http_server().await;
    let spec = json!({
        "mcpServers": {
            "local": {"command": stdio_server_bin(), "env": {"ECHO_PREFIX": "${HOME}:"}},
            "web": {"url": url, "headers": {"X-Test": "${HOME}"}}
        }
    })
    .to_string();
    let servers = parse_mcp_spec(&spec).unwrap();
    let mcp = McpServers::start(&servers, &options(dir.path(), true))
        .await
        .unwrap();
    let mut names: Vec<String> = mcp.tools().iter().map(|t| t.name().to_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "local__add",
            "local__echo",
            "local__fail",
            "web__add",
            "web__echo",
            "web__fail"
        ]
    );

    let mut tools = ToolRegistry::with_builtins();
    for tool in mcp.tools() {
        tools.register(tool.clone());
    }
    let llm = FakeLlm::start(vec![
        Turn::tool_calls([
            ("local__echo", json!({"text": "hi"})),
            ("web__add", json!({"a": 1, "b": 2})),
            ("web__fail", json!({})),
        ]),
        Turn::text("ok"),
    ])
    .await;
    let agent = Agent::new(
        provider(&llm, Wire::OpenAi),
        tools,
        LoopConfig::new("m", dir.path(), None),
    );
    let sink = VecSink::default();
    let (_tx, mut rx) = tokio::sync::mpsc::channel(1);
    let outcome = agent
        .run("use mcp", &sink, &mut rx, &CancellationToken::new())
        .await
        .unwrap();
    assert!(outcome.is_success());
    let home = std::env::var("HOME").unwrap_or_default();
    let results = sink.results();
    assert_eq!(
        results[0],
        ("local__echo".into(), format!("{home}:hi"), false)
    );
    assert_eq!(results[1], ("web__add".into(), "3".into(), false));
    assert_eq!(results[2], ("web__fail".into(), "it broke".into(), true));
    let first = &llm.requests()[0]["tools"];
    assert!(first.to_string().contains("local__echo"));

    tokio::time::timeout(Duration::from_secs(10), mcp.shutdown())
        .await
        .unwrap();
    server.abort();
}

#[tokio::test]
async fn a_server_that_does_not_start_is_skipped_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let servers = parse_mcp_spec(
        &json!({
            "ok": {"command": stdio_server_bin()},
            "broken": {"command": "/nonexistent/mcp-server"}
        })
        .to_string(),
    )
    .unwrap();
    let mcp = McpServers::start(&servers, &options(dir.path(), false))
        .await
        .unwrap();
    assert_eq!(mcp.tools().len(), 3);
    assert_eq!(mcp.failures().len(), 1);
    assert_eq!(mcp.failures()[0].0, "broken");
    mcp.shutdown().await;

    let err = McpServers::start(&servers, &options(dir.path(), true))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`broken` did not start"), "{err}");
}
