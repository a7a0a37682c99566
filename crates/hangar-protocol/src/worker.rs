//! Worker ⇄ server WebSocket messages (PROTOCOL.md §2).
//!
//! Frames are [`Envelope`]s. The Oz message set is kept exactly;
//! `worker_hello`, `task_started` and `worker_draining` are Hangar extensions that
//! an Oz-only worker simply never sends. Every worker → server message carries
//! `execution_id` so the server can fence off stale executions.

use crate::{AgentConfig, Envelope, EnvelopeError, Timestamp, WorkerId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Owner of a task; keys are capitalised as in the Oz protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOwner {
    /// `USER` or `TEAM`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Numeric owner id.
    #[serde(rename = "Id")]
    pub id: i64,
}

/// The prompt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinition {
    /// The instruction.
    pub prompt: String,
}

/// The task inside an assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Run id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Prompt.
    pub task_definition: TaskDefinition,
    /// Created.
    pub created_at: Timestamp,
    /// Updated.
    pub updated_at: Timestamp,
    /// Owner.
    pub owner: TaskOwner,
    /// Configuration snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config_snapshot: Option<AgentConfig>,
    /// Conversation to continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_conversation_id: Option<String>,
}

/// An extra sidecar container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Image.
    pub image: String,
    /// Where it is mounted.
    pub mount_path: String,
    /// Writable mount.
    #[serde(default)]
    pub read_write: bool,
}

/// Requested instance size.
///
/// Integers on the wire: the stock `oz-agent-worker` decodes both axes into
/// Go `int`s and drops the whole assignment on a fraction, so a fractional
/// size is sent rounded up (never less than asked for). Fractions are still
/// read, from Hangar's own input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceShape {
    /// CPUs.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_up"
    )]
    pub vcpus: Option<f64>,
    /// Memory in GB.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_up"
    )]
    pub memory_gb: Option<f64>,
}

/// Writes a size as the smallest whole number not below it.
fn whole_up<S: serde::Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        // `as` saturates: NaN becomes 0 and a huge size the largest integer.
        Some(v) => serializer.serialize_u64(v.ceil().max(0.0) as u64),
        None => serializer.serialize_none(),
    }
}

/// A repository to clone into the workspace before the agent starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RepoSpec {
    /// Clone URL (`https://…` or a local path/`file://` URL in tests).
    pub url: String,
    /// Branch, tag or commit to check out (default: the remote's HEAD).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    pub git_ref: Option<String>,
    /// Name of an environment variable in `env_vars` holding an HTTPS token for this clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Directory under the workspace (default: the repository name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Egress policy of a task's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkPolicy {
    /// Unrestricted egress.
    #[default]
    Full,
    /// No network at all.
    None,
    /// Only these host names (through an egress proxy).
    Allowlist {
        /// Host names (exact, or `*.example.com`).
        hosts: Vec<String>,
    },
}

/// **(extension)** The resolved environment of a run, sent with the assignment
/// so the worker can prepare the sandbox (image, repositories, setup).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct EnvironmentSpec {
    /// Environment id.
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Image (also in `docker_image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// Repositories to clone, in order.
    #[serde(default)]
    pub repos: Vec<RepoSpec>,
    /// Commands run in order in the workspace before the agent starts.
    #[serde(default)]
    pub setup_commands: Vec<String>,
    /// Egress policy.
    #[serde(default)]
    pub network_policy: NetworkPolicy,
    /// Names of `env_vars` entries that are secrets (redacted from transcripts and logs).
    #[serde(default)]
    pub secret_names: Vec<String>,
}

/// **(extension)** `GET /agent/runs/{id}/environment`: the environment an
/// agent prepares itself when a stock `oz-agent-worker` started it with
/// `--environment` (that worker ignores the assignment's `environment`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RunEnvironment {
    /// The run's environment as it was when the run was created; absent
    /// for a run without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentSpec>,
    /// Whether `file://` URLs and local paths may be cloned (the server's
    /// `allow_local_repositories`; tests only).
    #[serde(default)]
    pub allow_local_repositories: bool,
}

/// `task_assignment`: run this execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    /// Run id.
    pub task_id: String,
    /// Execution id (one per assignment).
    #[serde(default)]
    pub execution_id: String,
    /// The task.
    pub task: Task,
    /// Image for container backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// Sidecar carrying the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_image: Option<String>,
    /// Environment for the task, including the run token and secrets.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Extra sidecars.
    #[serde(default)]
    pub additional_sidecars: Vec<Sidecar>,
    /// Extra arguments for `agent run`.
    #[serde(default)]
    pub additional_oz_args: Vec<String>,
    /// Instance size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_shape: Option<InstanceShape>,
    /// **(extension)** The run's environment, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentSpec>,
}

