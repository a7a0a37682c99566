//! The Job and the Secret of one execution, built from the assignment and
//! the backend config. Pure: no API calls, so the shape is snapshot-tested.
//!
//! ```text
//! Job hangar-<run id>-<execution prefix>   labels hangar.dev/{run,execution,worker}
//! └─ Pod
//!    ├─ init hangar-agent   copies /agent/hangar from the agent image into an emptyDir
//!    ├─ init …              the pod_template's (native sidecars keep restartPolicy: Always)
//!    ├─ task                the task image: setup_command, `hangar agent run …`, teardown
//!    │                      envFrom: Secret <job>-env (run token, secrets, variables)
//!    └─ …                   the pod_template's other containers, unchanged
//! Secret <job>-env          owned by the Job: deleted with it
//! ```
//!
//! No secret value is in the Job: the task's whole environment is in the
//! Secret, which the Job owns, so garbage collection removes it with the Job.

use super::KubernetesConfig;
use crate::backends::{BackendError, TaskSpec};
use hangar_protocol::worker::FailureReason;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, ExecAction, Lifecycle,
    LifecycleHandler, PodSpec, PodTemplateSpec, ResourceRequirements, Secret, SecretEnvSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

/// Label: the run.
pub const LABEL_RUN: &str = "hangar.dev/run";
/// Label: the execution.
pub const LABEL_EXECUTION: &str = "hangar.dev/execution";
/// Label: the worker (label-safe form of its id).
pub const LABEL_WORKER: &str = "hangar.dev/worker";
/// Annotation: the worker id as given (labels cannot hold every id).
pub const ANNOTATION_WORKER_ID: &str = "hangar.dev/worker-id";
/// Annotation: the run id as given.
pub const ANNOTATION_RUN_ID: &str = "hangar.dev/run-id";
/// Annotation: the execution id as given.
pub const ANNOTATION_EXECUTION_ID: &str = "hangar.dev/execution-id";
/// The agent's container.
pub const TASK_CONTAINER: &str = "task";
/// The init container that copies the agent.
pub const AGENT_INIT_CONTAINER: &str = "hangar-agent";
/// Where the task's working directory is mounted.
pub const WORKSPACE: &str = "/workspace";
/// Where the agent binary is mounted in the task container.
pub const AGENT_DIR: &str = "/agent";
/// First line of the termination message when `setup_command` failed.
pub const SETUP_FAILED: &str = "hangar: setup_command failed";
/// Image when neither the environment nor the config names one.
pub const FALLBACK_IMAGE: &str = "ubuntu:24.04";

/// The Job of an execution: `hangar-<run id>-<last 8 of the execution id>`
/// (≤ 52 characters, a DNS label for the ids the server makes; the end of a
/// UUIDv7 is its random part, the start its time).
pub fn job_name(task_id: &str, execution_id: &str) -> String {
    let alnum: Vec<char> = execution_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let exec: String = alnum[alnum.len().saturating_sub(8)..].iter().collect();
    let run: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!(
        "hangar-{}-{}",
        run.trim_matches('-'),
        exec.to_ascii_lowercase()
    )
}

/// The Secret of a Job.
pub fn secret_name(job: &str) -> String {
    format!("{job}-env")
}

/// `value` as a label value: at most 63 of `[A-Za-z0-9._-]`, starting and
/// ending alphanumeric; anything else is replaced and a hash keeps it unique.
pub fn label_value(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed == value && value.len() <= 63 {
        return value.to_owned();
    }
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(value.as_bytes())[..4]);
    let keep: String = trimmed.chars().take(54).collect();
    let keep = keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if keep.is_empty() {
        hash
    } else {
        format!("{keep}-{hash}")
    }
}

/// Labels of every object of an execution.
pub fn labels(
    config: &KubernetesConfig,
    task_id: &str,
    execution_id: &str,
) -> BTreeMap<String, String> {
    let mut labels = config.extra_labels.clone();
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "hangar-worker".into(),
    );
    labels.insert(LABEL_RUN.into(), label_value(task_id));
    labels.insert(LABEL_EXECUTION.into(), label_value(execution_id));
    labels.insert(LABEL_WORKER.into(), label_value(&config.worker_id));
    labels
}

