//! The tools the model can call: a [`ToolHandler`] trait, a [`ToolRegistry`]
//! that dispatches calls by name, and the built-in tools.
//!
//! Tool failures are normally answers for the model ([`ToolError::Model`]):
//! bad arguments, an unknown tool, a command that timed out. Only
//! [`ToolError::Fatal`] ends the run.

mod artifact;
mod fs;
mod grep;
mod list;
mod output;
mod shell;
mod workspace;

pub use artifact::{ARTIFACT_TOOL, ReportArtifactTool};
pub use fs::{EditFileTool, MAX_READ_BYTES, ReadFileTool, WriteFileTool};
pub use grep::{GrepTool, MAX_GREP_MATCHES, grep_workspace};
pub use list::{ListFilesTool, MAX_LISTED_FILES};
pub use output::{CappedOutput, DEFAULT_HEAD_BYTES, DEFAULT_TAIL_BYTES};
pub use shell::{DEFAULT_SHELL_TIMEOUT, KILL_GRACE, MAX_SHELL_TIMEOUT, ShellTool};
pub use workspace::resolve_in_workspace;

use crate::redact::Redactor;

use hangar_protocol::llm::{FunctionDef, ToolSpec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a tool call may use.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The run's working directory; tools stay inside it.
    pub workdir: PathBuf,
    /// Fires when the run is cancelled; long-running tools stop promptly.
    pub cancel: CancellationToken,
    /// The model's id for this call.
    pub call_id: String,
    /// Secrets to blank out of streamed output before it is capped.
    pub redactor: Arc<Redactor>,
}

impl ToolContext {
    /// A context with no secrets to redact.
    pub fn new(
        workdir: impl Into<PathBuf>,
        cancel: CancellationToken,
        call_id: impl Into<String>,
    ) -> Self {
        ToolContext {
            workdir: workdir.into(),
            cancel,
            call_id: call_id.into(),
            redactor: Arc::default(),
        }
    }
}

/// How a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Tell the model: the text becomes an error tool result and the run goes on.
    #[error("{0}")]
    Model(String),
    /// Something the model cannot fix: the run fails.
    #[error("fatal tool error: {0}")]
    Fatal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A tool call that ended the run.
#[derive(Debug, thiserror::Error)]
#[error("tool `{tool}` failed fatally: {source}")]
pub struct FatalToolError {
    /// Tool name.
    pub tool: String,
    /// Cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The answer a tool call gives the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// Text for the model.
    pub text: String,
    /// Whether the call failed (bad arguments, timeout, …).
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(text: impl Into<String>) -> Self {
        ToolOutput {
            text: text.into(),
            is_error: false,
        }
    }

    /// A failed result, for the model to read.
    pub fn error(text: impl Into<String>) -> Self {
        ToolOutput {
            text: text.into(),
            is_error: true,
        }
    }
}

/// One tool: its description for the model and how to run it.
#[async_trait::async_trait]
pub trait ToolHandler: Send + Sync + 'static {
    /// Name the model calls it by (unique in a registry).
    fn name(&self) -> &str;

    /// What the tool does, for the model.
    fn description(&self) -> &str;

    /// JSON Schema of the arguments object.
    fn parameters(&self) -> serde_json::Value;

    /// Runs one call. `args` is the parsed arguments object.
    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError>;
}

/// The tools offered to the model, by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Arc<dyn ToolHandler>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in tools: `shell`, `read_file`,
    /// `write_file`, `edit_file`, `list_files`, `grep` and `report_artifact`.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry.register(Arc::new(ShellTool::default()));
        registry.register(Arc::new(ReadFileTool));
        registry.register(Arc::new(WriteFileTool));
        registry.register(Arc::new(EditFileTool));
        registry.register(Arc::new(ListFilesTool));
        registry.register(Arc::new(GrepTool));
        registry.register(Arc::new(ReportArtifactTool));
        registry
    }

    /// Whether a tool named `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// Number of tools.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether there are no tools.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Adds a tool, replacing one with the same name.
    pub fn register(&mut self, handler: Arc<dyn ToolHandler>) {
        self.tools.insert(handler.name().to_owned(), handler);
    }

    /// Names of the registered tools, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// The tool definitions to send to the model.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .values()
            .map(|tool| ToolSpec {
                kind: "function".to_owned(),
                function: FunctionDef {
                    name: tool.name().to_owned(),
                    description: Some(tool.description().to_owned()),
                    parameters: tool.parameters(),
                },
            })
            .collect()
    }

    /// Runs the call `name(raw_arguments)`. Every failure the model can act on
    /// comes back as an error [`ToolOutput`]; only fatal errors are `Err`.
    pub async fn dispatch(
        &self,
        name: &str,
        raw_arguments: &str,
        ctx: &ToolContext,
    ) -> Result<ToolOutput, FatalToolError> {
        let Some(tool) = self.tools.get(name) else {
            let known = self.names().collect::<Vec<_>>().join(", ");
            return Ok(ToolOutput::error(format!(
                "unknown tool `{name}`; available tools: {known}"
            )));
        };
        let args = match parse_arguments(raw_arguments) {
            Ok(args) => args,
            Err(message) => return Ok(ToolOutput::error(message)),
        };
        match tool.call(args, ctx).await {
            Ok(text) => Ok(ToolOutput::ok(text)),
            Err(ToolError::Model(text)) => Ok(ToolOutput::error(text)),
            Err(ToolError::Fatal(source)) => Err(FatalToolError {
                tool: name.to_owned(),
                source,
            }),
        }
    }
}

