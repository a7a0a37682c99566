//! Where an execution's Job stands, read from the Job, its Pod and the
//! Pod's Events, in the failure taxonomy of PROTOCOL.md §2. Pure: the
//! execution feeds it what it watched, and the tests feed it objects.

use super::spec::{AGENT_INIT_CONTAINER, SETUP_FAILED, TASK_CONTAINER};
use crate::backends::BackendError;
use hangar_protocol::worker::FailureReason;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod};
use std::time::Duration;

/// How long a container may wait on a missing config (its Secret is created
/// right after the Job) before that counts as a failure.
pub const CONFIG_GRACE: Duration = Duration::from_secs(30);

/// What the objects say.
#[derive(Debug)]
pub enum Phase {
    /// Not started yet (scheduling, pulling, init containers).
    Pending,
    /// The task container runs.
    Running,
    /// The Job completed.
    Succeeded,
    /// The task container exited non-zero (the agent's own failure).
    Exited {
        /// Its exit code (128+signal).
        code: i32,
        /// Why, for the message.
        detail: String,
    },
    /// The platform failed the task.
    Failed(BackendError),
}

/// What the classification needs besides the objects.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Seconds since the epoch, now.
    pub now: i64,
    /// How long a pod may stay unschedulable.
    pub unschedulable_timeout: Duration,
}

fn secs(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_second()
}

/// Reads the Job, its pod (the newest, if several) and the pod's events.
pub fn classify(job: &Job, pod: Option<&Pod>, events: &[Event], clock: Clock) -> Phase {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let job_condition = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
            .cloned()
    };
    if let Some(pod) = pod
        && let Some(phase) = classify_pod(pod, events, clock)
    {
        return phase;
    }
    if job_condition("Complete").is_some() {
        return Phase::Succeeded;
    }
    if let Some(failed) = job_condition("Failed") {
        let reason = failed.reason.clone().unwrap_or_default();
        let message = failed.message.clone().unwrap_or_default();
        if reason == "DeadlineExceeded" || message.to_lowercase().contains("deadline") {
            let limit = job
                .spec
                .as_ref()
                .and_then(|s| s.active_deadline_seconds)
                .unwrap_or_default();
            return Phase::Failed(BackendError::new(
                FailureReason::ActiveDeadline,
                format!(
                    "Job {job_name} ran longer than its active deadline ({limit} s) and was \
                     stopped: {message}. Raise backend.kubernetes.active_deadline_seconds for \
                     longer tasks."
                ),
            ));
        }
        return Phase::Failed(BackendError::new(
            FailureReason::JobFailed,
            format!("Job {job_name} failed ({reason}): {message}"),
        ));
    }
    match pod {
        Some(p)
            if task_status(p)
                .and_then(|s| s.state.as_ref()?.running.as_ref())
                .is_some() =>
        {
            Phase::Running
        }
        _ => Phase::Pending,
    }
}

/// The status of the task container: `task`, else the first container (a
/// Job of another shape, such as the preflight's).
fn task_status(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let first = pod
        .spec
        .as_ref()?
        .containers
        .first()
        .map(|c| c.name.as_str());
    statuses
        .iter()
        .find(|s| s.name == TASK_CONTAINER)
        .or_else(|| statuses.iter().find(|s| Some(s.name.as_str()) == first))
}

/// Age of `pod` in seconds.
fn age(pod: &Pod, clock: Clock) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| clock.now - secs(t))
        .unwrap_or_default()
}

fn classify_pod(pod: &Pod, events: &[Event], clock: Clock) -> Option<Phase> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let reason = status.reason.clone().unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    // 1. Evicted (node pressure, a workspace over its sizeLimit, preemption).
    if reason == "Evicted" || message.to_lowercase().contains("evict") {
        return Some(Phase::Failed(BackendError::new(
            FailureReason::Evicted,
            format!(
                "pod {name} was evicted: {message}. A workspace over \
                 backend.kubernetes.workspace_size_limit, or memory or disk pressure on the \
                 node, evicts pods; raise the limit or the task's requests."
            ),
        )));
    }
    // 2. Init containers; a native sidecar's exit never fails the task.
    if let Some(f) = init_container_failure(pod, status, &name, clock) {
        return Some(f);
    }
    // 3. The task container.
    if let Some(f) = task_container_failure(pod, &name, clock) {
        return Some(f);
    }
    // 4. Scheduling.
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        && c.reason.as_deref() == Some("Unschedulable")
    {
        let since = c
            .last_transition_time
            .as_ref()
            .map(secs)
            .unwrap_or_else(|| clock.now - age(pod, clock));
        let waited = clock.now - since;
        if waited >= clock.unschedulable_timeout.as_secs() as i64 {
            return Some(Phase::Failed(BackendError::new(
                FailureReason::Unschedulable,
                format!(
                    "pod {name} could not be scheduled for {waited} s: {}. Lower the run's \
                     instance shape or the task's requests in pod_template, check its \
                     nodeSelector and tolerations, or add nodes; \
                     backend.kubernetes.unschedulable_timeout sets how long to wait.",
                    c.message.clone().unwrap_or_default()
                ),
            )));
        }
    }
    // 5. Volumes.
    if phase == "Pending"
        && let Some(e) = events.iter().find(|e| {
            e.reason.as_deref() == Some("FailedMount")
                || e.message
                    .as_deref()
                    .is_some_and(|m| m.contains("MountVolume.SetUp failed"))
        })
    {
        return Some(Phase::Failed(BackendError::new(
            FailureReason::VolumeMount,
            format!(
                "a volume of pod {name} cannot be mounted: {}. Check the volumes of \
                 pod_template (PersistentVolumeClaims, ConfigMaps, Secrets must exist in the \
                 namespace).",
                e.message.clone().unwrap_or_default()
            ),
        )));
    }
    if phase == "Failed" {
        return Some(Phase::Failed(BackendError::new(
            FailureReason::JobFailed,
            format!("pod {name} failed ({reason}): {message}"),
        )));
    }
    None
}

