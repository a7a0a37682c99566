//! Records of the direct backend's executions, one JSON file each under
//! `<workspace_root>/.hangar-executions/`, written before anything of the
//! execution runs and removed once it is cleaned up. A worker that died
//! (kill -9, power loss) leaves its records behind; the next worker on the
//! same workspace root reaps those executions at start-up: it kills what is
//! left of them (their cgroup, any process still working in their
//! workspace), keeps undelivered session spools, and removes their
//! workspaces. Their agents cannot be reattached: they die with the worker
//! (`PR_SET_PDEATHSIG`), and the server ends their runs when their leases
//! expire.

use super::containment;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// Directory of the records, under the workspace root.
const RECORDS_DIR: &str = ".hangar-executions";

/// What a restarted worker needs to reap an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub task_id: String,
    pub execution_id: String,
    /// `<workspace_root>/<execution_id>`, made by the backend: the workspace,
    /// or the execution's private state with a shared target dir.
    pub private_dir: PathBuf,
    /// Where the agent ran (processes working there are the execution's).
    pub cwd: PathBuf,
    pub cgroup: Option<PathBuf>,
}

fn records_dir(root: &Path) -> PathBuf {
    root.join(RECORDS_DIR)
}

fn record_path(root: &Path, execution_id: &str) -> PathBuf {
    records_dir(root).join(format!("{execution_id}.json"))
}

/// Stores `record` atomically (write, fsync, rename).
pub(crate) fn save(root: &Path, record: &Record) -> io::Result<()> {
    use std::io::Write;
    let dir = records_dir(root);
    let path = record_path(root, &record.execution_id);
    let tmp = path.with_extension("json.tmp");
    // The directory goes when its last record does (`forget`); make it again
    // if another execution removed it in between.
    let mut file = loop {
        std::fs::create_dir_all(&dir)?;
        match std::fs::File::create(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => break other?,
        }
    };
    file.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Forgets the execution (it was cleaned up); the directory goes with the
/// last record, so an idle workspace root is empty.
pub(crate) fn forget(root: &Path, execution_id: &str) {
    match std::fs::remove_file(record_path(root, execution_id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(execution_id, error = %e, "cannot remove the execution's record");
        }
        _ => {}
    }
    // Fails while other records exist, as it should.
    let _ = std::fs::remove_dir(records_dir(root));
}

/// The records a previous worker left under `root`.
fn leftovers(root: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(records_dir(root)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()))
        {
            Ok(record) => found.push(record),
            Err(e) => {
                tracing::warn!(record = %path.display(), error = %e, "ignoring an unreadable execution record");
            }
        }
    }
    found
}

/// What reaping one execution did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub task_id: String,
    pub execution_id: String,
    pub killed: usize,
    pub kept_spools: Vec<PathBuf>,
    pub removed_workspace: bool,
}

/// Reaps every execution a previous worker left under `root`.
pub(crate) fn reap(root: &Path, remove_workspaces: bool) -> Vec<Reaped> {
    let mut reaped = Vec::new();
    for record in leftovers(root) {
        let mut outcome = Reaped {
            task_id: record.task_id.clone(),
            execution_id: record.execution_id.clone(),
            ..Reaped::default()
        };
        if let Some(cgroup) = record.cgroup.as_deref().filter(|c| is_ours(c))
            && let Err(e) = containment::remove_cgroup(cgroup)
        {
            tracing::warn!(cgroup = %cgroup.display(), error = %e, "cannot reap a leftover cgroup");
        }
        outcome.killed = kill_working_in(&record.cwd) + kill_working_in(&record.private_dir);
        if remove_workspaces {
            outcome.kept_spools = super::super::spools::keep_undelivered(root, &record.cwd);
        }
        let workspace = record.private_dir.as_path();
        if remove_workspaces && workspace.parent() == Some(root) {
            match std::fs::remove_dir_all(workspace) {
                Ok(()) => outcome.removed_workspace = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(workspace = %workspace.display(), error = %e, "cannot remove a leftover workspace");
                }
            }
        }
        forget(root, &record.execution_id);
        tracing::info!(
            task_id = %outcome.task_id,
            execution_id = %outcome.execution_id,
            killed = outcome.killed,
            kept_spools = ?outcome.kept_spools,
            removed_workspace = outcome.removed_workspace,
            "reaped an execution left by a previous worker"
        );
        reaped.push(outcome);
    }
    reaped
}

/// A cgroup path this backend could have made.
fn is_ours(cgroup: &Path) -> bool {
    cgroup
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(containment::CGROUP_PREFIX))
        && cgroup.join("cgroup.kill").exists()
}

/// SIGKILLs every process whose working directory is inside `dir`, until
/// none is left (a few rounds: a dying parent may still fork).
pub(crate) fn kill_working_in(dir: &Path) -> usize {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut killed = 0;
    for _ in 0..5 {
        let pids = working_in(dir);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    killed
}

fn working_in(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id() as i32;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_reaped_once() {
        let root = tempfile::tempdir().unwrap();
        let workspace = root.path().join("exec-1");
        std::fs::create_dir_all(workspace.join(".hangar")).unwrap();
        std::fs::write(workspace.join(".hangar/session-exec-1.ndjson"), b"{}\n").unwrap();
        let record = Record {
            task_id: "run-1".into(),
            execution_id: "exec-1".into(),
            private_dir: workspace.clone(),
            cwd: workspace.clone(),
            cgroup: None,
        };
        save(root.path(), &record).unwrap();
        assert_eq!(leftovers(root.path()).len(), 1);

        // A delivered spool goes with its workspace.
        std::fs::write(workspace.join(".hangar/session-exec-0.ndjson"), b"{}\n").unwrap();
        std::fs::write(workspace.join(".hangar/session-exec-0.delivered"), b"").unwrap();
        let reaped = reap(root.path(), true);
        assert_eq!(reaped.len(), 1);
        assert!(reaped[0].removed_workspace);
        assert_eq!(reaped[0].kept_spools.len(), 1, "{reaped:?}");
        assert_eq!(std::fs::read(&reaped[0].kept_spools[0]).unwrap(), b"{}\n");
        assert!(!workspace.exists());
        assert!(reap(root.path(), true).is_empty(), "reaped twice");
    }
}
