//! The simulated scheduler and kubelet: one task per Pod moves it through
//! scheduling, volume setup, image pulls, init containers (native sidecars
//! included), running and termination, writing a realistic `status` and
//! Events at each step, and injects the [`Fault`]s.

mod image;
mod setup;
mod spec;
mod status;

/// How long a scripted container other than `task` runs.
const SCRIPTED_INIT_RUN: std::time::Duration = std::time::Duration::from_millis(50);

use super::docker::{self, Exit};
use super::store;
use super::{Fault, Inner, Kubelet};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The pause between simulated steps (scheduling, sandbox, pull).
const STEP: Duration = Duration::from_millis(20);
/// How long a faulted container runs before its scripted end (Docker mode).
const FAULT_RUN: Duration = Duration::from_millis(200);
/// "Forever", for states that never resolve by themselves.
const FOREVER: Duration = Duration::from_secs(7 * 24 * 3600);
/// The node's allocatable CPU (cores) and memory (bytes).
const NODE_CPU: f64 = 4.0;
const NODE_MEMORY: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0;

/// Starts the kubelet's task for a new pod.
pub(crate) fn start_pod(inner: &Arc<Inner>, ns: String, name: String, uid: String) {
    let inner2 = inner.clone();
    inner.spawn(async move {
        if let Some(run) = PodRun::new(inner2, ns, name, uid) {
            run.run().await;
        }
    });
}

#[derive(Debug, Clone)]
enum CState {
    Waiting(String, Option<String>),
    Running(String),
    Terminated {
        code: i32,
        reason: String,
        message: Option<String>,
        started: String,
        finished: String,
    },
}

/// How a scripted container ends.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Exit(i32, bool),
    Forever,
}

enum Handle {
    Scripted(watch::Sender<Option<i64>>),
    Docker(String),
}

struct Ctr {
    name: String,
    image: String,
    spec: Value,
    init: bool,
    sidecar: bool,
    state: CState,
    image_id: String,
    container_id: Option<String>,
    handle: Option<Handle>,
}

impl Ctr {
    fn running(&self) -> bool {
        matches!(self.state, CState::Running(_))
    }

    fn exit_code(&self) -> Option<i32> {
        match self.state {
            CState::Terminated { code, .. } => Some(code),
            _ => None,
        }
    }

    fn field_path(&self) -> String {
        let key = if self.init {
            "initContainers"
        } else {
            "containers"
        };
        format!("spec.{key}{{{}}}", self.name)
    }
}

enum Ev {
    Exit(usize, Exit),
    Stop(i64),
    Timer,
}

struct Resolved {
    env: Vec<(String, String)>,
    command: Vec<String>,
    args: Vec<String>,
}

struct PodRun {
    inner: Arc<Inner>,
    ns: String,
    name: String,
    uid: String,
    pod: Value,
    fault: Option<Fault>,
    changed: watch::Receiver<u64>,
    ctrs: Vec<Ctr>,
    task: usize,
    scheduled: bool,
    unschedulable: Option<String>,
    sandbox: bool,
    start_time: Option<String>,
    phase: &'static str,
    evicted: Option<String>,
    cond_times: HashMap<&'static str, (String, String)>,
    exits_tx: mpsc::UnboundedSender<(usize, Exit)>,
    exits_rx: mpsc::UnboundedReceiver<(usize, Exit)>,
    volumes: HashMap<String, PathBuf>,
    temp_dirs: Vec<tempfile::TempDir>,
    pod_ip: String,
}

