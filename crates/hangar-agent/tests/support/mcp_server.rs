//! A small MCP server for tests, written with rmcp: tools `echo {text}`
//! and `add {a, b}`, and `fail` which reports a tool error. Shared by the
//! stdio example binary and the in-test streamable-HTTP server.

use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParam, CallToolResult, Content, ListToolsResult, PaginatedRequestParam,
    ServerCapabilities, ServerInfo, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use std::sync::Arc;

/// The test server.
#[derive(Debug, Clone, Default)]
pub struct TestMcp {
    /// Prefix for `echo` answers (tells servers apart).
    pub prefix: String,
}

fn schema(value: serde_json::Value) -> Arc<serde_json::Map<String, serde_json::Value>> {
    match value {
        serde_json::Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    }
}

impl ServerHandler for TestMcp {
    fn get_info(&self) -> ServerInfo {
        ServerInfo {
            capabilities: ServerCapabilities::builder().enable_tools().build(),
            ..ServerInfo::default()
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParam>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "echo",
                "Echoes its text.",
                schema(
                    serde_json::json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
                ),
            ),
            Tool::new(
                "add",
                "Adds two numbers.",
                schema(
                    serde_json::json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
                ),
            ),
            Tool::new(
                "fail",
                "Always fails.",
                schema(serde_json::json!({"type": "object"})),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParam,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        match request.name.as_ref() {
            "echo" => {
                let text = args
                    .get("text")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default();
                Ok(CallToolResult::success(vec![Content::text(format!(
                    "{}{text}",
                    self.prefix
                ))]))
            }
            "add" => {
                let n = |k: &str| {
                    args.get(k)
                        .and_then(serde_json::Value::as_f64)
                        .unwrap_or(0.0)
                };
                Ok(CallToolResult::success(vec![Content::text(
                    (n("a") + n("b")).to_string(),
                )]))
            }
            "fail" => Ok(CallToolResult::error(vec![Content::text("it broke")])),
            other => Err(ErrorData::invalid_params(format!("no tool {other}"), None)),
        }
    }
}
