//! `GET /mcp-servers` and `GET /mcp-servers/{server}`: the named MCP servers
//! of the server config (`mcp_servers:`), for `--mcp NAME`.
//!
//! The config is server-wide and holds no team data: every API key and run
//! token may read it. Specs are returned as configured, `${VAR}` templates
//! unexpanded; the agent expands them from its own environment.

use crate::AppState;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hangar_protocol::McpServerConfig;
use serde_json::{Value, json};

/// `stdio` or `http`.
fn transport(server: &McpServerConfig) -> &'static str {
    if server.url.is_some() {
        "http"
    } else {
        "stdio"
    }
}

/// Lists the configured MCP servers: names and transports.
#[utoipa::path(get, path = "/mcp-servers", tag = "agent", operation_id = "listMcpServers", responses((status = 200, description = "Named MCP servers: `{mcp_servers: [{name, transport}]}`", body = Object), crate::error::ProblemResponses))]
pub async fn list(State(app): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    authenticate(app.store.as_ref(), &headers).await?;
    let servers: Vec<Value> = app
        .config
        .mcp_servers
        .iter()
        .map(|(name, s)| json!({"name": name, "transport": transport(s)}))
        .collect();
    Ok(Json(json!({ "mcp_servers": servers })))
}

/// One configured MCP server: `{name, transport, config}`, templates unexpanded.
#[utoipa::path(get, path = "/mcp-servers/{server}", tag = "agent", operation_id = "getMcpServer", params(("server" = String, Path, description = "Name in the server's `mcp_servers` config")), responses((status = 200, description = "The server's spec", body = Object), crate::error::ProblemResponses))]
pub async fn get_one(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(server): Path<String>,
) -> ApiResult<Json<Value>> {
    authenticate(app.store.as_ref(), &headers).await?;
    let servers = &app.config.mcp_servers;
    let Some(config) = servers.get(&server) else {
        let names: Vec<&str> = servers.keys().map(String::as_str).collect();
        return Err(ApiError::NotFound(if names.is_empty() {
            format!("unknown MCP server `{server}`: this server has no `mcp_servers` configured")
        } else {
            format!(
                "unknown MCP server `{server}`; configured: {}",
                names.join(", ")
            )
        }));
    };
    Ok(Json(
        json!({"name": server, "transport": transport(config), "config": config}),
    ))
}