impl PodRun {
    fn new(inner: Arc<Inner>, ns: String, name: String, uid: String) -> Option<PodRun> {
        let (pod, fault) = {
            let st = inner.lock();
            let pod = st.get("pods", &ns, &name)?.clone();
            if pod["metadata"]["uid"].as_str() != Some(uid.as_str()) {
                return None;
            }
            let owner = pod["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["kind"] == "Job"))
                .and_then(|r| r["uid"].as_str())
                .map(str::to_owned);
            let fault = match owner {
                Some(job) => st.job_faults.get(&job).cloned(),
                None => st
                    .selector_faults
                    .iter()
                    .find(|(sel, _)| sel.matches(&pod["metadata"]["labels"]))
                    .map(|(_, f)| f.clone()),
            };
            (pod, fault)
        };
        let spec = &pod["spec"];
        let has_init = spec["initContainers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        let mut ctrs = Vec::new();
        for (key, init) in [("initContainers", true), ("containers", false)] {
            for c in spec[key].as_array().into_iter().flatten() {
                let waiting = if init || has_init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                };
                ctrs.push(Ctr {
                    name: c["name"].as_str().unwrap_or_default().to_owned(),
                    image: c["image"].as_str().unwrap_or_default().to_owned(),
                    spec: c.clone(),
                    init,
                    sidecar: init && c["restartPolicy"] == "Always",
                    state: CState::Waiting(waiting.to_owned(), None),
                    image_id: String::new(),
                    container_id: None,
                    handle: None,
                });
            }
        }
        let first_regular = ctrs.iter().position(|c| !c.init).unwrap_or(0);
        let task = ctrs
            .iter()
            .position(|c| !c.init && c.name == "task")
            .unwrap_or(first_regular);
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let changed = inner.changed.subscribe();
        Some(PodRun {
            inner,
            ns,
            name,
            uid,
            pod,
            fault,
            changed,
            ctrs,
            task,
            scheduled: false,
            unschedulable: None,
            sandbox: false,
            start_time: None,
            phase: "Pending",
            evicted: None,
            cond_times: HashMap::new(),
            exits_tx,
            exits_rx,
            volumes: HashMap::new(),
            temp_dirs: Vec::new(),
            pod_ip: format!("10.244.0.{}", 2 + store::rand_u64() % 250),
        })
    }

    async fn run(mut self) {
        if !self.schedule().await {
            return;
        }
        if let Some(grace) = self.mount().await {
            return self.shutdown(grace).await;
        }
        let count = self.ctrs.len();
        for i in 0..count {
            if !self.ctrs[i].init {
                continue;
            }
            if let Some(grace) = self.start_container(i).await {
                return self.shutdown(grace).await;
            }
            if self.ctrs[i].sidecar {
                continue;
            }
            while self.ctrs[i].exit_code().is_none() {
                match self.next_event(None).await {
                    Ev::Exit(j, exit) => self.record_exit(j, exit),
                    Ev::Stop(grace) => return self.shutdown(grace).await,
                    Ev::Timer => {}
                }
            }
            self.publish();
            if self.ctrs[i].exit_code() != Some(0) {
                self.stop_sidecars().await;
                self.phase = "Failed";
                self.publish();
                return self.cleanup();
            }
        }
        for i in 0..count {
            if self.ctrs[i].init {
                continue;
            }
            if let Some(grace) = self.start_container(i).await {
                return self.shutdown(grace).await;
            }
        }
        self.phase = "Running";
        self.publish();
        let evict_at = (self.fault == Some(Fault::Evicted)).then(|| {
            let after = match self.inner.kubelet {
                Kubelet::Scripted { run_for } => run_for / 2,
                Kubelet::Docker => Duration::from_millis(500),
            };
            Instant::now() + after
        });
        while self.ctrs.iter().any(|c| !c.init && c.exit_code().is_none()) {
            match self.next_event(evict_at).await {
                Ev::Exit(j, exit) => {
                    self.record_exit(j, exit);
                    self.publish();
                }
                Ev::Stop(grace) => return self.shutdown(grace).await,
                Ev::Timer => return self.evict().await,
            }
        }
        self.stop_sidecars().await;
        self.phase = if self.regular_succeeded() {
            "Succeeded"
        } else {
            "Failed"
        };
        self.publish();
        self.cleanup();
    }

    fn regular_succeeded(&self) -> bool {
        self.ctrs
            .iter()
            .filter(|c| !c.init)
            .all(|c| c.exit_code() == Some(0))
    }

    /// `Some(grace)` when the pod is being deleted (0 when it is gone).
    fn stop_requested(&self) -> Option<i64> {
        let st = self.inner.lock();
        match st.get("pods", &self.ns, &self.name) {
            Some(p) if p["metadata"]["uid"].as_str() == Some(self.uid.as_str()) => {
                p["metadata"]["deletionTimestamp"].as_str().map(|_| {
                    p["metadata"]["deletionGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(30)
                })
            }
            _ => Some(0),
        }
    }

    /// Sleeps `d`; `Some(grace)` early when the pod is being deleted.
    async fn sleep(&mut self, d: Duration) -> Option<i64> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(grace) = self.stop_requested() {
                return Some(grace);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return self.stop_requested(),
                r = self.changed.changed() => if r.is_err() { return Some(0) },
            }
        }
    }