/// Step 2 of [`classify_pod`]: an init container (not a native sidecar)
/// that failed or cannot start.
fn init_container_failure(
    pod: &Pod,
    status: &k8s_openapi::api::core::v1::PodStatus,
    name: &str,
    clock: Clock,
) -> Option<Phase> {
    let sidecars: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|c| {
            c.iter()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    for s in status.init_container_statuses.iter().flatten() {
        if sidecars.contains(&s.name) {
            continue;
        }
        if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref())
            && exit_code(t) != 0
        {
            let what = if s.name == AGENT_INIT_CONTAINER {
                "copying the agent from backend.kubernetes.agent_image failed; check that the \
                 image holds /agent/hangar (build it with scripts/image)"
                    .to_owned()
            } else {
                "check the pod_template's init container".to_owned()
            };
            return Some(Phase::Failed(
                BackendError::new(
                    FailureReason::InitContainer,
                    format!(
                        "init container `{}` of pod {name} exited with {} ({}{}): {what}",
                        s.name,
                        exit_code(t),
                        t.reason.clone().unwrap_or_default(),
                        t.message
                            .as_deref()
                            .map(|m| format!(": {}", m.trim()))
                            .unwrap_or_default(),
                    ),
                )
                .with_exit_code(Some(exit_code(t))),
            ));
        }
        if let Some(f) = waiting_failure(name, s, true, age(pod, clock)) {
            return Some(f);
        }
    }
    None
}

/// Step 3 of [`classify_pod`]: the task container failed (OOM, setup,
/// exit) or cannot start.
fn task_container_failure(pod: &Pod, name: &str, clock: Clock) -> Option<Phase> {
    if let Some(s) = task_status(pod) {
        if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref())
            && exit_code(t) != 0
        {
            let code = exit_code(t);
            let msg = t.message.clone().unwrap_or_default();
            if t.reason.as_deref() == Some("OOMKilled") {
                let limit = pod
                    .spec
                    .as_ref()
                    .and_then(|p| p.containers.iter().find(|c| c.name == TASK_CONTAINER))
                    .and_then(|c| {
                        c.resources
                            .as_ref()?
                            .limits
                            .as_ref()?
                            .get("memory")
                            .cloned()
                    })
                    .map(|q| q.0)
                    .unwrap_or_else(|| "none".into());
                return Some(Phase::Failed(
                    BackendError::new(
                        FailureReason::ContainerOom,
                        format!(
                            "the task container of pod {name} ran out of memory (OOMKilled, \
                             memory limit {limit}); give the run a larger instance shape or \
                             raise the task container's limit in pod_template"
                        ),
                    )
                    .with_exit_code(Some(code)),
                ));
            }
            if msg.contains(SETUP_FAILED) {
                return Some(Phase::Failed(
                    BackendError::new(
                        FailureReason::SetupCommand,
                        format!("{} in pod {name}", msg.trim()),
                    )
                    .with_exit_code(Some(code)),
                ));
            }
            return Some(Phase::Exited {
                code,
                detail: format!(
                    "the task container of pod {name} exited with {code} ({})",
                    t.reason.clone().unwrap_or_else(|| "Error".into())
                ),
            });
        }
        if let Some(f) = waiting_failure(name, s, false, age(pod, clock)) {
            return Some(f);
        }
    }
    None
}

/// Exit code of a terminated container: 128+signal for a signal death.
fn exit_code(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> i32 {
    match t.signal {
        Some(sig) if sig > 0 => 128 + sig,
        _ => t.exit_code,
    }
}

/// A container waiting for a reason that will not go away by itself.
fn waiting_failure(pod: &str, s: &ContainerStatus, init: bool, age: i64) -> Option<Phase> {
    let w = s.state.as_ref()?.waiting.as_ref()?;
    let reason = w.reason.as_deref()?;
    let message = w.message.clone().unwrap_or_default();
    let image = &s.image;
    let kind = if init { "init container" } else { "container" };
    let failure = match reason {
        "ErrImagePull" | "ImagePullBackOff" => BackendError::new(
            FailureReason::ImagePull,
            format!(
                "cannot pull image `{image}` for {kind} `{}` of pod {pod}: {message}. Check the \
                 image name and tag, and that the namespace can pull from its registry \
                 (pod_template.imagePullSecrets).",
                s.name
            ),
        ),
        "InvalidImageName" => BackendError::new(
            FailureReason::InvalidImage,
            format!(
                "image `{image}` of {kind} `{}` is not a valid reference: {message}",
                s.name
            ),
        ),
        "CreateContainerConfigError" | "CreateContainerError"
            if age >= CONFIG_GRACE.as_secs() as i64 =>
        {
            BackendError::new(
                if init {
                    FailureReason::InitContainer
                } else {
                    FailureReason::ContainerCreate
                },
                format!(
                    "{kind} `{}` of pod {pod} cannot be created ({reason}): {message}",
                    s.name
                ),
            )
        }
        _ => return None,
    };
    Some(Phase::Failed(failure))
}
