//! `read_file`, `write_file` and `edit_file` (PROTOCOL.md §4).

use super::workspace::{display_rel, resolve_in_workspace};
use super::{ToolContext, ToolError, ToolHandler, decode_args};
use serde::Deserialize;

/// Most bytes `read_file` returns in one call; the model pages with `offset`.
pub const MAX_READ_BYTES: usize = 256 * 1024;
/// Lines `read_file` returns when no `limit` is given.
const DEFAULT_READ_LINES: usize = 2000;
/// Bytes inspected for NUL to tell binary files.
const BINARY_SNIFF: usize = 8 * 1024;

fn io_error(verb: &str, path: &str, e: &std::io::Error) -> ToolError {
    ToolError::Model(format!("cannot {verb} `{path}`: {e}"))
}

/// `read_file {path, offset?, limit?}`: lines of a text file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadFileTool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    #[serde(default)]
    offset: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

#[async_trait::async_trait]
impl ToolHandler for ReadFileTool {
    fn name(&self) -> &str {
        "read_file"
    }

    fn description(&self) -> &str {
        "Reads a text file of the workspace. `offset` is the first line to return (1-based, \
         default 1) and `limit` the number of lines (default 2000). Binary files are refused."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path, relative to the workspace root."},
                "offset": {"type": "integer", "minimum": 1, "description": "First line to read (1-based)."},
                "limit": {"type": "integer", "minimum": 1, "description": "Number of lines to read."}
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let args: ReadArgs = decode_args(args)?;
        let (root, path) = resolve_in_workspace(&ctx.workdir, &args.path)?;
        if path.is_dir() {
            return Err(ToolError::Model(format!(
                "`{}` is a directory; use list_files to see what it contains",
                args.path
            )));
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io_error("read", &args.path, &e))?;
        let sniff = &bytes[..bytes.len().min(BINARY_SNIFF)];
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) if !sniff.contains(&0) => text,
            _ => {
                return Err(ToolError::Model(format!(
                    "`{}` is a binary file ({} bytes); read_file only shows text. \
                     Inspect it with the shell (`file`, `xxd | head`) if you need to.",
                    display_rel(&root, &path),
                    bytes.len()
                )));
            }
        };
        let offset = args.offset.unwrap_or(1).max(1);
        let limit = args.limit.unwrap_or(DEFAULT_READ_LINES).max(1);
        let total = text.lines().count();
        if total == 0 {
            return Ok("(empty file)".to_owned());
        }
        if offset > total {
            return Err(ToolError::Model(format!(
                "offset {offset} is past the end of `{}` ({total} lines)",
                args.path
            )));
        }
        let mut out = String::new();
        let mut last = offset - 1;
        for (i, line) in text.lines().enumerate().skip(offset - 1).take(limit) {
            if out.len() + line.len() + 1 > MAX_READ_BYTES {
                break;
            }
            out.push_str(line);
            out.push('\n');
            last = i + 1;
        }
        if last < total {
            out.push_str(&format!(
                "[… lines {}-{last} of {total} shown; read more with offset={}]\n",
                offset,
                last + 1
            ));
        }
        Ok(out)
    }
}

/// `write_file {path, content}`: creates or replaces a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteFileTool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteArgs {
    path: String,
    content: String,
}

#[async_trait::async_trait]
impl ToolHandler for WriteFileTool {
    fn name(&self) -> &str {
        "write_file"
    }

    fn description(&self) -> &str {
        "Creates or overwrites a file of the workspace with `content` (parent directories are \
         created). Prefer edit_file for changes to existing files."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path, relative to the workspace root."},
                "content": {"type": "string", "description": "The complete new content."}
            },
            "required": ["path", "content"],
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let args: WriteArgs = decode_args(args)?;
        let (root, path) = resolve_in_workspace(&ctx.workdir, &args.path)?;
        if path == root || path.is_dir() {
            return Err(ToolError::Model(format!("`{}` is a directory", args.path)));
        }
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error("create the directory of", &args.path, &e))?;
        }
        let existed = path.exists();
        tokio::fs::write(&path, args.content.as_bytes())
            .await
            .map_err(|e| io_error("write", &args.path, &e))?;
        Ok(format!(
            "{} {} ({} bytes)",
            if existed { "overwrote" } else { "created" },
            display_rel(&root, &path),
            args.content.len()
        ))
    }
}

/// `edit_file {path, old_string, new_string, replace_all?}`: exact replacement.
#[derive(Debug, Clone, Copy, Default)]
pub struct EditFileTool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EditArgs {
    path: String,
    old_string: String,
    new_string: String,
    #[serde(default)]
    replace_all: bool,
}

#[async_trait::async_trait]
impl ToolHandler for EditFileTool {
    fn name(&self) -> &str {
        "edit_file"
    }

    fn description(&self) -> &str {
        "Replaces `old_string` with `new_string` in a file. `old_string` must match exactly \
         (whitespace included) and, unless `replace_all` is true, occur exactly once: include \
         enough surrounding lines to make it unique."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path, relative to the workspace root."},
                "old_string": {"type": "string", "description": "Exact text to replace."},
                "new_string": {"type": "string", "description": "Replacement text."},
                "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)."}
            },
            "required": ["path", "old_string", "new_string"],
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let args: EditArgs = decode_args(args)?;
        if args.old_string.is_empty() {
            return Err(ToolError::Model(
                "old_string is empty; use write_file to create a file".to_owned(),
            ));
        }
        if args.old_string == args.new_string {
            return Err(ToolError::Model(
                "old_string and new_string are identical; nothing to change".to_owned(),
            ));
        }
        let (root, path) = resolve_in_workspace(&ctx.workdir, &args.path)?;
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io_error("read", &args.path, &e))?;
        let Ok(text) = String::from_utf8(bytes) else {
            return Err(ToolError::Model(format!(
                "`{}` is not a UTF-8 text file",
                args.path
            )));
        };
        let count = text.matches(args.old_string.as_str()).count();
        let rel = display_rel(&root, &path);
        match count {
            0 => {
                return Err(ToolError::Model(format!(
                    "old_string was not found in {rel}; read the file again and copy the text exactly"
                )));
            }
            n if n > 1 && !args.replace_all => {
                return Err(ToolError::Model(format!(
                    "old_string occurs {n} times in {rel}; add surrounding context to make it unique, \
                     or set replace_all to true"
                )));
            }
            _ => {}
        }
        let updated = if args.replace_all {
            text.replace(&args.old_string, &args.new_string)
        } else {
            text.replacen(&args.old_string, &args.new_string, 1)
        };
        tokio::fs::write(&path, updated.as_bytes())
            .await
            .map_err(|e| io_error("write", &args.path, &e))?;
        Ok(format!(
            "replaced {count} occurrence{} in {rel}",
            if count == 1 { "" } else { "s" }
        ))
    }
}
