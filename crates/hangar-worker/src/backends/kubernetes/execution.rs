//! One execution as a Job: create, watch, cancel, clean up, adopt.

use super::Shared;
use super::spec::{self, TASK_CONTAINER};
use super::status::{self, Clock, Phase};
use crate::backends::{BackendError, Execution, ExitStatus, TaskSpec};
use futures::StreamExt;
use hangar_protocol::redact::Redactor;
use hangar_protocol::worker::FailureReason;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most log bytes quoted in a failure message.
const LOG_TAIL_BYTES: i64 = 2048;

/// The message of an API error (the Status's message for API answers).
pub(super) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({}, {})", s.message, s.code, s.reason),
        other => other.to_string(),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The namespace the backend works in.
pub(super) fn namespace(shared: &Shared, client: &kube::Client) -> String {
    if shared.config.namespace.is_empty() {
        client.default_namespace().to_owned()
    } else {
        shared.config.namespace.clone()
    }
}

/// The objects of one Job, read together.
pub(super) struct Watched {
    jobs: Api<Job>,
    pods: Api<Pod>,
    events: Api<Event>,
    job: String,
}

impl Watched {
    pub(super) fn new(client: kube::Client, ns: &str, job: &str) -> Self {
        Watched {
            jobs: Api::namespaced(client.clone(), ns),
            pods: Api::namespaced(client.clone(), ns),
            events: Api::namespaced(client, ns),
            job: job.to_owned(),
        }
    }

    fn pod_selector(&self) -> String {
        format!("job-name={}", self.job)
    }

    /// The newest pod of the Job, with the list's resource version.
    async fn pod(&self) -> Result<(Option<Pod>, String), BackendError> {
        let list = self
            .pods
            .list(&ListParams::default().labels(&self.pod_selector()))
            .await
            .map_err(|e| {
                BackendError::new(
                    FailureReason::PodWatch,
                    format!(
                        "cannot list the pods of Job {}: {}",
                        self.job,
                        api_message(&e)
                    ),
                )
            })?;
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let pod = list
            .items
            .into_iter()
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        Ok((pod, rv))
    }

    /// Reads the Job, its pod and, while the pod waits, its events.
    pub(super) async fn observe(
        &self,
        unschedulable_timeout: Duration,
    ) -> Result<Phase, BackendError> {
        self.observe_with_rv(unschedulable_timeout)
            .await
            .map(|(p, _)| p)
    }

    async fn observe_with_rv(
        &self,
        unschedulable_timeout: Duration,
    ) -> Result<(Phase, String), BackendError> {
        let job = match self.jobs.get_opt(&self.job).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                return Err(BackendError::new(
                    FailureReason::JobWatch,
                    format!("Job {} was deleted by someone else", self.job),
                ));
            }
            Err(e) => {
                return Err(BackendError::new(
                    FailureReason::JobWatch,
                    format!("cannot read Job {}: {}", self.job, api_message(&e)),
                ));
            }
        };
        let (pod, rv) = self.pod().await?;
        let pending = pod
            .as_ref()
            .and_then(|p| p.status.as_ref()?.phase.clone())
            .is_none_or(|p| p == "Pending");
        let events = match (&pod, pending) {
            (Some(p), true) => {
                let name = p.metadata.name.clone().unwrap_or_default();
                self.events
                    .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let clock = Clock {
            now: hangar_protocol::Timestamp::now().unix_millis() / 1000,
            unschedulable_timeout,
        };
        Ok((status::classify(&job, pod.as_ref(), &events, clock), rv))
    }

    /// Waits until the Job's pods change (a watch from `rv`) or `poll` passes.
    async fn changed(&self, rv: &str, poll: Duration) {
        let params = WatchParams::default()
            .labels(&self.pod_selector())
            .timeout(poll.as_secs().max(1) as u32);
        let Ok(stream) = self.pods.watch(&params, rv).await else {
            tokio::time::sleep(poll).await;
            return;
        };
        let mut stream = std::pin::pin!(stream);
        let _ = tokio::time::timeout(poll, async {
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Bookmark(_)) => continue,
                    // Anything else (a change, an error such as 410 Gone):
                    // read everything again.
                    _ => return,
                }
            }
        })
        .await;
    }

    /// The last lines the task container printed, masked.
    async fn log_tail(&self, redactor: &Redactor) -> String {
        let Ok((Some(pod), _)) = self.pod().await else {
            return String::new();
        };
        let name = pod.metadata.name.unwrap_or_default();
        let params = LogParams {
            container: Some(TASK_CONTAINER.into()),
            limit_bytes: Some(LOG_TAIL_BYTES * 4),
            tail_lines: Some(20),
            ..Default::default()
        };
        let mut text = self.pods.logs(&name, &params).await.unwrap_or_default();
        redactor.redact_in_place(&mut text);
        let text = text.trim();
        let start = text.len().saturating_sub(LOG_TAIL_BYTES as usize);
        let start = (start..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_owned()
    }
}