    async fn next_event(&mut self, timer: Option<Instant>) -> Ev {
        let timer = timer.unwrap_or_else(|| Instant::now() + FOREVER);
        loop {
            if let Some(grace) = self.stop_requested() {
                return Ev::Stop(grace);
            }
            tokio::select! {
                Some((i, exit)) = self.exits_rx.recv() => return Ev::Exit(i, exit),
                r = self.changed.changed() => if r.is_err() { return Ev::Stop(0) },
                _ = tokio::time::sleep_until(timer) => return Ev::Timer,
            }
        }
    }

    fn event(&self, ctr: Option<usize>, warning: bool, reason: &str, message: &str) {
        self.event_from(ctr, warning, reason, message, "kubelet");
    }

    fn event_from(
        &self,
        ctr: Option<usize>,
        warning: bool,
        reason: &str,
        message: &str,
        component: &str,
    ) {
        let path = ctr.map(|i| self.ctrs[i].field_path());
        self.inner.mutate(|st| {
            let Some(pod) = st.get("pods", &self.ns, &self.name).cloned() else {
                return;
            };
            if pod["metadata"]["uid"].as_str() == Some(self.uid.as_str()) {
                st.event(&pod, path.as_deref(), warning, reason, message, component);
            }
        });
    }

    fn set_state(&mut self, i: usize, state: CState) {
        self.ctrs[i].state = state;
        self.publish();
    }

    /// Pulls, configures and starts container `i`; `Some(grace)` when the
    /// pod is deleted first (a container that cannot start waits until then).
    async fn start_container(&mut self, i: usize) -> Option<i64> {
        let image = self.ctrs[i].image.clone();
        let targeted = i == self.task;
        let fault = self.fault.clone();
        if self.sleep(STEP).await.is_some() {
            return self.stop_requested();
        }
        if !docker::valid_reference(&image) || targeted && fault == Some(Fault::InvalidImage) {
            return Some(self.invalid_image(i, &image).await);
        }
        let policy = self.ctrs[i].spec["imagePullPolicy"]
            .as_str()
            .unwrap_or("IfNotPresent")
            .to_owned();
        let scripted = self.scripted_outcome(i).is_some() || self.inner.kubelet != Kubelet::Docker;
        let fail_pull = targeted && fault == Some(Fault::ImagePull);
        if let Some(grace) = self
            .ensure_image(i, &image, &policy, scripted, fail_pull)
            .await
        {
            return Some(grace);
        }
        self.image_pulled(i, &image, &policy, scripted).await;
        let resolved = match self.resolve_config(i).await {
            Ok(resolved) => resolved,
            Err(grace) => return Some(grace),
        };
        let name = self.ctrs[i].name.clone();
        self.event(
            Some(i),
            false,
            "Created",
            &format!("Created container: {name}"),
        );
        self.launch(i, resolved).await;
        self.event(
            Some(i),
            false,
            "Started",
            &format!("Started container {name}"),
        );
        self.publish();
        None
    }

    /// Resolves container `i`'s configuration, retrying while it refers to
    /// what does not exist yet; `Err(grace)` when the pod is deleted first.
    async fn resolve_config(&mut self, i: usize) -> Result<Resolved, i64> {
        loop {
            match self.resolve(i) {
                Ok(r) => return Ok(r),
                Err(message) => {
                    self.set_state(
                        i,
                        CState::Waiting("CreateContainerConfigError".into(), Some(message.clone())),
                    );
                    self.event(Some(i), true, "Failed", &format!("Error: {message}"));
                    if let Some(grace) = self.sleep(Duration::from_millis(200)).await {
                        return Err(grace);
                    }
                }
            }
        }
    }

    /// The scripted end of a container the fault targets.
    fn scripted_outcome(&self, i: usize) -> Option<Outcome> {
        let c = &self.ctrs[i];
        let first_init = self.ctrs.iter().position(|c| c.init && !c.sidecar);
        match &self.fault {
            Some(Fault::Oom) if i == self.task => Some(Outcome::Exit(137, true)),
            Some(Fault::JobFailed) if i == self.task => Some(Outcome::Exit(1, false)),
            Some(Fault::ActiveDeadline | Fault::Evicted) if i == self.task => {
                Some(Outcome::Forever)
            }
            Some(Fault::InitContainer { exit_code }) if Some(i) == first_init => {
                Some(Outcome::Exit(*exit_code, false))
            }
            _ if c.sidecar && self.inner.kubelet != Kubelet::Docker => Some(Outcome::Forever),
            _ => None,
        }
    }