/// The shell script the task container runs (`sh -c SCRIPT hangar-task
/// ARGS…`): the setup command, the agent with the arguments, then the
/// teardown command, also when the pod is deleted (SIGTERM), and only once.
fn task_script(config: &KubernetesConfig) -> String {
    let teardown = guarded_teardown(config.teardown_command.as_deref().unwrap_or(":"));
    let mut script = format!(
        "teardown() {{ {teardown}\n}}\n\
         on_term() {{ [ -n \"${{pid:-}}\" ] && kill -TERM \"$pid\" 2>/dev/null && wait \"$pid\"; rc=$?; teardown; exit \"$rc\"; }}\n\
         trap on_term TERM INT\n"
    );
    if let Some(setup) = &config.setup_command {
        script.push_str(&format!(
            "( {setup}\n) || {{ rc=$?; printf '%s (exit code %s)\\n' '{SETUP_FAILED}' \"$rc\" | tee /dev/termination-log >&2; teardown; exit \"$rc\"; }}\n"
        ));
    }
    script.push_str(&format!(
        "{AGENT_DIR}/hangar \"$@\" &\npid=$!\nwait \"$pid\"\nrc=$?\nteardown\nexit \"$rc\"\n"
    ));
    script
}

/// `teardown` run at most once per pod, whoever calls it first: the task
/// script when the agent ends or on SIGTERM, or the preStop hook.
fn guarded_teardown(teardown: &str) -> String {
    format!(
        "[ -e {WORKSPACE}/.hangar-teardown ] || {{ : > {WORKSPACE}/.hangar-teardown; {teardown}\n}}"
    )
}

/// The Job for `spec`: `args` follow `hangar` in the task container.
pub fn build_job(
    config: &KubernetesConfig,
    spec: &TaskSpec,
    args: Vec<String>,
) -> Result<Job, BackendError> {
    let name = job_name(&spec.task_id, &spec.execution_id);
    let labels = labels(config, &spec.task_id, &spec.execution_id);
    let mut annotations = config.extra_annotations.clone();
    annotations.insert(ANNOTATION_WORKER_ID.into(), config.worker_id.clone());
    annotations.insert(ANNOTATION_RUN_ID.into(), spec.task_id.clone());
    annotations.insert(ANNOTATION_EXECUTION_ID.into(), spec.execution_id.clone());

    let mut pod: PodSpec = config.pod_template.clone().unwrap_or_default();
    pod.restart_policy = Some("Never".into());
    if pod.automount_service_account_token.is_none() {
        // Tasks need no Kubernetes API; a template can still opt in.
        pod.automount_service_account_token = Some(false);
    }
    add_workspace_and_agent(&mut pod, config);

    let image = spec
        .assignment
        .docker_image
        .clone()
        .or_else(|| config.default_image.clone())
        .unwrap_or_else(|| FALLBACK_IMAGE.to_owned());
    hangar_protocol::repository::check_image_ref(&image).map_err(|e| {
        BackendError::new(
            FailureReason::InvalidImage,
            format!("refusing image `{image}`: {e}"),
        )
    })?;
    let containers = &mut pod.containers;
    let at = match containers.iter().position(|c| c.name == TASK_CONTAINER) {
        Some(i) => i,
        None => {
            containers.insert(
                0,
                Container {
                    name: TASK_CONTAINER.into(),
                    ..Default::default()
                },
            );
            0
        }
    };
    configure_task(&mut containers[at], config, spec, image, args, &name);

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(config.active_deadline_seconds as i64),
            // Succeeded Jobs are deleted by the worker at once; a failed one
            // stays this long for `kubectl describe`, then goes.
            ttl_seconds_after_finished: Some(config.ttl_seconds_after_finished as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The workspace and agent volumes, and the init container that copies
/// the agent binary from the agent image (before the template's own).
fn add_workspace_and_agent(pod: &mut PodSpec, config: &KubernetesConfig) {
    let volumes = pod.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: "hangar-workspace".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: config.workspace_size_limit.clone().map(Quantity),
            ..Default::default()
        }),
        ..Default::default()
    });
    volumes.push(Volume {
        name: "hangar-agent".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });

    let copy_agent = Container {
        name: AGENT_INIT_CONTAINER.into(),
        image: Some(config.agent_image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "cp -L /agent/hangar /hangar-agent/hangar && chmod 0555 /hangar-agent/hangar".into(),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: "hangar-agent".into(),
            mount_path: "/hangar-agent".into(),
            ..Default::default()
        }]),
        resources: Some(small_resources()),
        security_context: Some(restricted_security()),
        ..Default::default()
    };
    let mut init = vec![copy_agent];
    init.extend(pod.init_containers.take().unwrap_or_default());
    pod.init_containers = Some(init);
}

