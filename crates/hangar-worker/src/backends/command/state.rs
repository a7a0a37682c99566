//! Records of dispatched executions, one JSON file each (mode 0600: it holds
//! the run token) under the state directory, written once the task is
//! dispatched and removed at cleanup. A restarted worker reads them back
//! and keeps watching those tasks under their leases.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a restarted worker needs to watch a dispatched task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    pub task_id: String,
    pub execution_id: String,
    /// What `dispatch_command` printed.
    pub external_id: String,
    /// The execution's run token: the run's state is read with it.
    pub run_token: String,
    pub server_url: String,
}

/// Creates the directory (0700).
pub(super) fn prepare_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn path(dir: &Path, execution_id: &str) -> PathBuf {
    dir.join(format!("{execution_id}.json"))
}

/// Stores `record` atomically (write, fsync, rename).
pub(super) fn save(dir: &Path, record: &Record) -> io::Result<()> {
    if !crate::backends::is_safe_segment(&record.execution_id) {
        return Err(io::Error::other("unsafe execution id"));
    }
    let target = path(dir, &record.execution_id);
    let tmp = target.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &target)
}

/// Removes an execution's record; a missing one is fine.
pub(super) fn forget(dir: &Path, execution_id: &str) -> io::Result<()> {
    if !crate::backends::is_safe_segment(execution_id) {
        return Ok(());
    }
    match std::fs::remove_file(path(dir, execution_id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every readable record; unreadable ones are logged and skipped.
pub(super) fn load_all(dir: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "skipping an unreadable record of a dispatched task")
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_private_and_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let r = Record {
            task_id: "run-1".into(),
            execution_id: "exec-1".into(),
            external_id: "job 42".into(),
            run_token: "hr_secret".into(),
            server_url: "http://127.0.0.1:1".into(),
        };
        save(dir.path(), &r).unwrap();
        let mode = std::fs::metadata(path(dir.path(), "exec-1")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        assert_eq!(load_all(dir.path()), vec![r]);
        forget(dir.path(), "exec-1").unwrap();
        forget(dir.path(), "exec-1").unwrap();
        assert!(load_all(dir.path()).is_empty());
        assert!(
            save(
                dir.path(),
                &Record {
                    execution_id: "../x".into(),
                    ..load_dummy()
                }
            )
            .is_err()
        );
    }

    fn load_dummy() -> Record {
        Record {
            task_id: String::new(),
            execution_id: String::new(),
            external_id: String::new(),
            run_token: String::new(),
            server_url: String::new(),
        }
    }
}
