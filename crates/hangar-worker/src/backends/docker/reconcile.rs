//! Reconcile after a restart (D2): find this worker's task containers by label.

use super::client::docker_err;
use super::execution::{DockerExecution, EXECUTION_FILE};
use super::spec::container_name;
use super::{Docker, LABEL_DIR, LABEL_EXECUTION, LABEL_RUN, LABEL_WORKER};
use crate::backends::{BackendError, Recovered, is_safe_segment};
use bollard::query_parameters::ListContainersOptions;
use hangar_protocol::worker::FailureReason;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::task::JoinSet;

impl Docker {
    /// Lists this worker's containers by label (D2): each becomes a
    /// [`Recovered`] execution that is waited on again (or, when it already
    /// ended, reported) and then cleaned up.
    pub(super) async fn reconcile(&self) -> Result<Vec<Recovered>, BackendError> {
        let cfg = &self.shared.config;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_WORKER}={}", cfg.worker_id)],
        )]);
        let list = self
            .shared
            .client()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                docker_err(
                    FailureReason::ContainerWait,
                    "cannot list task containers",
                    e,
                )
            })?;
        let mut found = Vec::new();
        for c in list {
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(id), Some(task_id), Some(execution_id)) = (
                c.id.clone(),
                labels.get(LABEL_RUN).cloned(),
                labels.get(LABEL_EXECUTION).cloned(),
            ) else {
                continue;
            };
            if !is_safe_segment(&execution_id) {
                continue;
            }
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            let dir = labels
                .get(LABEL_DIR)
                .map(PathBuf::from)
                .unwrap_or_else(|| cfg.workspace_root.join(&execution_id));
            let started = state != "created";
            let name = container_name(&cfg.worker_id, &execution_id);
            // A container reused for a follow-up serves a later execution than its label.
            // Read without following symlinks: the container can write there.
            let execution_id = crate::backends::ctl_dir::CtlDir::open(&dir.join("ctl"))
                .and_then(|ctl| ctl.read(EXECUTION_FILE, 256))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| is_safe_segment(s))
                .unwrap_or(execution_id);
            tracing::info!(task_id = %task_id, execution_id = %execution_id, container = %id, state = %state, "recovered task container");
            let exec = DockerExecution {
                shared: self.shared.clone(),
                task_id: task_id.clone(),
                execution_id: execution_id.clone(),
                spec: None,
                name,
                // Only remove what this backend created: the label names it.
                created_dir: dir.starts_with(&cfg.workspace_root),
                dir,
                container: Some(id),
                started,
                early_exit: None,
                readers: JoinSet::new(),
                egress: None,
                reused: false,
            };
            found.push(Recovered {
                task_id,
                execution_id,
                execution: Box::new(exec),
            });
        }
        Ok(found)
    }
}