/// `task_cancellation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancellation {
    /// Run id.
    pub task_id: String,
}

/// A still-running execution announced in `worker_hello`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunningTask {
    /// Run id.
    pub task_id: String,
    /// Execution id.
    pub execution_id: String,
}

/// **(extension)** First frame after connecting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHello {
    /// Worker version.
    pub version: String,
    /// Backend name.
    pub backend: String,
    /// Capacity; 0 = unlimited.
    pub max_concurrent_tasks: u32,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Executions still running on this worker, to reattach.
    #[serde(default)]
    pub running: Vec<RunningTask>,
}

/// `task_claimed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskClaimed {
    /// Run id.
    pub task_id: String,
    /// Worker id.
    pub worker_id: WorkerId,
    /// Execution id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

/// `task_rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRejected {
    /// Run id.
    pub task_id: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Execution id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

/// **(extension)** `task_started`: the sandbox is ready and the agent launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStarted {
    /// Run id.
    pub task_id: String,
    /// Execution id.
    pub execution_id: String,
    /// **(extension)** `none` when the task runs without the backend's
    /// sandbox (`sandbox: none` on the direct backend); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// `task_completed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCompleted {
    /// Run id.
    pub task_id: String,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// `CANCELLED` after a user cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_state: Option<String>,
    /// Execution id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

