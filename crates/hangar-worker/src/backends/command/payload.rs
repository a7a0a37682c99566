//! The JSON a `dispatch_command` reads on its stdin (version 1).

use super::CommandConfig;
use crate::backends::TaskSpec;
use hangar_protocol::worker::{InstanceShape, Task};
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of [`DispatchPayload`]; a new field keeps it, a changed or
/// removed one bumps it.
pub const PAYLOAD_VERSION: u32 = 1;

/// What the dispatcher needs to start `hangar agent run` elsewhere: run it as
/// `hangar <base_args…>` with `env` in its environment, in an empty working
/// directory (the agent prepares the environment itself, from `--environment`).
#[derive(Debug, Clone, Serialize)]
pub struct DispatchPayload {
    /// [`PAYLOAD_VERSION`].
    pub version: u32,
    /// The run (`task_id` on the wire).
    pub run_id: String,
    /// This execution.
    pub execution_id: String,
    /// The worker that dispatched it.
    pub worker_id: String,
    /// Where the agent reports (`--server-url` is in `base_args` too).
    pub server_url: String,
    /// The environment's image, if it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// Arguments after the `hangar` binary: `agent run --task-id … --server-url … --sandboxed …`.
    pub base_args: Vec<String>,
    /// The task's environment: the run token, its identity, the
    /// environment's variables and secrets.
    pub env: BTreeMap<String, String>,
    /// Which `env` entries are secrets (the run token included): keep them
    /// out of command lines, logs and anything a person can read.
    pub secret_env: Vec<String>,
    /// CPUs and memory the run asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_shape: Option<InstanceShape>,
    /// The task as assigned (title, prompt, configuration).
    pub task: Task,
}

impl DispatchPayload {
    pub(super) fn new(
        config: &CommandConfig,
        spec: &TaskSpec,
        base_args: Vec<String>,
        env: BTreeMap<String, String>,
        secrets: &[String],
    ) -> Self {
        let secret_env = env
            .iter()
            .filter(|(_, v)| secrets.contains(v))
            .map(|(k, _)| k.clone())
            .collect();
        let a = &spec.assignment;
        DispatchPayload {
            version: PAYLOAD_VERSION,
            run_id: spec.task_id.clone(),
            execution_id: spec.execution_id.clone(),
            worker_id: config.worker_id.clone(),
            server_url: config.server_url.clone(),
            docker_image: a.docker_image.clone(),
            base_args,
            env,
            secret_env,
            instance_shape: a.instance_shape.clone(),
            task: a.task.clone(),
        }
    }

    /// The run-scoped token (empty if the assignment had none).
    pub fn run_token(&self) -> &str {
        self.env
            .get(hangar_protocol::ENV_RUN_TOKEN)
            .map(String::as_str)
            .unwrap_or_default()
    }
}