/// How an execution ended, as seen from its objects.
enum Ended {
    Status(ExitStatus),
    Failed(BackendError),
}

/// One execution's Job.
pub(crate) struct KubeExecution {
    shared: Arc<Shared>,
    task_id: String,
    execution_id: String,
    job: String,
    /// Until created.
    spec: Option<TaskSpec>,
    /// The task's environment, for its Secret.
    env: std::collections::BTreeMap<String, String>,
    redactor: Redactor,
    /// How it ended, once known (a task may end before `wait`).
    ended: Option<Ended>,
    succeeded: bool,
    /// The Job reached an end (a finished Job goes by its TTL; any other is
    /// deleted at cleanup, or it would sit Pending forever).
    finished: bool,
    deleted: bool,
}

impl KubeExecution {
    pub(super) fn new(shared: Arc<Shared>, spec: TaskSpec) -> Result<Self, BackendError> {
        // The agent prepares the environment in the pod (clones, setup
        // commands): plain `task_env`, without the prepared mark.
        let env = crate::backends::task_env(&spec, &shared.config.env);
        let redactor = crate::backends::repos::task_redactor(&spec, &env);
        Ok(KubeExecution {
            env,
            task_id: spec.task_id.clone(),
            execution_id: spec.execution_id.clone(),
            job: spec::job_name(&spec.task_id, &spec.execution_id),
            shared,
            spec: Some(spec),
            redactor,
            ended: None,
            succeeded: false,
            finished: false,
            deleted: false,
        })
    }

    pub(super) fn adopted(
        shared: Arc<Shared>,
        task_id: String,
        execution_id: String,
        job: String,
    ) -> Self {
        KubeExecution {
            shared,
            task_id,
            execution_id,
            job,
            spec: None,
            env: Default::default(),
            redactor: Redactor::default(),
            ended: None,
            succeeded: false,
            finished: false,
            deleted: false,
        }
    }

    fn watched(&self) -> Result<Watched, BackendError> {
        let client = self.shared.client()?;
        let ns = namespace(&self.shared, &client);
        Ok(Watched::new(client, &ns, &self.job))
    }

