//! MCP servers as tool sources, through `rmcp`.
//!
//! A run's MCP servers come from `--mcp` specs (inline JSON, a JSON file, or
//! the name of a server configured on the Hangar server; see
//! [`parse_mcp_spec`] and [`resolve_mcp_spec`]) or the run config (`mcp_servers`). Each is a stdio
//! server (`command`, `args`, `env`, with `${VAR}` expanded from the agent's
//! environment) or a streamable-HTTP server (`url`, `headers`, expanded the
//! same way). [`McpServers::start`] connects to all of them in parallel,
//! each within a startup timeout; a server that fails is skipped with a
//! warning, or fails the run under `strict`. Every tool of server `s` named
//! `t` is offered to the model as `s__t`. [`McpServers::shutdown`] closes
//! every session and stops stdio servers (stdin closed, then killed after a
//! grace period).

use crate::tools::{ToolContext, ToolError, ToolHandler};
use hangar_protocol::McpServerConfig;
use rmcp::model::{CallToolRequestParam, RawContent, Tool};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// Default bound on connecting to one server and listing its tools.
pub const DEFAULT_MCP_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stdio server may take to exit after its stdin closes.
pub const MCP_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Separator between server and tool names.
pub const MCP_TOOL_SEPARATOR: &str = "__";

/// MCP failures that stop a run from starting.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A `--mcp` spec is neither JSON nor a readable JSON file.
    #[error("invalid --mcp `{spec}`: {reason}")]
    InvalidSpec {
        /// The spec as given (truncated).
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A bare name, but no Hangar server to look it up on.
    #[error(
        "--mcp `{0}` names an MCP server configured on the Hangar server, but no server is set: \
         set HANGAR_SERVER_URL and HANGAR_API_KEY, or pass the server as inline JSON \
         (`{{\"name\": {{\"command\": …}}}}`) or a JSON file"
    )]
    NamedNotAvailable(String),
    /// The Hangar server has no MCP server of that name.
    #[error("unknown MCP server `{name}`; configured: {}", if configured.is_empty() { "none (add `mcp_servers:` to the server config)".to_owned() } else { configured.join(", ") })]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The names the server has.
        configured: Vec<String>,
    },
    /// Looking the name up on the Hangar server failed.
    #[error("--mcp `{name}`: cannot look the name up on the Hangar server: {reason}")]
    Lookup {
        /// The name asked for.
        name: String,
        /// Why.
        reason: String,
    },
    /// A server config is unusable.
    #[error("MCP server `{server}`: {reason}")]
    Config {
        /// Server name.
        server: String,
        /// What is wrong.
        reason: String,
    },
    /// A server did not start (under `--strict-mcp-startup`).
    #[error("MCP server `{server}` did not start: {reason}")]
    Startup {
        /// Server name.
        server: String,
        /// Why.
        reason: String,
    },
}

/// Parses one `--mcp` value: inline JSON (starts with `{`), or a path to a
/// JSON file. Accepted shapes: `{"mcpServers": {name: config}}` or
/// `{name: config}`. A bare word that is not a file is a server name, which
/// only [`resolve_mcp_spec`] can look up ([`McpError::NamedNotAvailable`]).
pub fn parse_mcp_spec(spec: &str) -> Result<BTreeMap<String, McpServerConfig>, McpError> {
    let trimmed = spec.trim();
    let invalid = |reason: String| McpError::InvalidSpec {
        spec: trimmed.chars().take(80).collect(),
        reason,
    };
    let text = if trimmed.starts_with('{') {
        trimmed.to_owned()
    } else if Path::new(trimmed).is_file() {
        std::fs::read_to_string(trimmed)
            .map_err(|e| invalid(format!("cannot read the file: {e}")))?
    } else if !trimmed.is_empty()
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(McpError::NamedNotAvailable(trimmed.to_owned()));
    } else {
        return Err(invalid("not JSON, and no such file".to_owned()));
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let servers = match value.get("mcpServers") {
        Some(inner) => inner.clone(),
        None => value,
    };
    let servers: BTreeMap<String, McpServerConfig> =
        serde_json::from_value(servers).map_err(|e| invalid(e.to_string()))?;
    if servers.is_empty() {
        return Err(invalid("no servers in it".to_owned()));
    }
    for (name, config) in &servers {
        validate(name, config)?;
    }
    Ok(servers)
}

