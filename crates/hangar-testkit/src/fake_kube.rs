//! A fake Kubernetes API server, in process, for tests of code that uses the
//! real `kube` client: no cluster can run on the test machines.
//!
//! It listens on `127.0.0.1` (random port, plain HTTP, bearer token) and
//! speaks the real Kubernetes JSON for what a worker uses:
//!
//! - discovery: `/version` (v1.33), `/api`, `/api/v1`, `/apis`,
//!   `/apis/batch[/v1]`, `/apis/authorization.k8s.io[/v1]`, also in the
//!   aggregated (`apidiscovery.k8s.io/v2`) form;
//! - create/get/list/replace/merge-patch/delete/deletecollection/watch of
//!   batch/v1 Jobs and v1 Pods, Secrets and Events (namespaced, and lists and
//!   watches across namespaces), `pods/{name}/log`, `…/status`;
//! - resourceVersions from one global counter, `generateName`, label and
//!   field selectors, `limit`/`continue`, watches with bookmarks and 410
//!   Gone, `kind: Status` errors (401, 403, 404, 409, 410, 422);
//! - deletion with Foreground, Background and Orphan propagation (the real
//!   default for batch/v1 Jobs is Orphan), finalizers, graceful pod
//!   termination, and a garbage collector;
//! - SelfSubjectAccessReviews answered from a deny list ([`FakeKube::deny`]),
//!   which RBAC also enforces on every request, and admission rejection
//!   ([`FakeKube::reject_jobs`], [`FakeKube::reject_pods`]);
//! - a job controller and a kubelet (see [`Kubelet`]) that move Pods through
//!   their phases with realistic statuses and Events, and inject each failure
//!   of the worker's taxonomy ([`Fault`]).
//!
//! ```no_run
//! # async fn demo() {
//! use hangar_testkit::fake_kube::{FakeKube, Fault, Kubelet};
//!
//! let kube = FakeKube::start(Kubelet::scripted()).await;
//! let dir = tempfile::tempdir().unwrap();
//! let _kubeconfig = kube.kubeconfig(dir.path()); // for the code under test
//! let _client = kube.client().await; // or a ready `kube::Client`
//! kube.inject(Fault::Oom); // the next Job's task container is OOM-killed
//! // … run the code under test …
//! assert!(kube.objects("Job").is_empty());
//! # }
//! ```
//!
//! Not supported: TLS, client certificates, namespaces as objects (every
//! namespace exists), other resources, server-side apply and JSON patch
//! (strategic merge patch is applied as a JSON merge patch), Indexed Jobs,
//! pod failure and success policies, suspending a running Job, container
//! restarts (`restartPolicy: Always`/`OnFailure` and native sidecars run
//! once; a failed container fails the pod), probes (running containers are
//! ready at once), image volumes (a Job or Pod using one answers 422),
//! ConfigMaps (a reference to one that is not optional never resolves), and
//! real image pulls (Docker mode only uses images already in the engine;
//! `imagePullPolicy: Always` behaves as `IfNotPresent`).

mod api;
mod controller;
mod docker;
mod kubelet;
mod objects;
mod store;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use store::State;

/// The namespace of [`FakeKube::kubeconfig`]'s context.
pub const NAMESPACE: &str = "default";

/// The Kubernetes version the fake reports (`gitVersion`).
pub const VERSION: &str = "v1.33.1";

/// The Docker label on every container a [`Kubelet::Docker`] fake starts;
/// its value is [`FakeKube::server_id`].
pub const DOCKER_LABEL: &str = "dev.hangar.fakekube";

/// How the fake kubelet runs containers. Chosen at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kubelet {
    /// Containers really run in the local Docker engine (`docker run
    /// --network host`, never pulling): command/args, workingDir, env and
    /// envFrom (Secrets resolved), emptyDir and Secret volumes as host
    /// directories, memory limits, `runAsUser`. An image missing from the
    /// engine is `ErrImagePull`/`ImagePullBackOff`. Containers are named
    /// `hangar-fakekube-<server id>-<pod>-<container>`, labelled
    /// [`DOCKER_LABEL`]`=<server id>`, and removed when the fake is dropped.
    Docker,
    /// No Docker: the container named `task` "runs" for `run_for`, every
    /// other one for at most 50 ms; each writes one log line and exits 0
    /// (SIGTERM ends it at once with 143).
    Scripted {
        /// How long each container runs.
        run_for: Duration,
    },
}

