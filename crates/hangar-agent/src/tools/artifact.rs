//! `report_artifact {type, url?, path?, title?}`: records an output of the
//! run (a pull request, a file, a plan). The loop turns a successful call
//! into an `artifact` session event.

use super::workspace::{display_rel, resolve_in_workspace};
use super::{ToolContext, ToolError, ToolHandler, decode_args};
use hangar_protocol::session::EventBody;
use serde::Deserialize;

/// The tool's name.
pub const ARTIFACT_TOOL: &str = "report_artifact";

/// `report_artifact`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportArtifactTool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactArgs {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

impl ReportArtifactTool {
    /// Validates a call and builds its `artifact` event (paths made
    /// workspace-relative).
    pub fn event(args: serde_json::Value, ctx: &ToolContext) -> Result<EventBody, ToolError> {
        let args: ArtifactArgs = decode_args(args)?;
        let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let (url, path, title) = (
            nonempty(args.url),
            nonempty(args.path),
            nonempty(args.title),
        );
        let path = match path {
            Some(p) => {
                let (root, resolved) = resolve_in_workspace(&ctx.workdir, &p)?;
                if !resolved.exists() {
                    return Err(ToolError::Model(format!("`{p}` does not exist")));
                }
                Some(display_rel(&root, &resolved))
            }
            None => None,
        };
        match args.kind.as_str() {
            "pull_request" if url.is_none() => {
                return Err(ToolError::Model(
                    "a pull_request artifact needs `url`".into(),
                ));
            }
            "file" if path.is_none() && url.is_none() => {
                return Err(ToolError::Model(
                    "a file artifact needs `path` (or `url`)".into(),
                ));
            }
            "plan" if path.is_none() && title.is_none() && url.is_none() => {
                return Err(ToolError::Model(
                    "a plan artifact needs `path`, `url` or `title`".into(),
                ));
            }
            "pull_request" | "file" | "plan" => {}
            other => {
                return Err(ToolError::Model(format!(
                    "unknown artifact type `{other}`; use pull_request, file or plan"
                )));
            }
        }
        if let Some(u) = &url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ToolError::Model(format!("`{u}` is not an http(s) URL")));
        }
        Ok(EventBody::Artifact {
            artifact_type: args.kind,
            url,
            path,
            title,
        })
    }
}

#[async_trait::async_trait]
impl ToolHandler for ReportArtifactTool {
    fn name(&self) -> &str {
        ARTIFACT_TOOL
    }

    fn description(&self) -> &str {
        "Records an output of this run so people find it: a pull request you opened (`url`), a \
         file you produced (`path` in the workspace), or a plan (`path` or `title`)."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["pull_request", "file", "plan"]},
                "url": {"type": "string", "description": "Link (pull requests)."},
                "path": {"type": "string", "description": "Workspace-relative path (files, plans)."},
                "title": {"type": "string", "description": "Short title."}
            },
            "required": ["type"],
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        match Self::event(args, ctx)? {
            EventBody::Artifact { artifact_type, .. } => {
                Ok(format!("recorded the {artifact_type} artifact"))
            }
            _ => Ok("recorded".to_owned()),
        }
    }
}