/// [`parse_mcp_spec`], plus bare names looked up on the Hangar server
/// (`GET /api/v1/mcp-servers/{name}`, with an API key or a run token). The
/// spec comes back with its `${VAR}` templates unexpanded: they are expanded
/// where the server starts, from that process's environment. Without
/// `server`, a name is [`McpError::NamedNotAvailable`].
pub async fn resolve_mcp_spec(
    spec: &str,
    server: Option<&hangar_client::Client>,
) -> Result<BTreeMap<String, McpServerConfig>, McpError> {
    let name = match parse_mcp_spec(spec) {
        Err(McpError::NamedNotAvailable(name)) => name,
        other => return other,
    };
    let Some(client) = server else {
        return Err(McpError::NamedNotAvailable(name));
    };
    #[derive(serde::Deserialize)]
    struct Named {
        config: McpServerConfig,
    }
    #[derive(serde::Deserialize)]
    struct Listed {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct List {
        mcp_servers: Vec<Listed>,
    }
    let lookup = |e: hangar_client::ClientError| McpError::Lookup {
        name: name.clone(),
        reason: e.to_string(),
    };
    let path = format!("api/v1/mcp-servers/{}", hangar_client::encode(&name));
    match client.get_json::<Named>(&path).await {
        Ok(named) => {
            validate(&name, &named.config)?;
            Ok(BTreeMap::from([(name, named.config)]))
        }
        Err(e) if e.status() == Some(404) => {
            let list: List = client
                .get_json("api/v1/mcp-servers")
                .await
                .map_err(lookup)?;
            Err(McpError::UnknownName {
                configured: list.mcp_servers.into_iter().map(|s| s.name).collect(),
                name,
            })
        }
        Err(e) => Err(lookup(e)),
    }
}

/// Resolves every `--mcp` value with [`resolve_mcp_spec`] into one map
/// (later specs win on a repeated server name).
pub async fn resolve_mcp_specs(
    specs: &[String],
    server: Option<&hangar_client::Client>,
) -> Result<BTreeMap<String, McpServerConfig>, McpError> {
    let mut all = BTreeMap::new();
    for spec in specs {
        all.extend(resolve_mcp_spec(spec, server).await?);
    }
    Ok(all)
}

fn validate(name: &str, config: &McpServerConfig) -> Result<(), McpError> {
    let bad = |reason: &str| McpError::Config {
        server: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.contains(MCP_TOOL_SEPARATOR) || name.contains('/') {
        return Err(bad("names must be non-empty, without `__` or `/`"));
    }
    match (&config.command, &config.url) {
        (Some(_), Some(_)) => Err(bad(
            "give either `command` (stdio) or `url` (HTTP), not both",
        )),
        (None, None) if config.warp_id.is_some() => Err(bad(
            "shared server references (`warp_id`) are not available yet",
        )),
        (None, None) => Err(bad("needs `command` (stdio) or `url` (streamable HTTP)")),
        _ => Ok(()),
    }
}

/// `${VAR}` replaced by `env(VAR)` (empty, with a warning, when unset).
pub fn expand_vars(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match env(name) {
                    Some(value) => out.push_str(&value),
                    None => tracing::warn!(var = name, "MCP config names an unset variable"),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// How to start a run's MCP servers.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// Bound on connecting to one server and listing its tools.
    pub startup_timeout: Duration,
    /// Fail the run when a server does not start (`--strict-mcp-startup`).
    pub strict: bool,
    /// Working directory of stdio servers.
    pub workdir: std::path::PathBuf,
}

struct Connection {
    name: String,
    service: RunningService<RoleClient, ()>,
    child: Option<tokio::process::Child>,
}

/// The connected MCP servers of a run.
#[derive(Default)]
pub struct McpServers {
    connections: Vec<Connection>,
    tools: Vec<Arc<dyn ToolHandler>>,
    failures: Vec<(String, String)>,
}

impl std::fmt::Debug for McpServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServers")
            .field(
                "connected",
                &self.connections.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .field("tools", &self.tools.len())
            .field("failures", &self.failures)
            .finish()
    }
}

impl McpServers {
    /// Connects to every server (in parallel) and lists its tools.
    pub async fn start(
        servers: &BTreeMap<String, McpServerConfig>,
        options: &McpOptions,
    ) -> Result<McpServers, McpError> {
        let env = |name: &str| std::env::var(name).ok();
        let attempts = servers.iter().map(|(name, config)| async move {
            let started = tokio::time::timeout(
                options.startup_timeout,
                connect(name, config, &options.workdir, &env),
            )
            .await;
            let result = match started {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {:?}", options.startup_timeout)),
            };
            (name.clone(), result)
        });
        let results = futures::future::join_all(attempts).await;
        let mut servers = McpServers::default();
        for (name, result) in results {
            match result {
                Ok((connection, tools)) => {
                    tracing::info!(server = %name, tools = tools.len(), "MCP server connected");
                    for tool in tools {
                        servers.tools.push(Arc::new(McpTool::new(
                            &name,
                            tool,
                            connection.service.peer().clone(),
                        )));
                    }
                    servers.connections.push(connection);
                }
                Err(reason) => {
                    tracing::warn!(server = %name, %reason, "MCP server did not start");
                    servers.failures.push((name, reason));
                }
            }
        }
        if options.strict
            && let Some((server, reason)) = servers.failures.first().cloned()
        {
            servers.shutdown().await;
            return Err(McpError::Startup { server, reason });
        }
        Ok(servers)
    }

    /// The tools of every connected server, named `<server>__<tool>`.
    pub fn tools(&self) -> &[Arc<dyn ToolHandler>] {
        &self.tools
    }

    /// Servers that did not start, with the reason.
    pub fn failures(&self) -> &[(String, String)] {
        &self.failures
    }

    /// Closes every session and stops stdio servers.
    pub async fn shutdown(self) {
        for mut connection in self.connections {
            if let Err(e) = connection.service.cancel().await {
                tracing::debug!(server = %connection.name, error = %e, "MCP session task failed");
            }
            if let Some(child) = connection.child.as_mut() {
                // stdin is closed with the transport: a well-behaved server exits.
                if tokio::time::timeout(MCP_SHUTDOWN_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(server = %connection.name, "MCP server ignored EOF; killing it");
                    let _ = child.kill().await;
                }
            }
            tracing::debug!(server = %connection.name, "MCP server shut down");
        }
    }
}

async fn connect(
    name: &str,
    config: &McpServerConfig,
    workdir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Connection, Vec<Tool>), String> {
    validate(name, config).map_err(|e| e.to_string())?;
    let (service, child) = if let Some(command) = &config.command {
        let mut cmd = tokio::process::Command::new(expand_vars(command, env));
        cmd.args(config.args.iter().flatten().map(|a| expand_vars(a, env)))
            .envs(
                config
                    .env
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), expand_vars(v, env))),
            )
            .env_remove(hangar_protocol::ENV_RUN_TOKEN)
            .current_dir(workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
            return Err("the server's stdio is not available".to_owned());
        };
        let service = ().serve((stdout, stdin)).await.map_err(|e| e.to_string())?;
        (service, Some(child))
    } else if let Some(url) = &config.url {
        let mut headers = reqwest::header::HeaderMap::new();
        for (key, value) in config.headers.iter().flatten() {
            let key = reqwest::header::HeaderName::from_bytes(key.as_bytes())
                .map_err(|e| format!("header `{key}`: {e}"))?;
            let value = reqwest::header::HeaderValue::from_str(&expand_vars(value, env))
                .map_err(|e| format!("header `{key}`: {e}"))?;
            headers.insert(key, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .map_err(|e| e.to_string())?;
        let transport = StreamableHttpClientTransport::with_client(
            client,
            StreamableHttpClientTransportConfig::with_uri(expand_vars(url, env)),
        );
        let service = ().serve(transport).await.map_err(|e| e.to_string())?;
        (service, None)
    } else {
        return Err("needs `command` or `url`".to_owned());
    };
    let tools = service
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| format!("cannot list tools: {e}"))?;
    Ok((
        Connection {
            name: name.to_owned(),
            service,
            child,
        },
        tools,
    ))
}