impl Kubelet {
    /// [`Kubelet::Scripted`] with containers that run for 200 ms.
    pub fn scripted() -> Kubelet {
        Kubelet::Scripted {
            run_for: Duration::from_millis(200),
        }
    }
}

/// A failure the fake cluster injects into a Job's pods (every pod of the
/// Job, retries included). The "task container" is the container named
/// `task`, else the first regular container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The pod stays Pending forever: `PodScheduled=False`, reason
    /// `Unschedulable`, and a Warning `FailedScheduling` event.
    Unschedulable,
    /// The task container's image cannot be pulled: it waits in
    /// `ErrImagePull`, then `ImagePullBackOff`, forever (pod Pending), with
    /// `Failed` and `BackOff` events.
    ImagePull,
    /// The task container waits in `InvalidImageName` forever (pod
    /// Pending), with `InspectFailed` and `Failed` events.
    InvalidImage,
    /// The first init container that is not a native sidecar terminates
    /// with this exit code (reason `Error`); the pod fails. No effect on a
    /// pod without init containers.
    InitContainer {
        /// The init container's exit code.
        exit_code: i32,
    },
    /// The task container is terminated `OOMKilled` with exit code 137.
    Oom,
    /// The running pod is evicted (half of `run_for` after it runs in
    /// scripted mode, 500 ms in Docker mode; the task container does not
    /// end before): phase Failed, `status.reason: Evicted`, a
    /// `DisruptionTarget` condition, an `Evicted` event; its containers are
    /// killed (137).
    Evicted,
    /// The task container never exits and the Job's active deadline passes
    /// shortly after the pod runs: the pod is deleted (SIGTERM) and the Job
    /// fails with reason `DeadlineExceeded`.
    ActiveDeadline,
    /// Volume setup fails: the pod stays Pending forever with a Warning
    /// `FailedMount` event "MountVolume.SetUp failed for volume …".
    VolumeMount,
    /// The task container exits 1 (reason `Error`); once `backoffLimit`
    /// retries are spent the Job fails with `BackoffLimitExceeded`.
    JobFailed,
}

/// One HTTP request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// The path (`/apis/batch/v1/namespaces/default/jobs`).
    pub path: String,
    /// The raw query string, in the client's order (empty when none).
    pub query: String,
    /// The JSON body, when there was one.
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// The first value of query parameter `name`, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        api::query_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// State shared by the HTTP handlers, the controllers and the kubelet.
pub(crate) struct Inner {
    state: Mutex<State>,
    /// The latest resourceVersion, sent after every write.
    changed: watch::Sender<u64>,
    /// Bumped by [`FakeKube::close_watches`].
    close: watch::Sender<u64>,
    /// Bumped by [`FakeKube::expire_watches`].
    expire: watch::Sender<u64>,
    kubelet: Kubelet,
    id: String,
    token: String,
    addr: SocketAddr,
    tasks: Mutex<Vec<AbortHandle>>,
    open_watches: AtomicUsize,
    token_required: AtomicBool,
    bookmark_every: Mutex<Duration>,
}

impl Inner {
    /// The state lock (poison is ignored: a panicking test must not hide
    /// its own failure behind poison errors).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, then wakes watchers and controllers when it
    /// wrote anything.
    pub(crate) fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, before, after) = {
            let mut st = self.lock();
            let before = st.rv;
            let result = f(&mut st);
            (result, before, st.rv)
        };
        if after != before {
            self.changed.send_replace(after);
        }
        result
    }

    /// Spawns a task that is aborted when the fake is dropped.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut).abort_handle();
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }
}

