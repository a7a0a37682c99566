//! `list_files {path?, glob?}`: the workspace's files, honouring `.gitignore`.

use super::workspace::{display_rel, resolve_in_workspace};
use super::{ToolContext, ToolError, ToolHandler, decode_args};
use serde::Deserialize;
use std::path::Path;

/// Most paths `list_files` returns.
pub const MAX_LISTED_FILES: usize = 2000;

/// `list_files`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilesTool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
}

/// A walker over `dir` with ripgrep's filters: `.gitignore` (also outside a
/// git repository), `.ignore`, hidden files skipped, and an optional glob.
pub(crate) fn walker(
    root: &Path,
    dir: &Path,
    glob: Option<&str>,
) -> Result<ignore::WalkBuilder, ToolError> {
    let mut builder = ignore::WalkBuilder::new(dir);
    builder.require_git(false).hidden(true).parents(true);
    if let Some(glob) = glob.map(str::trim).filter(|g| !g.is_empty()) {
        let mut overrides = ignore::overrides::OverrideBuilder::new(root);
        overrides
            .add(glob)
            .map_err(|e| ToolError::Model(format!("invalid glob `{glob}`: {e}")))?;
        let overrides = overrides
            .build()
            .map_err(|e| ToolError::Model(format!("invalid glob `{glob}`: {e}")))?;
        // A filter, not `WalkBuilder::overrides`: overrides would also
        // override `.gitignore` and hidden-file rules.
        builder.filter_entry(move |entry| {
            entry.file_type().is_some_and(|t| t.is_dir())
                || overrides.matched(entry.path(), false).is_whitelist()
        });
    }
    Ok(builder)
}

#[async_trait::async_trait]
impl ToolHandler for ListFilesTool {
    fn name(&self) -> &str {
        "list_files"
    }

    fn description(&self) -> &str {
        "Lists the files under a directory of the workspace (default: the root), recursively, \
         skipping hidden files and what .gitignore excludes. `glob` filters names (e.g. `*.rs`, \
         `src/**/*.ts`)."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Directory, relative to the workspace root."},
                "glob": {"type": "string", "description": "Only files matching this glob."}
            },
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let args: ListArgs = decode_args(args)?;
        let requested = args.path.clone().unwrap_or_default();
        let (root, dir) = resolve_in_workspace(&ctx.workdir, &requested)?;
        if !dir.is_dir() {
            return Err(ToolError::Model(format!(
                "`{requested}` is not a directory"
            )));
        }
        let builder = walker(&root, &dir, args.glob.as_deref())?;
        let cancel = ctx.cancel.clone();
        let listed = tokio::task::spawn_blocking(move || {
            let mut files = Vec::new();
            let mut more = false;
            for entry in builder.build() {
                if cancel.is_cancelled() {
                    break;
                }
                let Ok(entry) = entry else { continue };
                if !entry
                    .file_type()
                    .is_some_and(|t| t.is_file() || t.is_symlink())
                {
                    continue;
                }
                if files.len() >= MAX_LISTED_FILES {
                    more = true;
                    break;
                }
                files.push(display_rel(&root, entry.path()));
            }
            files.sort();
            (files, more)
        })
        .await
        .map_err(|e| ToolError::Fatal(Box::new(e)))?;
        let (files, more) = listed;
        if files.is_empty() {
            return Ok("(no files)".to_owned());
        }
        let mut out = files.join("\n");
        out.push('\n');
        if more {
            out.push_str(&format!(
                "[… stopped after {MAX_LISTED_FILES} files; narrow with path or glob]\n"
            ));
        }
        Ok(out)
    }
}