/// Parses a call's arguments: a JSON object, or empty for "no arguments".
pub(crate) fn parse_arguments(raw: &str) -> Result<serde_json::Value, String> {
    if raw.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("invalid arguments: expected a JSON object".to_owned()),
        Err(e) => Err(format!("invalid arguments: not valid JSON ({e})")),
    }
}

/// Decodes a tool's arguments object into its typed form, with an error the
/// model can act on.
pub fn decode_args<T: serde::de::DeserializeOwned>(
    args: serde_json::Value,
) -> Result<T, ToolError> {
    serde_json::from_value(args).map_err(|e| ToolError::Model(format!("invalid arguments: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Boom;

    #[async_trait::async_trait]
    impl ToolHandler for Boom {
        fn name(&self) -> &str {
            "boom"
        }
        fn description(&self) -> &str {
            "fails"
        }
        fn parameters(&self) -> serde_json::Value {
            serde_json::json!({"type": "object"})
        }
        async fn call(
            &self,
            args: serde_json::Value,
            _: &ToolContext,
        ) -> Result<String, ToolError> {
            if args.get("fatal").is_some() {
                Err(ToolError::Fatal("disk on fire".into()))
            } else {
                Err(ToolError::Model("try again".into()))
            }
        }
    }

    fn ctx() -> ToolContext {
        ToolContext::new(std::env::temp_dir(), CancellationToken::new(), "c1")
    }

    #[tokio::test]
    async fn errors_the_model_can_fix_are_tool_results() {
        let mut registry = ToolRegistry::with_builtins();
        registry.register(Arc::new(Boom));
        let out = registry.dispatch("nope", "{}", &ctx()).await.unwrap();
        assert!(out.is_error);
        assert!(out.text.contains("unknown tool `nope`"), "{}", out.text);
        assert!(out.text.contains("shell"), "{}", out.text);

        let out = registry
            .dispatch("shell", "{not json", &ctx())
            .await
            .unwrap();
        assert!(out.is_error);
        assert!(out.text.contains("not valid JSON"), "{}", out.text);

        let out = registry.dispatch("shell", "[1]", &ctx()).await.unwrap();
        assert!(out.is_error);

        let out = registry
            .dispatch("shell", r#"{"cmd": "x"}"#, &ctx())
            .await
            .unwrap();
        assert!(out.is_error);
        assert!(out.text.contains("command"), "{}", out.text);

        let out = registry.dispatch("boom", "", &ctx()).await.unwrap();
        assert_eq!(out, ToolOutput::error("try again"));
    }

    #[tokio::test]
    async fn fatal_errors_are_err() {
        let mut registry = ToolRegistry::new();
        registry.register(Arc::new(Boom));
        let err = registry
            .dispatch("boom", r#"{"fatal": 1}"#, &ctx())
            .await
            .unwrap_err();
        assert_eq!(err.tool, "boom");
    }

    #[test]
    fn specs_describe_every_tool() {
        let specs = ToolRegistry::with_builtins().specs();
        let names: Vec<&str> = specs.iter().map(|s| s.function.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "edit_file",
                "grep",
                "list_files",
                "read_file",
                "report_artifact",
                "shell",
                "write_file"
            ]
        );
        let shell = specs.iter().find(|s| s.function.name == "shell").unwrap();
        assert_eq!(
            shell.function.parameters["required"],
            serde_json::json!(["command"])
        );
    }
}
