//! `grep {pattern, path?, glob?}`: a regex search over the workspace with
//! ripgrep's own crates (`grep` for matching, `ignore` for the parallel,
//! `.gitignore`-aware walk).

use super::list::walker;
use super::workspace::{display_rel, resolve_in_workspace};
use super::{ToolContext, ToolError, ToolHandler, decode_args};
use grep::regex::RegexMatcherBuilder;
use grep::searcher::sinks::UTF8;
use grep::searcher::{BinaryDetection, SearcherBuilder};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_util::sync::CancellationToken;

/// Most matching lines `grep` returns.
pub const MAX_GREP_MATCHES: usize = 500;
/// Longest line shown; longer ones are cut.
const MAX_LINE_CHARS: usize = 400;

/// `grep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrepTool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
}

/// What a search found.
#[derive(Debug, Default)]
pub struct GrepResult {
    /// `path:line:text`, sorted by path then line.
    pub lines: Vec<String>,
    /// Whether the match limit cut the search short.
    pub truncated: bool,
}

/// Searches `dir` (inside `root`) for `pattern`, in parallel, returning at
/// most `max` matches. Blocking: call from a blocking thread.
pub fn grep_workspace(
    root: &Path,
    dir: &Path,
    pattern: &str,
    glob: Option<&str>,
    max: usize,
    cancel: &CancellationToken,
) -> Result<GrepResult, ToolError> {
    let matcher = RegexMatcherBuilder::new()
        .line_terminator(Some(b'\n'))
        .build(pattern)
        .map_err(|e| ToolError::Model(format!("invalid regex `{pattern}`: {e}")))?;
    let mut builder = walker(root, dir, glob)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    builder.threads(threads);
    let found = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<(String, u64, String)>();
    builder.build_parallel().run(|| {
        let matcher = matcher.clone();
        let tx = tx.clone();
        let found = found.clone();
        let mut searcher = SearcherBuilder::new()
            .binary_detection(BinaryDetection::quit(0))
            .line_number(true)
            .build();
        Box::new(move |entry| {
            use ignore::WalkState;
            if cancel.is_cancelled() || found.load(Ordering::Relaxed) >= max {
                return WalkState::Quit;
            }
            let Ok(entry) = entry else {
                return WalkState::Continue;
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return WalkState::Continue;
            }
            let path = entry.path();
            let mut rel: Option<String> = None;
            let _ = searcher.search_path(
                &matcher,
                path,
                UTF8(|line_no, line| {
                    if found.fetch_add(1, Ordering::Relaxed) >= max {
                        return Ok(false);
                    }
                    let rel = rel.get_or_insert_with(|| display_rel(root, path)).clone();
                    let line = line.trim_end_matches(['\n', '\r']);
                    let line = match line.char_indices().nth(MAX_LINE_CHARS) {
                        Some((cut, _)) => format!("{}…", &line[..cut]),
                        None => line.to_owned(),
                    };
                    Ok(tx.send((rel, line_no, line)).is_ok())
                }),
            );
            WalkState::Continue
        })
    });
    drop(tx);
    let mut hits: Vec<(String, u64, String)> = rx.into_iter().collect();
    let truncated = found.load(Ordering::Relaxed) > max || hits.len() >= max;
    hits.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    hits.truncate(max);
    Ok(GrepResult {
        lines: hits
            .into_iter()
            .map(|(path, line_no, text)| format!("{path}:{line_no}:{text}"))
            .collect(),
        truncated,
    })
}

#[async_trait::async_trait]
impl ToolHandler for GrepTool {
    fn name(&self) -> &str {
        "grep"
    }

    fn description(&self) -> &str {
        "Searches file contents with a regular expression (Rust regex syntax, like ripgrep), \
         skipping hidden, binary and .gitignore'd files. Returns `path:line:text` lines. \
         `path` limits the search to a directory or file; `glob` filters file names."
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "Regular expression."},
                "path": {"type": "string", "description": "Directory or file to search, relative to the workspace root."},
                "glob": {"type": "string", "description": "Only files matching this glob (e.g. `*.rs`)."}
            },
            "required": ["pattern"],
            "additionalProperties": false
        })
    }

    async fn call(&self, args: serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let args: GrepArgs = decode_args(args)?;
        let requested = args.path.clone().unwrap_or_default();
        let (root, dir) = resolve_in_workspace(&ctx.workdir, &requested)?;
        if !dir.exists() {
            return Err(ToolError::Model(format!("`{requested}` does not exist")));
        }
        let cancel = ctx.cancel.clone();
        let result = tokio::task::spawn_blocking(move || {
            grep_workspace(
                &root,
                &dir,
                &args.pattern,
                args.glob.as_deref(),
                MAX_GREP_MATCHES,
                &cancel,
            )
        })
        .await
        .map_err(|e| ToolError::Fatal(Box::new(e)))??;
        if result.lines.is_empty() {
            return Ok("no matches".to_owned());
        }
        let mut out = result.lines.join("\n");
        out.push('\n');
        if result.truncated {
            out.push_str(&format!(
                "[… stopped after {MAX_GREP_MATCHES} matches; narrow the pattern, path or glob]\n"
            ));
        }
        Ok(out)
    }
}