    /// Starts container `i` (scripted or in Docker) and marks it running.
    async fn launch(&mut self, i: usize, resolved: Resolved) {
        let key = (self.uid.clone(), self.ctrs[i].name.clone());
        let started = store::now();
        let outcome = self.scripted_outcome(i);
        if outcome.is_some() || self.inner.kubelet != Kubelet::Docker {
            let outcome = outcome.unwrap_or(Outcome::Exit(0, false));
            self.launch_scripted(i, &resolved, key, outcome);
        } else {
            self.launch_docker(i, resolved, key).await;
        }
        self.ctrs[i].state = CState::Running(started);
    }

    /// How long scripted container `i` runs before its scripted end.
    fn scripted_run_for(&self, i: usize) -> Duration {
        match self.inner.kubelet {
            // Only the task container runs for `run_for`: init steps,
            // sidecars and one-container Jobs of other names finish at once.
            Kubelet::Scripted { run_for } if i != self.task || self.ctrs[i].name != "task" => {
                run_for.min(SCRIPTED_INIT_RUN)
            }
            Kubelet::Scripted { run_for } => run_for,
            Kubelet::Docker => FAULT_RUN,
        }
    }

    /// Starts scripted container `i`: logs what it ran, then a task ends it
    /// with `outcome` (or a stop) and reports the exit.
    fn launch_scripted(
        &mut self,
        i: usize,
        resolved: &Resolved,
        key: (String, String),
        outcome: Outcome,
    ) {
        let tx = self.exits_tx.clone();
        let shown: Vec<String> = resolved
            .command
            .iter()
            .chain(&resolved.args)
            .cloned()
            .collect();
        let run_for = self.scripted_run_for(i);
        let name = self.ctrs[i].name.clone();
        let line = if shown.is_empty() {
            format!(
                "fake-kubelet: container {name} ran the default command of {}\n",
                self.ctrs[i].image
            )
        } else {
            format!("fake-kubelet: container {name} ran {}\n", shown.join(" "))
        };
        append_log(&self.inner, key.clone(), &line);
        let (stop_tx, mut stop_rx) = watch::channel(None::<i64>);
        let inner = self.inner.clone();
        self.inner.spawn(async move {
            let natural = async {
                match outcome {
                    Outcome::Exit(code, oom) => {
                        tokio::time::sleep(run_for).await;
                        (code, oom)
                    }
                    Outcome::Forever => std::future::pending().await,
                }
            };
            let (code, oom) = tokio::select! {
                end = natural => end,
                _ = stop_rx.changed() => {
                    let grace = (*stop_rx.borrow()).unwrap_or(0);
                    (if grace == 0 { 137 } else { 143 }, false)
                }
            };
            if code != 0 {
                let line = if oom {
                    format!("fake-kubelet: container {name} was OOM-killed\n")
                } else {
                    format!("fake-kubelet: container {name} exited with code {code}\n")
                };
                append_log(&inner, key, &line);
            }
            let _ = tx.send((
                i,
                Exit {
                    code,
                    oom,
                    error: None,
                },
            ));
        });
        self.ctrs[i].handle = Some(Handle::Scripted(stop_tx));
        self.ctrs[i].container_id = Some(format!("containerd://{}", store::random_hex64()));
    }

    /// Starts container `i` in Docker; a task reports its exit (or the
    /// failure to start it).
    async fn launch_docker(&mut self, i: usize, resolved: Resolved, key: (String, String)) {
        let tx = self.exits_tx.clone();
        let spec = self.run_spec(i, resolved);
        match docker::run(&self.inner, &spec, key).await {
            Ok(running) => {
                self.ctrs[i].container_id = running.id.as_ref().map(|id| format!("docker://{id}"));
                self.inner.spawn(async move {
                    let exit = running.wait().await;
                    let _ = tx.send((i, exit));
                });
                self.ctrs[i].handle = Some(Handle::Docker(spec.name));
            }
            Err(error) => {
                let _ = tx.send((
                    i,
                    Exit {
                        code: 128,
                        oom: false,
                        error: Some(error),
                    },
                ));
            }
        }
    }

    fn record_exit(&mut self, i: usize, exit: Exit) {
        let started = match &self.ctrs[i].state {
            CState::Running(t) => t.clone(),
            _ => store::now(),
        };
        let reason = if exit.error.is_some() {
            "StartError"
        } else if exit.oom {
            "OOMKilled"
        } else if exit.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        self.ctrs[i].state = CState::Terminated {
            code: exit.code,
            reason: reason.to_owned(),
            message: exit.error,
            started,
            finished: store::now(),
        };
        self.ctrs[i].handle = None;
    }

