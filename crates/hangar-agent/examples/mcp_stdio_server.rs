//! A stdio MCP server (rmcp) used by hangar-agent's MCP tests: serves the
//! test tools on stdin/stdout until stdin closes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support

#[path = "../tests/support/mcp_server.rs"]
mod mcp_server;

use rmcp::ServiceExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let prefix = std::env::var("ECHO_PREFIX").unwrap_or_default();
    let service = mcp_server::TestMcp { prefix }
        .serve(rmcp::transport::stdio())
        .await
        .unwrap();
    let _ = service.waiting().await;
}