/// Declares [`FailureReason`] with its wire names, written once.
macro_rules! failure_reasons {
    ($($(#[$doc:meta])* $variant:ident => $wire:literal,)*) => {
        /// Why a task failed (the Oz worker's label set, plus Hangar's own).
        ///
        /// Forward-compatible: a label this version does not know decodes to
        /// [`FailureReason::Other`] with its raw text, is treated as
        /// [`FailureReason::Unknown`], and encodes back to the same text, so a
        /// newer worker's `task_failed` still ends its run.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[allow(missing_docs)]
        pub enum FailureReason {
            $($(#[$doc])* $variant,)*
            /// A label this version does not know, kept as sent.
            Other(String),
        }

        impl FailureReason {
            /// The label on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(FailureReason::$variant => $wire,)*
                    FailureReason::Other(raw) => raw,
                }
            }

            /// Reads a wire label; never fails (unknown labels become [`FailureReason::Other`]).
            pub fn from_wire(label: &str) -> Self {
                match label {
                    $($wire => FailureReason::$variant,)*
                    other => FailureReason::Other(other.to_owned()),
                }
            }

            /// Every label this version knows.
            pub const KNOWN: &[FailureReason] = &[$(FailureReason::$variant,)*];
        }
    };
}

failure_reasons! {
    Unknown => "unknown",
    TaskTimeout => "task_timeout",
    TaskCancelled => "task_cancelled",
    GracefulShutdown => "graceful_shutdown",
    ImagePull => "image_pull",
    SidecarPrep => "sidecar_prep",
    ContainerCreate => "container_create",
    ContainerStart => "container_start",
    ContainerWait => "container_wait",
    ContainerExit => "container_exit",
    ContainerOom => "container_oom",
    WorkspaceSetup => "workspace_setup",
    SetupCommand => "setup_command",
    AgentInvocation => "agent_invocation",
    TeardownCommand => "teardown_command",
    DispatchCommand => "dispatch_command",
    DispatchTimeout => "dispatch_timeout",
    CancelCommand => "cancel_command",
    JobCreate => "job_create",
    JobWatch => "job_watch",
    JobFailed => "job_failed",
    Evicted => "evicted",
    PodWatch => "pod_watch",
    Unschedulable => "unschedulable",
    VolumeMount => "volume_mount",
    InitContainer => "init_container",
    InvalidImage => "invalid_image",
    ActiveDeadline => "active_deadline",
    Cleanup => "cleanup",
    /// Hangar: the worker was cut off from the control plane for longer than
    /// its lease and stopped the task itself (self-fencing); the server has
    /// ended the execution by then.
    WorkerLost => "worker_lost",
}

impl FailureReason {
    /// The reason the server maps to a terminal state: an unknown label
    /// counts as [`FailureReason::Unknown`].
    pub fn known(&self) -> &FailureReason {
        match self {
            FailureReason::Other(_) => &FailureReason::Unknown,
            known => known,
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let label = String::deserialize(deserializer)?;
        Ok(FailureReason::from_wire(&label))
    }
}

/// `task_failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailed {
    /// Run id.
    pub task_id: String,
    /// User-facing message.
    #[serde(default)]
    pub message: String,
    /// Failure label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// Exit code (128+signal for signal deaths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Execution id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

/// Server → worker messages.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerToWorker {
    /// Run this.
    TaskAssignment(Box<TaskAssignment>),
    /// Stop this.
    TaskCancellation(TaskCancellation),
}

/// Worker → server messages.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerToServer {
    /// Capacity and running executions.
    WorkerHello(WorkerHello),
    /// Accepted.
    TaskClaimed(TaskClaimed),
    /// Refused (run stays queued).
    TaskRejected(TaskRejected),
    /// Sandbox ready.
    TaskStarted(TaskStarted),
    /// Finished.
    TaskCompleted(TaskCompleted),
    /// Failed.
    TaskFailed(TaskFailed),
    /// Taking no new work.
    WorkerDraining,
}

impl ServerToWorker {
    /// Encodes into a frame.
    pub fn to_envelope(&self) -> Envelope {
        match self {
            ServerToWorker::TaskAssignment(a) => Envelope::new("task_assignment", a),
            ServerToWorker::TaskCancellation(c) => Envelope::new("task_cancellation", c),
        }
    }

    /// Decodes a frame; `Ok(None)` for a message type this version does not know.
    pub fn from_envelope(env: Envelope) -> Result<Option<Self>, EnvelopeError> {
        Ok(Some(match env.kind.as_str() {
            "task_assignment" => ServerToWorker::TaskAssignment(Box::new(env.decode()?)),
            "task_cancellation" => ServerToWorker::TaskCancellation(env.decode()?),
            _ => return Ok(None),
        }))
    }
}

impl WorkerToServer {
    /// Encodes into a frame.
    pub fn to_envelope(&self) -> Envelope {
        match self {
            WorkerToServer::WorkerHello(m) => Envelope::new("worker_hello", m),
            WorkerToServer::TaskClaimed(m) => Envelope::new("task_claimed", m),
            WorkerToServer::TaskRejected(m) => Envelope::new("task_rejected", m),
            WorkerToServer::TaskStarted(m) => Envelope::new("task_started", m),
            WorkerToServer::TaskCompleted(m) => Envelope::new("task_completed", m),
            WorkerToServer::TaskFailed(m) => Envelope::new("task_failed", m),
            WorkerToServer::WorkerDraining => Envelope {
                kind: "worker_draining".to_owned(),
                data: serde_json::json!({}),
            },
        }
    }

    /// Decodes a frame; `Ok(None)` for a message type this version does not know.
    pub fn from_envelope(env: Envelope) -> Result<Option<Self>, EnvelopeError> {
        Ok(Some(match env.kind.as_str() {
            "worker_hello" => WorkerToServer::WorkerHello(env.decode()?),
            "task_claimed" => WorkerToServer::TaskClaimed(env.decode()?),
            "task_rejected" => WorkerToServer::TaskRejected(env.decode()?),
            "task_started" => WorkerToServer::TaskStarted(env.decode()?),
            "task_completed" => WorkerToServer::TaskCompleted(env.decode()?),
            "task_failed" => WorkerToServer::TaskFailed(env.decode()?),
            "worker_draining" => WorkerToServer::WorkerDraining,
            _ => return Ok(None),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_are_ignored_not_errors() {
        let env = Envelope::parse(r#"{"type":"heartbeat"}"#).unwrap();
        assert!(WorkerToServer::from_envelope(env).unwrap().is_none());
    }

    #[test]
    fn cancellation_round_trips_with_oz_shape() {
        let msg = ServerToWorker::TaskCancellation(TaskCancellation {
            task_id: "r1".into(),
        });
        let text = msg.to_envelope().to_text();
        assert_eq!(
            text,
            r#"{"type":"task_cancellation","data":{"task_id":"r1"}}"#
        );
        let back = ServerToWorker::from_envelope(Envelope::parse(&text).unwrap()).unwrap();
        assert_eq!(back, Some(msg));
    }

    fn assignment_with(shape: InstanceShape) -> ServerToWorker {
        let at = Timestamp::from_unix_millis(0);
        ServerToWorker::TaskAssignment(Box::new(TaskAssignment {
            task_id: "r1".into(),
            execution_id: "e1".into(),
            task: Task {
                id: "r1".into(),
                title: "t".into(),
                task_definition: TaskDefinition { prompt: "p".into() },
                created_at: at,
                updated_at: at,
                owner: TaskOwner {
                    kind: "TEAM".into(),
                    id: 1,
                },
                agent_config_snapshot: None,
                agent_conversation_id: None,
            },
            docker_image: None,
            sidecar_image: None,
            env_vars: BTreeMap::new(),
            additional_sidecars: Vec::new(),
            additional_oz_args: Vec::new(),
            instance_shape: Some(shape),
            environment: None,
        }))
    }

    #[test]
    fn oz_instance_shape_is_integers_on_the_wire() {
        let msg = assignment_with(InstanceShape {
            vcpus: Some(1.5),
            memory_gb: Some(4.0),
        });
        let text = msg.to_envelope().to_text();
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        let shape = &frame["data"]["instance_shape"];
        // What the stock worker's `struct { Vcpus int; MemoryGb int }` accepts.
        assert!(shape["vcpus"].is_u64(), "{shape}");
        assert!(shape["memory_gb"].is_u64(), "{shape}");
        assert_eq!(shape["vcpus"], 2, "a fraction is rounded up");
        assert_eq!(shape["memory_gb"], 4);

        // An unset axis stays off the wire; fractions are still read.
        let text = assignment_with(InstanceShape {
            vcpus: None,
            memory_gb: Some(0.5),
        })
        .to_envelope()
        .to_text();
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            frame["data"]["instance_shape"],
            serde_json::json!({"memory_gb": 1}),
            "{text}"
        );
        let back: InstanceShape = serde_json::from_str(r#"{"vcpus":0.5,"memory_gb":2}"#).unwrap();
        assert_eq!(back.vcpus, Some(0.5));
        assert_eq!(back.memory_gb, Some(2.0));
    }

    #[test]
    fn an_unknown_failure_reason_is_kept_and_counts_as_unknown() {
        let text = r#"{"type":"task_failed","data":{"task_id":"r1","message":"m",
            "failure_reason":"some_future_reason","exit_code":3,"a_future_field":{"x":1}}}"#;
        let msg = WorkerToServer::from_envelope(Envelope::parse(text).unwrap())
            .unwrap()
            .unwrap();
        let WorkerToServer::TaskFailed(f) = &msg else {
            panic!("{msg:?}")
        };
        let reason = f.failure_reason.clone().unwrap();
        assert_eq!(reason, FailureReason::Other("some_future_reason".into()));
        assert_eq!(reason.known(), &FailureReason::Unknown);
        assert_eq!(f.exit_code, Some(3));
        let again = msg.to_envelope().to_text();
        assert!(
            again.contains(r#""failure_reason":"some_future_reason""#),
            "{again}"
        );
    }

    #[test]
    fn every_known_failure_reason_round_trips() {
        for reason in FailureReason::KNOWN {
            let text = serde_json::to_string(reason).unwrap();
            assert_eq!(text, format!("\"{}\"", reason.as_str()));
            let back: FailureReason = serde_json::from_str(&text).unwrap();
            assert_eq!(&back, reason);
        }
        assert_eq!(
            serde_json::to_string(&FailureReason::ContainerOom).unwrap(),
            r#""container_oom""#
        );
    }

    #[test]
    fn bad_payload_names_the_type() {
        let env = Envelope::parse(r#"{"type":"task_claimed","data":{"task_id":5}}"#).unwrap();
        let err = WorkerToServer::from_envelope(env).unwrap_err();
        assert!(err.to_string().contains("task_claimed"), "{err}");
    }
}

/// Longest worker id, in bytes.
pub const MAX_WORKER_ID_BYTES: usize = 128;

/// What a worker id may hold, as refusals say it. The stock
/// `oz-agent-worker` only reserves the prefix `warp`; Hangar also refuses
/// what cannot appear in a `--host`, a path or a log line unquoted.
pub const WORKER_ID_RULE: &str = "allowed: 1 to 128 bytes of UTF-8, any characters except \
     whitespace, control characters and `/` (e.g. letters, digits, `-`, `_`, `.`, `:`)";

/// Whether `id` is a valid worker id (what `--host` must match exactly);
/// the server and the worker check with this one rule ([`WORKER_ID_RULE`]).
/// U+FFFD is refused too: it is what bytes that are not UTF-8 decode to.
pub fn is_valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_WORKER_ID_BYTES
        && !id.chars().any(|c| {
            c.is_whitespace() || c.is_control() || c == '/' || c == char::REPLACEMENT_CHARACTER
        })
}

#[cfg(test)]
mod worker_id_tests {
    use super::*;

    #[test]
    fn worker_ids_follow_one_rule() {
        for ok in ["build-box", "local", "pool:7", "ü-1", &"x".repeat(128)] {
            assert!(is_valid_worker_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "a\tb", "a\u{fffd}", &"x".repeat(129)] {
            assert!(!is_valid_worker_id(bad), "{bad:?}");
        }
    }
}