    fn stop(&mut self, i: usize, grace: i64) {
        match self.ctrs[i].handle.take() {
            Some(Handle::Scripted(tx)) => {
                tx.send_replace(Some(grace));
                self.ctrs[i].handle = Some(Handle::Scripted(tx));
            }
            Some(Handle::Docker(name)) => {
                let n = name.clone();
                self.inner
                    .spawn(async move { docker::stop(&n, grace).await });
                self.ctrs[i].handle = Some(Handle::Docker(name));
            }
            None => {}
        }
    }

    /// Stops the running containers among `which` (Killing events), waits
    /// for them (at most `grace` plus a margin), and records their exits.
    async fn stop_and_wait(&mut self, which: Vec<usize>, grace: i64) {
        let running: Vec<usize> = which
            .into_iter()
            .filter(|i| self.ctrs[*i].running())
            .collect();
        for &i in &running {
            let name = self.ctrs[i].name.clone();
            self.event(
                Some(i),
                false,
                "Killing",
                &format!("Stopping container {name}"),
            );
            self.stop(i, grace);
        }
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64 + 5);
        while running.iter().any(|i| self.ctrs[*i].running()) {
            tokio::select! {
                Some((i, exit)) = self.exits_rx.recv() => self.record_exit(i, exit),
                _ = tokio::time::sleep_until(deadline) => {
                    for &i in &running {
                        if self.ctrs[i].running() {
                            self.record_exit(i, Exit { code: 137, oom: false, error: None });
                        }
                    }
                }
            }
        }
    }

    async fn stop_sidecars(&mut self) {
        let grace = self.pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(30);
        let sidecars: Vec<usize> = (0..self.ctrs.len())
            .rev()
            .filter(|i| self.ctrs[*i].sidecar)
            .collect();
        self.stop_and_wait(sidecars, grace).await;
    }

    /// Graceful termination of a deleted pod, then its removal.
    async fn shutdown(mut self, grace: i64) {
        let regular: Vec<usize> = (0..self.ctrs.len())
            .filter(|i| !self.ctrs[*i].init)
            .collect();
        let init: Vec<usize> = (0..self.ctrs.len())
            .filter(|i| self.ctrs[*i].init && !self.ctrs[*i].sidecar)
            .collect();
        self.stop_and_wait(regular.into_iter().chain(init).collect(), grace)
            .await;
        let sidecars: Vec<usize> = (0..self.ctrs.len())
            .rev()
            .filter(|i| self.ctrs[*i].sidecar)
            .collect();
        self.stop_and_wait(sidecars, grace).await;
        if self.scheduled && !matches!(self.phase, "Succeeded" | "Failed") {
            self.phase = if self.regular_succeeded() {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if self.scheduled {
            self.publish();
        }
        let (ns, name, uid) = (self.ns.clone(), self.name.clone(), self.uid.clone());
        self.inner.mutate(|st| {
            let removable = st.get("pods", &ns, &name).is_some_and(|p| {
                p["metadata"]["uid"].as_str() == Some(uid.as_str())
                    && p["metadata"]["deletionTimestamp"].is_string()
                    && p["metadata"]["finalizers"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
            });
            if removable {
                st.remove("pods", &ns, &name);
            }
        });
        self.cleanup();
    }

    /// Node-pressure eviction of the running pod.
    async fn evict(mut self) {
        let task = self.ctrs[self.task].name.clone();
        let message = format!(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container {task} was using 1048576Ki, request is 0, has larger consumption of memory. "
        );
        self.event(None, true, "Evicted", &message);
        self.evicted = Some(message);
        self.publish();
        let all: Vec<usize> = (0..self.ctrs.len()).collect();
        self.stop_and_wait(all, 0).await;
        self.phase = "Failed";
        self.publish();
        self.cleanup();
    }

    fn cleanup(self) {
        // Temp dirs go with `self`; Docker containers were removed by
        // their waiters.
        drop(self.temp_dirs);
    }
}

/// Appends `line` to the log of container `key` (pod uid, container name).
fn append_log(inner: &Inner, key: (String, String), line: &str) {
    inner
        .lock()
        .logs
        .entry(key)
        .or_default()
        .extend_from_slice(line.as_bytes());
}
