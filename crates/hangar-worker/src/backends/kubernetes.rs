//! The Kubernetes backend: each execution is a Job in the team's cluster.
//!
//! ```text
//! start    ─► connect (kubeconfig, in-cluster, or the default rules); preflight:
//!             SelfSubjectAccessReview for every verb used, then a short Job
//!             that proves admission, scheduling and the image pull
//! prepare  ─► create the Job, then its Secret (owned by the Job); wait for the
//!             task container to run, classifying every failure on the way
//! wait     ─► watch the execution's Pods (and poll the Job) until it ends
//! cancel   ─► delete the Job with foreground propagation (the pod gets its
//!             grace period; the task's teardown runs on SIGTERM)
//! cleanup  ─► succeeded: delete the Job; failed: delete the Secret at once
//!             and keep the Job for ttl_seconds_after_finished
//! recover  ─► a restarted worker lists its Jobs by label and adopts them
//! ```
//!
//! What the Oz worker gets wrong and this does not: cancel deletes the Job,
//! no secret value is in the Job spec, teardown runs on normal exit too, and
//! a restarted worker reattaches instead of losing its runs.

mod execution;
pub mod spec;
pub mod status;

use super::factory::{self, BackendFactory};
use super::{Backend, BackendError, Execution, Recovered, TaskSpec};
use crate::config::{BackendKind, WorkerConfig};
use crate::worker::WorkerError;
use hangar_protocol::worker::FailureReason;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Env naming the image task pods copy `/agent` from (the Helm chart sets it
/// to the worker's own image).
pub const ENV_AGENT_IMAGE: &str = "HANGAR_AGENT_IMAGE";
/// How long the preflight Job may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(90);

/// The permissions the backend uses: `(verb, group, resource, subresource)`.
/// The Helm chart's Role grants exactly these (`deploy/helm/check.py`
/// compares them).
pub const PERMISSIONS: &[(&str, &str, &str, &str)] = &[
    ("create", "batch", "jobs", ""),
    ("get", "batch", "jobs", ""),
    ("list", "batch", "jobs", ""),
    ("watch", "batch", "jobs", ""),
    ("delete", "batch", "jobs", ""),
    ("get", "", "pods", ""),
    ("list", "", "pods", ""),
    ("watch", "", "pods", ""),
    ("get", "", "pods", "log"),
    ("list", "", "events", ""),
    ("watch", "", "events", ""),
    ("create", "", "secrets", ""),
    ("get", "", "secrets", ""),
    ("delete", "", "secrets", ""),
];

/// Everything the Kubernetes backend needs.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// This worker's id.
    pub worker_id: String,
    /// Namespace of the Jobs; empty: the kubeconfig's.
    pub namespace: String,
    /// Kubeconfig file; `None`: in-cluster, else the default loading rules.
    pub kubeconfig: Option<PathBuf>,
    /// The server URL as pods reach it.
    pub server_url: String,
    /// Image of tasks without an environment image.
    pub default_image: Option<String>,
    /// Pull policy of task images.
    pub image_pull_policy: Option<String>,
    /// Image the pods copy `/agent/hangar` from.
    pub agent_image: String,
    /// Image of the preflight Job.
    pub preflight_image: String,
    /// Resources of the preflight container.
    pub preflight_resources: Option<ResourceRequirements>,
    /// Runs before the agent in the task container.
    pub setup_command: Option<String>,
    /// Runs after the agent, and on deletion.
    pub teardown_command: Option<String>,
    /// Labels on every Job and Pod.
    pub extra_labels: BTreeMap<String, String>,
    /// Annotations on every Job and Pod.
    pub extra_annotations: BTreeMap<String, String>,
    /// Job `activeDeadlineSeconds`.
    pub active_deadline_seconds: u64,
    /// How long failed Jobs stay.
    pub ttl_seconds_after_finished: u64,
    /// `/workspace` emptyDir size limit.
    pub workspace_size_limit: Option<String>,
    /// How long a pod may stay unschedulable.
    pub unschedulable_timeout: Duration,
    /// Merged into every task pod.
    pub pod_template: Option<PodSpec>,
    /// Task env from the worker config (`-e`).
    pub env: Vec<(String, String)>,
    /// `--no-cleanup` keeps Jobs and Secrets.
    pub cleanup: bool,
    /// `--idle-on-complete`, for the agent.
    pub idle_on_complete: Option<String>,
    /// How often the execution re-reads its Job besides its pod watch.
    pub poll_interval: Duration,
}

