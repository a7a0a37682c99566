//! Session spools that may hold events the server never acknowledged: kept
//! when a workspace is removed (issue 10, "nothing acked is deleted").
//!
//! The agent spools every event in `<workspace>/.hangar/session-<id>.ndjson`
//! and marks the spool delivered (`session-<id>.delivered`) once the server
//! acknowledged all of it. Before a backend removes a workspace, every
//! unmarked, non-empty spool moves to `<workspace_root>/.hangar-undelivered/`,
//! with a warning in the worker log.

use std::path::{Path, PathBuf};

/// Where undelivered spools are kept, under the workspace root.
pub(crate) const UNDELIVERED_DIR: &str = ".hangar-undelivered";

/// The agent marks its spool delivered (`session-<id>.delivered`) once the
/// server acknowledged every event; an unmarked spool in the `.hangar`
/// directory of `cwd` may hold events the server never stored. Moves each to `<root>/.hangar-undelivered/` so
/// removing the workspace loses nothing; returns where they went.
pub(crate) fn keep_undelivered(root: &Path, cwd: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cwd.join(".hangar")) else {
        return Vec::new();
    };
    let dir = root.join(UNDELIVERED_DIR);
    let mut kept = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("session-") && name.ends_with(".ndjson"))
            || entry.metadata().is_ok_and(|m| m.len() == 0)
            || entry.path().with_extension("delivered").exists()
        {
            continue;
        }
        let to = dir.join(name);
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::rename(entry.path(), &to)) {
            Ok(()) => kept.push(to),
            Err(e) => {
                tracing::warn!(spool = %entry.path().display(), error = %e, "cannot keep an undelivered session spool");
            }
        }
    }
    kept
}

/// [`keep_undelivered`], logging each spool kept for the execution.
pub(crate) fn keep_and_log(root: &Path, cwd: &Path, task_id: &str, execution_id: &str) {
    for kept in keep_undelivered(root, cwd) {
        tracing::warn!(
            task_id,
            execution_id,
            spool = %kept.display(),
            "the agent ended before the server acknowledged all its events; kept its session spool"
        );
    }
}