/// The task container of Job `name`: image, the task script running
/// `hangar <args>`, the Secret's environment, mounts, the teardown hook,
/// security context and the run's shape.
fn configure_task(
    task: &mut Container,
    config: &KubernetesConfig,
    spec: &TaskSpec,
    image: String,
    args: Vec<String>,
    name: &str,
) {
    task.image = Some(image);
    if task.image_pull_policy.is_none() {
        task.image_pull_policy = config.image_pull_policy.clone();
    }
    let mut command = vec!["/bin/sh".into(), "-c".into(), task_script(config)];
    command.push("hangar-task".into());
    task.command = Some(command);
    task.args = Some(args);
    task.working_dir = Some(WORKSPACE.into());
    task.env_from
        .get_or_insert_with(Vec::new)
        .push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret_name(name),
                optional: Some(false),
            }),
            ..Default::default()
        });
    let mounts = task.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(VolumeMount {
        name: "hangar-workspace".into(),
        mount_path: WORKSPACE.into(),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "hangar-agent".into(),
        mount_path: AGENT_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    if let Some(teardown) = &config.teardown_command {
        // Also when the kubelet kills the pod (deletion, eviction, deadline)
        // before the script's own trap could run.
        task.lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        guarded_teardown(teardown),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if task.security_context.is_none() {
        task.security_context = Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: Some(
                    crate::backends::docker::DEFAULT_CAPABILITIES
                        .iter()
                        .map(|c| (*c).to_owned())
                        .collect(),
                ),
            }),
            ..Default::default()
        });
    }
    apply_shape(task, spec);
}

/// Requests and limits from the run's instance shape (requests = limits per
/// axis), over the template's task resources.
fn apply_shape(task: &mut Container, spec: &TaskSpec) {
    let Some(shape) = &spec.assignment.instance_shape else {
        return;
    };
    let mut set = Vec::new();
    if let Some(cpus) = shape.vcpus.filter(|v| *v > 0.0) {
        set.push(("cpu", Quantity(format_number(cpus))));
    }
    if let Some(gb) = shape.memory_gb.filter(|v| *v > 0.0) {
        set.push((
            "memory",
            Quantity(format!("{}Mi", (gb * 1024.0).ceil() as u64)),
        ));
    }
    if set.is_empty() {
        return;
    }
    let resources = task
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    for (name, q) in set {
        resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), q.clone());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), q);
    }
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as u64)
    } else {
        format!("{}m", (v * 1000.0).ceil() as u64)
    }
}

fn small_resources() -> ResourceRequirements {
    resources(("10m", "32Mi"), ("500m", "128Mi"))
}

/// Requests and limits of cpu and memory, each `(cpu, memory)`.
pub(super) fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    let q = |(cpu, mem): (&str, &str)| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(mem.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(q(requests)),
        limits: Some(q(limits)),
        ..Default::default()
    }
}

fn restricted_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// The Secret holding `env`, owned by `job` (which must have its uid).
pub fn build_secret(job: &Job, env: &BTreeMap<String, String>) -> Secret {
    let meta = &job.metadata;
    let name = meta.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&name)),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: meta.uid.clone().unwrap_or_default(),
                controller: Some(false),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(env.clone()),
        ..Default::default()
    }
}