/// A running fake Kubernetes API server on `127.0.0.1`. Dropping it stops
/// the server, its controllers and kubelet, and removes its Docker
/// containers.
pub struct FakeKube {
    inner: Arc<Inner>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube")
            .field("addr", &self.inner.addr)
            .field("id", &self.inner.id)
            .field("kubelet", &self.inner.kubelet)
            .finish()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            task.abort();
        }
        if self.inner.kubelet == Kubelet::Docker {
            docker::remove_all(&self.inner.id);
        }
    }
}

impl FakeKube {
    /// Starts a fake API server on a random loopback port with the given
    /// kubelet, plus its job controller and garbage collector. Panics if no
    /// port can be bound (test support).
    pub async fn start(kubelet: Kubelet) -> FakeKube {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => panic!("fake kube: cannot bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("fake kube: no local address: {e}"),
        };
        let id = format!("{:08x}", store::rand_u64() as u32);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
            close: watch::Sender::new(0),
            expire: watch::Sender::new(0),
            kubelet,
            token: format!("fake-token-{:016x}", store::rand_u64()),
            id,
            addr,
            tasks: Mutex::new(Vec::new()),
            open_watches: AtomicUsize::new(0),
            token_required: AtomicBool::new(true),
            bookmark_every: Mutex::new(Duration::from_secs(5)),
        });
        controller::start_garbage_collector(&inner);
        let app = api::router(inner.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake kube server stopped");
            }
        });
        FakeKube { inner, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The bearer token every request except `/version` and the health
    /// endpoints must carry (401 otherwise; see [`FakeKube::require_token`]).
    pub fn token(&self) -> &str {
        &self.inner.token
    }

    /// Whether requests must carry [`FakeKube::token`] (default `true`);
    /// when not, anonymous requests are served too.
    pub fn require_token(&self, required: bool) {
        self.inner.token_required.store(required, Ordering::SeqCst);
    }

    /// This server's random id, used in Docker container names and labels.
    pub fn server_id(&self) -> &str {
        &self.inner.id
    }

    /// Writes `dir/kubeconfig`: cluster `fake` at [`FakeKube::url`], user
    /// `fake-user` with [`FakeKube::token`], and current context `fake` in
    /// namespace [`NAMESPACE`]. Answers its path. Panics if it cannot write.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        if let Err(e) = std::fs::write(&path, self.kubeconfig_yaml()) {
            panic!("fake kube: cannot write {}: {e}", path.display());
        }
        path
    }

    fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake-user\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  \
             context:\n    cluster: fake\n    user: fake-user\n    namespace: {NAMESPACE}\n\
             current-context: fake\npreferences: {{}}\n",
            url = self.url(),
            token = self.inner.token,
        )
    }

    /// A `kube::Client` configured from [`FakeKube::kubeconfig`]'s content
    /// (default namespace [`NAMESPACE`]). Panics if the client cannot be
    /// built.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = match kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml()) {
            Ok(k) => k,
            Err(e) => panic!("fake kube: bad kubeconfig: {e}"),
        };
        let options = kube::config::KubeConfigOptions::default();
        let config = match kube::Config::from_custom_kubeconfig(kubeconfig, &options).await {
            Ok(c) => c,
            Err(e) => panic!("fake kube: kubeconfig not loadable: {e}"),
        };
        match kube::Client::try_from(config) {
            Ok(c) => c,
            Err(e) => panic!("fake kube: cannot build a client: {e}"),
        }
    }

    /// Every stored object of `kind` (a kind, plural or short name: `Job`,
    /// `pods`, `ev`), all namespaces, sorted by namespace and name. Empty
    /// for an unknown kind.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let Some(res) = store::resource_named(kind) else {
            return Vec::new();
        };
        self.inner
            .lock()
            .list(res.plural, None)
            .into_iter()
            .cloned()
            .collect()
    }

    /// One stored object, by kind (as in [`FakeKube::objects`]),
    /// namespace and name.
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = store::resource_named(kind)?;
        self.inner.lock().get(res.plural, namespace, name).cloned()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// What container `container` of pod `namespace/pod` wrote so far.
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        let st = self.inner.lock();
        let Some(uid) = st
            .get("pods", namespace, pod)
            .and_then(|p| p["metadata"]["uid"].as_str())
        else {
            return String::new();
        };
        st.logs
            .get(&(uid.to_owned(), container.to_owned()))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// Injects `fault` into the next Job created (faults queue up: each
    /// call applies to one more Job).
    pub fn inject(&self, fault: Fault) {
        self.inner.lock().next_faults.push_back(fault);
    }

    /// Injects `fault` into every Job created from now on whose labels
    /// match `selector` (and bare Pods whose labels do). Panics on a
    /// malformed selector.
    pub fn inject_matching(&self, selector: &str, fault: Fault) {
        match store::LabelSelector::parse(selector) {
            Ok(sel) => self.inner.lock().selector_faults.push((sel, fault)),
            Err(e) => panic!("fake kube: bad selector {selector:?}: {e}"),
        }
    }

    /// Forgets faults not yet applied (Jobs that already have one keep it).
    pub fn clear_faults(&self) {
        let mut st = self.inner.lock();
        st.next_faults.clear();
        st.selector_faults.clear();
    }

    /// Denies `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`, or `*`) on `resource` (`jobs`, `pods`,
    /// `pods/log`, `secrets`, `events`): such requests answer 403 Forbidden
    /// and SelfSubjectAccessReviews answer `allowed: false`.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.inner
            .lock()
            .denies
            .push((verb.to_owned(), resource.to_owned()));
    }

    /// Removes every [`FakeKube::deny`].
    pub fn allow_all(&self) {
        self.inner.lock().denies.clear();
    }

    /// Makes every Job creation answer 403 Forbidden with `message`, as a
    /// validating admission webhook that denies it would.
    pub fn reject_jobs(&self, message: &str) {
        self.inner.lock().reject_jobs = Some(message.to_owned());
    }

    /// Makes every Pod creation fail with 403 and `message`, as Pod
    /// Security admission would: Jobs are accepted, but the job controller
    /// records Warning `FailedCreate` events on them and retries.
    pub fn reject_pods(&self, message: &str) {
        self.inner.lock().reject_pods = Some(message.to_owned());
    }

    /// Removes [`FakeKube::reject_jobs`] and [`FakeKube::reject_pods`].
    pub fn admit_all(&self) {
        let mut st = self.inner.lock();
        st.reject_jobs = None;
        st.reject_pods = None;
    }

    /// Compacts history, as etcd does: every open watch gets an `ERROR`
    /// event with a 410 `Expired` Status and ends, and every
    /// resourceVersion handed out so far is too old to watch from (410
    /// again), so clients must list anew.
    pub fn expire_watches(&self) {
        self.inner.mutate(|st| {
            let rv = st.next_rv();
            st.compacted = rv;
            st.changes.clear();
        });
        self.inner.expire.send_modify(|g| *g += 1);
    }

    /// Ends every open watch stream (cleanly, as an API server restart or
    /// the `timeoutSeconds` would).
    pub fn close_watches(&self) {
        self.inner.close.send_modify(|g| *g += 1);
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.inner.open_watches.load(Ordering::SeqCst)
    }

    /// How often watches with `allowWatchBookmarks` get a BOOKMARK event
    /// (default 5 s; a real API server sends one about every minute).
    pub fn set_bookmark_interval(&self, every: Duration) {
        *self
            .inner
            .bookmark_every
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = every;
    }

    /// Waits up to `timeout` until `check` holds for the object (or its
    /// absence, `None`); answers the object as last seen, or `Err` with it
    /// on timeout.
    pub async fn wait_for(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        timeout: Duration,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>, Option<Value>> {
        let mut changed = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.object(kind, namespace, name);
            if check(current.as_ref()) {
                return Ok(current);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(self.object(kind, namespace, name)),
            }
        }
    }
}