    async fn create(&mut self, spec: &TaskSpec) -> Result<(), BackendError> {
        let client = self.shared.client()?;
        let ns = namespace(&self.shared, &client);
        let config = &self.shared.config;
        let args = crate::backends::agent_args(
            spec,
            &config.server_url,
            config.idle_on_complete.as_deref(),
        );
        let mut job = spec::build_job(config, spec, args)?;
        job.metadata.namespace = Some(ns.clone());
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let created = match jobs.create(&PostParams::default(), &job).await {
            Ok(j) => j,
            Err(e) if is_status(&e, 409) => {
                // A retry of this very execution: take what exists.
                jobs.get(&self.job).await.map_err(|e| {
                    BackendError::new(
                        FailureReason::JobCreate,
                        format!("Job {}: {}", self.job, api_message(&e)),
                    )
                })?
            }
            Err(e) => {
                return Err(BackendError::new(
                    FailureReason::JobCreate,
                    format!(
                        "the cluster refused Job {} in namespace `{ns}`: {}. An admission \
                         policy or the worker's RBAC blocks it; the worker's start-up preflight \
                         names missing permissions.",
                        self.job,
                        api_message(&e)
                    ),
                ));
            }
        };
        let secrets: Api<Secret> = Api::namespaced(client, &ns);
        let secret = spec::build_secret(&created, &self.env);
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => {
                let _ = jobs.delete(&self.job, &DeleteParams::foreground()).await;
                return Err(BackendError::new(
                    FailureReason::JobCreate,
                    format!(
                        "cannot create the Secret of Job {}: {}",
                        self.job,
                        api_message(&e)
                    ),
                ));
            }
        }
        tracing::info!(task_id = %self.task_id, execution_id = %self.execution_id, job = %self.job, namespace = %ns, "Job created");
        Ok(())
    }

    /// Watches until `done` accepts the phase or the Job ends.
    async fn follow(
        &mut self,
        stop: Option<&CancellationToken>,
        until_running: bool,
    ) -> Result<(), BackendError> {
        let watched = self.watched()?;
        let timeout = self.shared.config.unschedulable_timeout;
        let poll = self.shared.config.poll_interval;
        let mut errors = 0;
        loop {
            let (phase, rv) = match watched.observe_with_rv(timeout).await {
                Ok(x) => {
                    errors = 0;
                    x
                }
                Err(e) if e.reason == FailureReason::JobWatch && e.message.contains("deleted") => {
                    return Err(e);
                }
                Err(e) => {
                    // The API server may be restarting: keep trying a while.
                    errors += 1;
                    if errors > 30 {
                        return Err(e);
                    }
                    tracing::warn!(job = %self.job, error = %e, "cannot read the Job; retrying");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            };
            match phase {
                Phase::Succeeded => {
                    self.succeeded = true;
                    self.finished = true;
                    self.ended = Some(Ended::Status(ExitStatus::Code(0)));
                    return Ok(());
                }
                Phase::Exited { code, detail } => {
                    self.finished = true;
                    let logs = watched.log_tail(&self.redactor).await;
                    self.ended = Some(Ended::Failed(
                        BackendError::new(FailureReason::ContainerExit, with_logs(&detail, &logs))
                            .with_exit_code(Some(code)),
                    ));
                    return Ok(());
                }
                Phase::Failed(e) => {
                    let logs = watched.log_tail(&self.redactor).await;
                    let message = with_logs(&e.message, &logs);
                    let mut e =
                        BackendError::new(e.reason.clone(), message).with_exit_code(e.exit_code);
                    // A pod stuck before it ran (scheduling, images,
                    // volumes) never finishes; any other failure ended it.
                    self.finished = !matches!(
                        e.reason,
                        FailureReason::Unschedulable
                            | FailureReason::ImagePull
                            | FailureReason::InvalidImage
                            | FailureReason::ContainerCreate
                            | FailureReason::VolumeMount
                    );
                    if until_running {
                        return Err(e);
                    }
                    e.message = self.redactor.redact(&e.message).into_owned();
                    self.ended = Some(Ended::Failed(e));
                    return Ok(());
                }
                Phase::Running if until_running => return Ok(()),
                Phase::Running | Phase::Pending => {}
            }
            match stop {
                Some(stop) => tokio::select! {
                    _ = watched.changed(&rv, poll) => {}
                    _ = stop.cancelled() => return Err(BackendError::cancelled()),
                },
                None => watched.changed(&rv, poll).await,
            }
        }
    }

    async fn delete_job(&mut self, grace: Option<Duration>) {
        let Ok(watched) = self.watched() else { return };
        let mut params = DeleteParams::foreground();
        if let Some(g) = grace {
            params = params.grace_period(g.as_secs() as u32);
        }
        match watched.jobs.delete(&self.job, &params).await {
            Ok(_) => self.deleted = true,
            Err(e) if is_status(&e, 404) => self.deleted = true,
            Err(e) => {
                tracing::warn!(job = %self.job, error = %api_message(&e), "cannot delete the Job")
            }
        }
    }

    /// Deletes the Job's pods with `grace` (rounded up to whole seconds):
    /// a Job's own deletion options do not reach its pods, which the
    /// garbage collector deletes with their terminationGracePeriodSeconds
    /// (30 s unless the pod template sets it).
    async fn delete_pods(&self, grace: Duration) {
        let Ok(watched) = self.watched() else { return };
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let params =
            DeleteParams::default().grace_period(u32::try_from(seconds).unwrap_or(u32::MAX));
        let selector = ListParams::default().labels(&watched.pod_selector());
        if let Err(e) = watched.pods.delete_collection(&params, &selector).await {
            tracing::warn!(job = %self.job, error = %api_message(&e), "cannot delete the Job's pods");
        }
    }

    async fn delete_secret(&self) {
        let Ok(client) = self.shared.client() else {
            return;
        };
        let ns = namespace(&self.shared, &client);
        let secrets: Api<Secret> = Api::namespaced(client, &ns);
        if let Err(e) = secrets
            .delete(&spec::secret_name(&self.job), &DeleteParams::default())
            .await
            && !is_status(&e, 404)
        {
            tracing::warn!(job = %self.job, error = %api_message(&e), "cannot delete the Job's Secret");
        }
    }
}