impl BackendFactory for KubernetesConfig {
    const KIND: BackendKind = BackendKind::Kubernetes;
    type Backend = Kubernetes;

    fn from_worker(config: &WorkerConfig) -> Result<Self, WorkerError> {
        Self::resolve(config).map_err(factory::backend_error::<Self>)
    }

    fn build(self) -> Result<Kubernetes, BackendError> {
        Ok(Kubernetes::new(self))
    }
}

impl KubernetesConfig {
    /// The backend's part of a worker config, checked.
    fn resolve(config: &crate::WorkerConfig) -> Result<Self, BackendError> {
        let k = &config.kubernetes;
        let invalid = |msg: String| BackendError::new(FailureReason::JobCreate, msg);
        let agent_image = k
            .agent_image
            .clone()
            .or_else(|| {
                std::env::var(ENV_AGENT_IMAGE)
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .ok_or_else(|| {
                invalid(format!(
                    "backend.kubernetes.agent_image is not set: the image task pods copy the \
                     agent from (build it with scripts/image and push it; the Helm chart sets \
                     {ENV_AGENT_IMAGE} to the worker's own image)"
                ))
            })?;
        for (key, image) in [
            ("agent_image", Some(&agent_image)),
            ("default_image", k.default_image.as_ref()),
            ("preflight_image", k.preflight_image.as_ref()),
        ] {
            if let Some(image) = image {
                hangar_protocol::repository::check_image_ref(image)
                    .map_err(|e| invalid(format!("backend.kubernetes.{key}: {e}")))?;
            }
        }
        if let Some(p) = &k.image_pull_policy
            && !matches!(p.as_str(), "Always" | "IfNotPresent" | "Never")
        {
            return Err(invalid(format!(
                "backend.kubernetes.image_pull_policy `{p}`: use Always, IfNotPresent or Never"
            )));
        }
        let pod_template = match &k.pod_template {
            Some(v) => Some(serde_json::from_value::<PodSpec>(v.clone()).map_err(|e| {
                invalid(format!(
                    "backend.kubernetes.pod_template is not a PodSpec: {e}"
                ))
            })?),
            None => None,
        };
        let preflight_resources = match &k.preflight_resources {
            Some(v) => Some(
                serde_json::from_value::<ResourceRequirements>(v.clone()).map_err(|e| {
                    invalid(format!(
                        "backend.kubernetes.preflight_resources is not a ResourceRequirements: {e}"
                    ))
                })?,
            ),
            None => None,
        };
        if k.active_deadline_seconds == 0 {
            return Err(invalid(
                "backend.kubernetes.active_deadline_seconds must be above zero".into(),
            ));
        }
        Ok(KubernetesConfig {
            worker_id: config.worker_id.to_string(),
            namespace: k.namespace.clone().unwrap_or_default(),
            kubeconfig: k.kubeconfig.clone(),
            server_url: k
                .agent_server_url
                .clone()
                .unwrap_or_else(|| config.server_url.clone()),
            default_image: k.default_image.clone(),
            image_pull_policy: k.image_pull_policy.clone(),
            preflight_image: k
                .preflight_image
                .clone()
                .unwrap_or_else(|| agent_image.clone()),
            agent_image,
            preflight_resources,
            setup_command: k.setup_command.clone(),
            teardown_command: k.teardown_command.clone(),
            extra_labels: k.extra_labels.clone(),
            extra_annotations: k.extra_annotations.clone(),
            active_deadline_seconds: k.active_deadline_seconds,
            ttl_seconds_after_finished: k.ttl_seconds_after_finished,
            workspace_size_limit: k.workspace_size_limit.clone(),
            unschedulable_timeout: k.unschedulable_timeout,
            pod_template,
            env: config.env.clone(),
            cleanup: config.cleanup,
            idle_on_complete: config.idle_on_complete.clone(),
            poll_interval: Duration::from_secs(2),
        })
    }
}

/// What every execution of the backend shares.
pub(crate) struct Shared {
    pub config: KubernetesConfig,
    client: OnceCell<kube::Client>,
}

impl Shared {
    /// The client; [`Backend::start`] made it.
    pub fn client(&self) -> Result<kube::Client, BackendError> {
        self.client.get().cloned().ok_or_else(|| {
            BackendError::new(
                FailureReason::JobCreate,
                "the Kubernetes backend was not started",
            )
        })
    }
}

/// The Kubernetes backend.
pub struct Kubernetes {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("namespace", &self.shared.config.namespace)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    /// A backend over `config`; nothing is contacted before [`Backend::start`].
    pub fn new(config: KubernetesConfig) -> Self {
        Kubernetes {
            shared: Arc::new(Shared {
                config,
                client: OnceCell::new(),
            }),
        }
    }

    async fn has_secret(&self, ns: &str, job: &str) -> bool {
        let Ok(client) = self.shared.client() else {
            return false;
        };
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, ns);
        matches!(secrets.get_opt(&spec::secret_name(job)).await, Ok(Some(_)))
    }

    async fn connect(&self) -> Result<kube::Client, BackendError> {
        let fail = |msg: String| BackendError::new(FailureReason::JobCreate, msg);
        let c = &self.shared.config;
        let mut config = match &c.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    fail(format!(
                        "cannot read the kubeconfig {}: {e}",
                        path.display()
                    ))
                })?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| fail(format!("kubeconfig {}: {e}", path.display())))?
            }
            None => kube::Config::infer().await.map_err(|e| {
                fail(format!(
                    "no cluster to talk to: not in a pod, and no kubeconfig ($KUBECONFIG, \
                     ~/.kube/config); set backend.kubernetes.kubeconfig ({e})"
                ))
            })?,
        };
        config.read_timeout = Some(Duration::from_secs(300));
        let client = kube::Client::try_from(config)
            .map_err(|e| fail(format!("cannot make a Kubernetes client: {e}")))?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| fail(format!("the Kubernetes API server does not answer: {e}")))?;
        tracing::info!(version = %version.git_version, "connected to the Kubernetes API server");
        Ok(client)
    }

    /// Checks every permission the backend uses; names the missing ones.
    async fn check_permissions(&self, client: &kube::Client, ns: &str) -> Result<(), BackendError> {
        let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
        let mut missing = Vec::new();
        for (verb, group, resource, sub) in PERMISSIONS {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(ns.to_owned()),
                        verb: Some((*verb).to_owned()),
                        group: Some((*group).to_owned()),
                        resource: Some((*resource).to_owned()),
                        subresource: (!sub.is_empty()).then(|| (*sub).to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| {
                    BackendError::new(
                        FailureReason::JobCreate,
                        format!("cannot review the worker's permissions: {e}"),
                    )
                })?;
            if !answer.status.is_some_and(|s| s.allowed) {
                let full = match (group.is_empty(), sub.is_empty()) {
                    (true, true) => (*resource).to_owned(),
                    (true, false) => format!("{resource}/{sub}"),
                    (false, _) => format!("{resource}.{group}"),
                };
                missing.push(format!("`{verb}` on `{full}`"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(BackendError::new(
            FailureReason::JobCreate,
            format!(
                "the worker's service account lacks {} in namespace `{ns}`; grant the Role of \
                 deploy/helm/hangar-worker (it holds exactly what the backend uses)",
                missing.join(", ")
            ),
        ))
    }

    /// The preflight Job `name`: one container that runs `true` in the
    /// preflight image, with the pod template and labels of task Jobs.
    fn preflight_job(&self, name: &str) -> Job {
        let c = &self.shared.config;
        let mut pod = c.pod_template.clone().unwrap_or_default();
        pod.restart_policy = Some("Never".into());
        pod.automount_service_account_token = Some(false);
        pod.init_containers = None;
        pod.volumes = None;
        pod.containers = vec![Container {
            name: "preflight".into(),
            image: Some(c.preflight_image.clone()),
            image_pull_policy: c.image_pull_policy.clone(),
            command: Some(vec!["/bin/sh".into(), "-c".into(), "true".into()]),
            resources: Some(
                c.preflight_resources
                    .clone()
                    .unwrap_or_else(|| spec::resources(("10m", "16Mi"), ("100m", "64Mi"))),
            ),
            ..Default::default()
        }];
        let mut labels = c.extra_labels.clone();
        labels.insert(
            "app.kubernetes.io/managed-by".into(),
            "hangar-worker".into(),
        );
        labels.insert(
            "hangar.dev/preflight".into(),
            spec::label_value(&c.worker_id),
        );
        Job {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels.clone()),
                annotations: Some(c.extra_annotations.clone()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::batch::v1::JobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: Some(PREFLIGHT_TIMEOUT.as_secs() as i64),
                ttl_seconds_after_finished: Some(60),
                template: k8s_openapi::api::core::v1::PodTemplateSpec {
                    metadata: Some(kube::api::ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(pod),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs a short Job as tasks will run (the pod template's scheduling,
    /// admission, the image pull) and waits for it to complete.
    async fn preflight(&self, client: &kube::Client, ns: &str) -> Result<(), BackendError> {
        let c = &self.shared.config;
        let name = format!(
            "hangar-preflight-{}-{}",
            &spec::label_value(&c.worker_id)
                .to_ascii_lowercase()
                .chars()
                .filter(|ch| ch.is_ascii_alphanumeric())
                .take(20)
                .collect::<String>(),
            hangar_protocol::Timestamp::now().unix_millis()
        );
        let job = self.preflight_job(&name);
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        jobs.create(&PostParams::default(), &job)
            .await
            .map_err(|e| {
                BackendError::new(
                    FailureReason::JobCreate,
                    format!(
                        "the cluster refused the preflight Job in namespace `{ns}`: {}",
                        execution::api_message(&e)
                    ),
                )
            })?;
        let watched = execution::Watched::new(client.clone(), ns, &name);
        let clock_timeout = c.unschedulable_timeout.min(PREFLIGHT_TIMEOUT);
        let result = tokio::time::timeout(PREFLIGHT_TIMEOUT, async {
            loop {
                match watched.observe(clock_timeout).await {
                    Ok(status::Phase::Succeeded) => return Ok(()),
                    Ok(status::Phase::Failed(e)) => return Err(e),
                    Ok(status::Phase::Exited { detail, .. }) => {
                        return Err(BackendError::new(FailureReason::JobFailed, detail));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        let _ = jobs.delete(&name, &DeleteParams::background()).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BackendError::new(
                e.reason.clone(),
                format!("the preflight Job failed: {}", e.message),
            )),
            Err(_) => Err(BackendError::new(
                FailureReason::JobFailed,
                format!(
                    "the preflight Job `{name}` did not complete within {} s; see `kubectl -n \
                     {ns} describe job {name}`",
                    PREFLIGHT_TIMEOUT.as_secs()
                ),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Backend for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn execution(&self, spec: TaskSpec) -> Result<Box<dyn Execution>, BackendError> {
        Ok(Box::new(execution::KubeExecution::new(
            self.shared.clone(),
            spec,
        )?))
    }

    async fn start(&self) -> Result<(), BackendError> {
        let client = self.connect().await?;
        let ns = if self.shared.config.namespace.is_empty() {
            client.default_namespace().to_owned()
        } else {
            self.shared.config.namespace.clone()
        };
        self.check_permissions(&client, &ns).await?;
        self.preflight(&client, &ns).await?;
        tracing::info!(namespace = %ns, agent_image = %self.shared.config.agent_image, "Kubernetes backend ready (preflight passed)");
        let _ = self.shared.client.set(client);
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<Recovered>, BackendError> {
        let client = self.shared.client()?;
        let ns = execution::namespace(&self.shared, &client);
        let jobs: Api<Job> = Api::namespaced(client, &ns);
        let selector = format!(
            "{}={}",
            spec::LABEL_WORKER,
            spec::label_value(&self.shared.config.worker_id)
        );
        let listed = jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                BackendError::new(
                    FailureReason::JobWatch,
                    format!(
                        "cannot list this worker's Jobs: {}",
                        execution::api_message(&e)
                    ),
                )
            })?;
        let mut found = Vec::new();
        for job in listed.items {
            let ann = job.metadata.annotations.clone().unwrap_or_default();
            if ann.get(spec::ANNOTATION_WORKER_ID) != Some(&self.shared.config.worker_id) {
                continue;
            }
            let (Some(task_id), Some(execution_id), Some(name)) = (
                ann.get(spec::ANNOTATION_RUN_ID).cloned(),
                ann.get(spec::ANNOTATION_EXECUTION_ID).cloned(),
                job.metadata.name.clone(),
            ) else {
                continue;
            };
            if job.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // A finished Job whose Secret is gone was reported and cleaned
            // up already (a failed one stays for its TTL): not a task.
            let finished = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"
                    })
                });
            if finished && !self.has_secret(&ns, &name).await {
                continue;
            }
            tracing::info!(task_id, execution_id, job = %name, "adopting a Job of a previous run of this worker");
            found.push(Recovered {
                task_id: task_id.clone(),
                execution_id: execution_id.clone(),
                execution: Box::new(execution::KubeExecution::adopted(
                    self.shared.clone(),
                    task_id,
                    execution_id,
                    name,
                )),
            });
        }
        Ok(found)
    }
}