/// One MCP tool as a [`ToolHandler`].
pub struct McpTool {
    full_name: String,
    server: String,
    tool: String,
    description: String,
    schema: serde_json::Value,
    peer: Peer<RoleClient>,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpTool")
            .field("name", &self.full_name)
            .finish()
    }
}

impl McpTool {
    fn new(server: &str, tool: Tool, peer: Peer<RoleClient>) -> Self {
        let mut schema = serde_json::Value::Object((*tool.input_schema).clone());
        if schema.get("type").is_none() {
            schema["type"] = serde_json::json!("object");
        }
        McpTool {
            full_name: format!("{server}{MCP_TOOL_SEPARATOR}{}", tool.name),
            server: server.to_owned(),
            description: tool.description.as_deref().map_or_else(
                || format!("Tool `{}` of MCP server `{server}`.", tool.name),
                str::to_owned,
            ),
            tool: tool.name.into_owned(),
            schema,
            peer,
        }
    }
}

#[async_trait::async_trait]
impl ToolHandler for McpTool {
    fn name(&self) -> &str {
        &self.full_name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> serde_json::Value {
        self.schema.clone()
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let request = CallToolRequestParam {
            name: self.tool.clone().into(),
            arguments: args.as_object().cloned(),
        };
        let result = tokio::select! {
            result = self.peer.call_tool(request) => result,
            () = ctx.cancel.cancelled() => return Err(ToolError::Model("cancelled".to_owned())),
        };
        let result = result
            .map_err(|e| ToolError::Model(format!("MCP server `{}` failed: {e}", self.server)))?;
        let mut parts = Vec::new();
        for content in &result.content {
            match &content.raw {
                RawContent::Text(text) => parts.push(text.text.clone()),
                RawContent::Image(image) => parts.push(format!("[image: {}]", image.mime_type)),
                RawContent::Audio(audio) => parts.push(format!("[audio: {}]", audio.mime_type)),
                RawContent::Resource(resource) => parts.push(
                    serde_json::to_string(&resource.resource)
                        .unwrap_or_else(|_| "[resource]".into()),
                ),
                RawContent::ResourceLink(link) => parts.push(format!("[resource: {}]", link.uri)),
            }
        }
        if parts.is_empty()
            && let Some(structured) = &result.structured_content
        {
            parts.push(structured.to_string());
        }
        let text = parts.join("\n");
        if result.is_error.unwrap_or(false) {
            Err(ToolError::Model(if text.is_empty() {
                "the tool reported an error".to_owned()
            } else {
                text
            }))
        } else {
            Ok(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_in_every_form() {
        let inline = parse_mcp_spec(r#"{"fs": {"command": "srv", "args": ["-x"]}}"#).unwrap();
        assert_eq!(inline["fs"].command.as_deref(), Some("srv"));
        let wrapped =
            parse_mcp_spec(r#"{"mcpServers": {"web": {"url": "http://127.0.0.1:1/mcp"}}}"#)
                .unwrap();
        assert!(wrapped["web"].url.is_some());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mcp.json");
        std::fs::write(&file, r#"{"a": {"command": "x"}}"#).unwrap();
        assert!(
            parse_mcp_spec(file.to_str().unwrap())
                .unwrap()
                .contains_key("a")
        );

        let err = parse_mcp_spec("github").unwrap_err().to_string();
        assert!(err.contains("HANGAR_SERVER_URL"), "{err}");
        let err = parse_mcp_spec(r#"{"a": {"command": "x", "url": "y"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
        let err = parse_mcp_spec(r#"{"a": {"cmd": "x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cmd"), "{err}");
        assert!(parse_mcp_spec("{nope").is_err());
    }

    #[test]
    fn vars_expand() {
        let env = |name: &str| (name == "TOKEN").then(|| "t0k".to_owned());
        assert_eq!(expand_vars("Bearer ${TOKEN}!", &env), "Bearer t0k!");
        assert_eq!(expand_vars("${MISSING}x${", &env), "x${");
    }
}