fn with_logs(message: &str, logs: &str) -> String {
    if logs.is_empty() {
        message.to_owned()
    } else {
        format!("{message}; last output:\n{logs}")
    }
}

#[async_trait::async_trait]
impl Execution for KubeExecution {
    async fn prepare(&mut self, stop: &CancellationToken) -> Result<(), BackendError> {
        let spec = self.spec.take().ok_or_else(|| {
            BackendError::new(FailureReason::JobCreate, "the Job was created already")
        })?;
        self.create(&spec).await?;
        self.follow(Some(stop), true).await
    }

    async fn launch(&mut self) -> Result<(), BackendError> {
        // The task container runs (or already ended): prepare waited for it.
        Ok(())
    }

    async fn wait(&mut self) -> Result<ExitStatus, BackendError> {
        if self.ended.is_none() {
            self.follow(None, false).await?;
        }
        match self.ended.take() {
            Some(Ended::Status(s)) => Ok(s),
            Some(Ended::Failed(e)) => Err(e),
            None => Err(BackendError::new(
                FailureReason::JobWatch,
                "the Job's end was not seen",
            )),
        }
    }

    async fn cancel(&mut self, grace: Duration) -> Result<ExitStatus, BackendError> {
        // The pod first (SIGTERM, the grace, then SIGKILL), then the Job
        // (foreground: after its pods); the Secret goes with the Job.
        self.delete_pods(grace).await;
        self.delete_job(Some(grace)).await;
        self.delete_secret().await;
        let Ok(watched) = self.watched() else {
            return Ok(ExitStatus::Signal(15));
        };
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            match watched.pod().await {
                Ok((None, _)) => break,
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        Ok(ExitStatus::Signal(15))
    }

    async fn cleanup(&mut self) -> Result<(), BackendError> {
        if !self.shared.config.cleanup {
            tracing::info!(job = %self.job, "--no-cleanup: keeping the Job and its Secret");
            return Ok(());
        }
        // The Secret never outlives the execution, even when the Job is kept.
        self.delete_secret().await;
        if !self.deleted && (self.succeeded || !self.finished) {
            // Succeeded, or never ended (cancelled while pending, stuck on an
            // image or a node): nothing to inspect later.
            self.delete_job(None).await;
        } else if !self.deleted {
            tracing::info!(job = %self.job, ttl = self.shared.config.ttl_seconds_after_finished, "keeping the failed Job for inspection until its TTL");
        }
        Ok(())
    }
}
