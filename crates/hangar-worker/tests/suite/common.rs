//! Test support: a fake control plane speaking the real worker protocol, a
//! fake agent script, and a worker running in-process against both.

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use hangar_protocol::worker::{
    ServerToWorker, Task, TaskAssignment, TaskCancellation, TaskDefinition, TaskOwner,
    WorkerToServer,
};
use hangar_protocol::{Envelope, Timestamp, WORKER_WS_PATH};
use hangar_worker::{ApiKey, BackendKind, Worker, WorkerConfig, WorkerError};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single expected event.
pub const WAIT: Duration = Duration::from_secs(15);
/// Key the fake server accepts.
pub const API_KEY: &str = "hk_test_worker_key";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hangar_worker=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// What the fake server saw on one connection.
#[derive(Debug)]
pub enum Seen {
    Msg(WorkerToServer),
    /// A frame that is not a known message (should never happen).
    #[allow(dead_code)]
    Unknown(String),
    /// A close frame with its code.
    Close(Option<u16>),
}

#[derive(Default)]
struct ServerState {
    refuse: AtomicBool,
    /// Answer the next N handshakes with this status.
    reject: Mutex<Option<(usize, StatusCode)>>,
    attempts: AtomicUsize,
    conns: Mutex<Option<mpsc::UnboundedSender<FakeConn>>>,
    /// Where `GET /api/v1/agent/runs/{id}` reads a run's state
    /// (`<dir>/<id>.state`, e.g. `SUCCEEDED`; `INPROGRESS` when absent).
    run_states: Mutex<Option<PathBuf>>,
}

/// A fake control plane on 127.0.0.1.
pub struct FakeServer {
    pub url: String,
    state: Arc<ServerState>,
    conns: mpsc::UnboundedReceiver<FakeConn>,
    _server: JoinHandle<()>,
}

/// One accepted worker connection.
pub struct FakeConn {
    pub authorization: String,
    pub worker_id: Option<String>,
    seen: mpsc::UnboundedReceiver<Seen>,
    out: mpsc::UnboundedSender<String>,
    kill: CancellationToken,
    stall: CancellationToken,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let state = Arc::new(ServerState::default());
        let (tx, conns) = mpsc::unbounded_channel();
        *state.conns.lock().unwrap() = Some(tx);
        let app = Router::new()
            .route(WORKER_WS_PATH, get(ws_handler))
            .route("/api/v1/agent/runs/{id}", get(run_handler))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeServer {
            url: format!("http://{addr}"),
            state,
            conns,
            _server: server,
        }
    }

    /// Waits for the worker's next connection.
    pub async fn accept(&mut self) -> FakeConn {
        tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("the worker did not connect in time")
            .expect("server gone")
    }

    /// While set, handshakes are answered 503.
    pub fn set_refusing(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Answers the next `n` handshakes with `status`.
    pub fn reject_next(&self, n: usize, status: StatusCode) {
        *self.state.reject.lock().unwrap() = Some((n, status));
    }

    /// Answers `GET /api/v1/agent/runs/{id}` (what the command backend
    /// polls) from `<dir>/<id>.state`, where a task reports its outcome as
    /// a real agent would on its session.
    pub fn serve_run_states(&self, dir: &Path) {
        *self.state.run_states.lock().unwrap() = Some(dir.to_owned());
    }

    /// Handshake attempts so far (accepted or not).
    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }
}

async fn run_handler(
    State(state): State<Arc<ServerState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(dir) = state.run_states.lock().unwrap().clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let text = std::fs::read_to_string(dir.join(format!("{id}.state")))
        .unwrap_or_else(|_| "INPROGRESS".to_owned());
    let run_state: hangar_protocol::RunState =
        serde_json::from_value(serde_json::Value::String(text.trim().to_owned())).unwrap();
    let now = Timestamp::now();
    axum::Json(serde_json::json!({
        "run_id": id,
        "task_id": id,
        "title": "test task",
        "state": run_state,
        "prompt": "do the thing",
        "created_at": now,
        "updated_at": now,
    }))
    .into_response()
}

async fn ws_handler(
    State(state): State<Arc<ServerState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    {
        let mut reject = state.reject.lock().unwrap();
        if let Some((n, status)) = *reject {
            *reject = if n > 1 { Some((n - 1, status)) } else { None };
            return (status, "rejected by the fake server").into_response();
        }
    }
    if state.refuse.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "refusing").into_response();
    }
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if authorization != format!("Bearer {API_KEY}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let worker_id = query.get("worker_id").cloned();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (out, out_rx) = mpsc::unbounded_channel();
    let kill = CancellationToken::new();
    let stall = CancellationToken::new();
    let conn = FakeConn {
        authorization,
        worker_id,
        seen,
        out,
        kill: kill.clone(),
        stall: stall.clone(),
    };
    if let Some(tx) = state.conns.lock().unwrap().as_ref() {
        let _ = tx.send(conn);
    }
    ws.on_upgrade(move |socket| serve_conn(socket, seen_tx, out_rx, kill, stall))
}

async fn serve_conn(
    mut socket: WebSocket,
    seen: mpsc::UnboundedSender<Seen>,
    mut out: mpsc::UnboundedReceiver<String>,
    kill: CancellationToken,
    stall: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = kill.cancelled() => return, // drops the socket without a close frame
            _ = stall.cancelled() => {
                // Keep the socket open but never read it again (no pongs either).
                kill.cancelled().await;
                return;
            }
            frame = socket.next() => match frame {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Text(text))) => {
                    let parsed = Envelope::parse(text.as_str())
                        .ok()
                        .and_then(|env| WorkerToServer::from_envelope(env).ok().flatten());
                    let _ = seen.send(match parsed {
                        Some(m) => Seen::Msg(m),
                        None => Seen::Unknown(text.to_string()),
                    });
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = seen.send(Seen::Close(frame.map(|f| f.code)));
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            Some(text) = out.recv() => {
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl FakeConn {
    /// The next thing the worker sent.
    pub async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("no frame from the worker in time")
            .expect("the connection ended")
    }

    /// The next message (fails on anything else).
    pub async fn recv(&mut self) -> WorkerToServer {
        match self.next_seen().await {
            Seen::Msg(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Skips frames until one matches.
    pub async fn recv_until(
        &mut self,
        mut pred: impl FnMut(&WorkerToServer) -> bool,
    ) -> WorkerToServer {
        loop {
            let m = self.recv().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// The next terminal report (`task_completed` or `task_failed`).
    pub async fn recv_end(&mut self) -> WorkerToServer {
        self.recv_until(|m| {
            matches!(
                m,
                WorkerToServer::TaskCompleted(_) | WorkerToServer::TaskFailed(_)
            )
        })
        .await
    }

    /// The first frame must be a hello; returns it.
    pub async fn hello(&mut self) -> hangar_protocol::worker::WorkerHello {
        match self.recv().await {
            WorkerToServer::WorkerHello(h) => h,
            other => panic!("first frame is not worker_hello: {other:?}"),
        }
    }

    pub fn send(&self, msg: ServerToWorker) {
        self.send_text(msg.to_envelope().to_text());
    }

    pub fn send_text(&self, text: impl Into<String>) {
        self.out.send(text.into()).expect("connection gone");
    }

    pub fn assign(&self, a: TaskAssignment) {
        self.send(ServerToWorker::TaskAssignment(Box::new(a)));
    }

    pub fn cancel(&self, task_id: &str) {
        self.send(ServerToWorker::TaskCancellation(TaskCancellation {
            task_id: task_id.into(),
        }));
    }

    /// Stops reading the socket (and answering pings) without closing it.
    pub fn stall(&self) {
        self.stall.cancel();
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_connection(&self) {
        self.kill.cancel();
    }

    /// Waits until the connection ended, returning every frame seen until then.
    pub async fn until_end(&mut self) -> Vec<Seen> {
        let mut all = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.seen.recv())
                .await
                .expect("connection did not end")
            {
                Some(s) => all.push(s),
                None => return all,
            }
        }
    }
}

/// The fake agent: one script whose behaviour the assignment's env selects.
/// Writes what it saw to `$TEST_OUT/<execution>.*`.
pub const AGENT_SCRIPT: &str = r#"#!/bin/bash
set -u
out="$TEST_OUT/$HANGAR_EXECUTION_ID"
printf '%s\n' "$@" > "$out.args"
tr '\0' '\n' < /proc/$$/environ > "$out.env"
pwd > "$out.pwd"
stat -c %a . > "$out.mode"
echo $$ > "$out.pid"
echo "agent says hello on stdout"
echo "agent says hello on stderr" >&2
case "${MODE:-}" in
  ignore_term)
    trap 'echo term >> "$out.signals"' TERM
    (trap '' TERM; exec sleep 1000) &
    until grep -q sleep /proc/$!/cmdline 2>/dev/null; do sleep 0.01; done
    touch "$out.ready"
    while true; do sleep 0.05; done
    ;;
  self_kill)
    kill -KILL $$
    ;;
  fork_bomb)
    touch "$out.ready"
    bomb() { bomb | bomb & }
    bomb 2>/dev/null
    while true; do sleep 1; done
    ;;
  mem_hog)
    touch "$out.ready"
    exec tail /dev/zero
    ;;
esac
if [ -n "${GATE:-}" ]; then
  touch "$out.ready"
  until [ -e "$GATE" ]; do sleep 0.02; done
fi
exit "${EXIT_CODE:-0}"
"#;

/// A worker running in-process against a fake server.
pub struct TestWorker {
    /// The worker's id (`test-worker` unless the test changed it).
    pub worker_id: String,
    pub dir: tempfile::TempDir,
    pub out: PathBuf,
    pub workspace_root: PathBuf,
    pub shutdown: CancellationToken,
    pub hard_shutdown: CancellationToken,
    pub handle: Option<JoinHandle<Result<(), WorkerError>>>,
}

/// Settings for fast tests.
pub fn test_config(server_url: &str, dir: &Path) -> WorkerConfig {
    let agent = dir.join("fake-agent.sh");
    std::fs::write(&agent, AGENT_SCRIPT).unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    WorkerConfig {
        worker_id: "test-worker".into(),
        api_key: ApiKey::new(API_KEY),
        server_url: server_url.to_owned(),
        backend: BackendKind::Direct,
        max_concurrent_tasks: 4,
        heartbeat_interval: Duration::from_millis(200),
        read_timeout: Duration::from_secs(2),
        kill_grace: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(5),
        reconnect_initial: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        reconnect_reset_after: Duration::from_secs(10),
        agent_path: Some(agent),
        direct: hangar_worker::DirectSettings {
            workspace_root: Some(dir.join("workspaces")),
            // The fake agent writes what it saw to `out` and waits on `gates`;
            // the sandbox shows both (tasks run as nobody: out is 0777).
            sandbox_mounts: vec![
                hangar_worker::SandboxMount {
                    path: dir.join("out"),
                    writable: true,
                },
                hangar_worker::SandboxMount {
                    path: dir.join("gates"),
                    writable: false,
                },
            ],
            ..Default::default()
        },
        ..WorkerConfig::default()
    }
}

impl TestWorker {
    pub fn start(server: &FakeServer, tweak: impl FnOnce(&mut WorkerConfig)) -> TestWorker {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(dir.path().join("gates")).unwrap();
        let mut config = test_config(&server.url, dir.path());
        tweak(&mut config);
        let workspace_root = config.direct.workspace_root.clone().unwrap();
        let worker_id = config.worker_id.clone();
        let shutdown = CancellationToken::new();
        let hard_shutdown = CancellationToken::new();
        let worker = Worker::new(config).unwrap();
        let handle = tokio::spawn(worker.run(shutdown.clone(), hard_shutdown.clone()));
        TestWorker {
            worker_id: worker_id.to_string(),
            dir,
            out,
            workspace_root,
            shutdown,
            hard_shutdown,
            handle: Some(handle),
        }
    }

    /// An assignment whose agent writes into this worker's out dir.
    pub fn assignment(&self, run: &str, exec: &str, extra_env: &[(&str, &str)]) -> TaskAssignment {
        let mut env_vars: BTreeMap<String, String> = [
            ("HANGAR_RUN_TOKEN", "hr_run_token"),
            ("HANGAR_RUN_ID", run),
            ("HANGAR_EXECUTION_ID", exec),
            ("HANGAR_SERVER_URL", "http://server.invalid"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GH_PROMPT_DISABLED", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env_vars.insert("TEST_OUT".into(), self.out.to_string_lossy().into_owned());
        for (k, v) in extra_env {
            env_vars.insert((*k).into(), (*v).into());
        }
        TaskAssignment {
            task_id: run.into(),
            execution_id: exec.into(),
            task: Task {
                id: run.into(),
                title: "test task".into(),
                task_definition: TaskDefinition {
                    prompt: "do the thing".into(),
                },
                created_at: Timestamp::now(),
                updated_at: Timestamp::now(),
                owner: TaskOwner {
                    kind: "TEAM".into(),
                    id: 1,
                },
                agent_config_snapshot: None,
                agent_conversation_id: None,
            },
            docker_image: None,
            sidecar_image: None,
            env_vars,
            additional_sidecars: vec![],
            additional_oz_args: vec![],
            instance_shape: None,
            environment: None,
        }
    }

    /// A gate file: agents started with `GATE=<path>` block until it is opened.
    pub fn gate(&self, name: &str) -> PathBuf {
        self.dir.path().join("gates").join(format!("gate-{name}"))
    }

    pub fn open_gate(&self, gate: &Path) {
        std::fs::write(gate, b"go").unwrap();
    }

    pub fn out_file(&self, exec: &str, ext: &str) -> PathBuf {
        self.out.join(format!("{exec}.{ext}"))
    }

    pub fn read_out(&self, exec: &str, ext: &str) -> String {
        std::fs::read_to_string(self.out_file(exec, ext))
            .unwrap_or_else(|e| panic!("{exec}.{ext}: {e}"))
    }

    /// Waits for `run()` to return.
    pub async fn join(&mut self) -> Result<(), WorkerError> {
        let handle = self.handle.take().expect("already joined");
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("run() did not return in time")
            .unwrap()
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.hard_shutdown.cancel();
        self.shutdown.cancel();
    }
}

/// Waits until `path` exists (an event the agent produces), failing after [`WAIT`].
pub async fn wait_for_file(path: &Path) {
    let what = format!("{} to appear", path.display());
    hangar_testkit::poll::until(&what, WAIT, || path.exists()).await;
}

/// Waits until `path` is gone, failing after [`WAIT`].
pub async fn wait_for_removal(path: &Path) {
    let what = format!("{} to be removed", path.display());
    hangar_testkit::poll::until(&what, WAIT, || !path.exists()).await;
}

/// Waits until no live process is left in group `pgid`; SIGKILLed processes
/// take a moment to die on a loaded machine. Fails after 2 s, naming them.
pub async fn wait_for_group_gone(pgid: i32) {
    hangar_testkit::poll::until_ok(
        "no process left in the task's group after the worker stopped",
        Duration::from_secs(2),
        || hangar_testkit::poll::empty(live_group_members(pgid)),
    )
    .await;
}

/// Live (not zombie) processes whose process group is `pgid`.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state ppid pgrp …
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields[0], fields[2].parse::<i32>().unwrap_or(-1));
        if pgrp == pgid && state != "Z" && state != "X" {
            pids.push(pid);
        }
    }
    pids
}

/// Live processes of execution `exec` on the host, found by the
/// `HANGAR_EXECUTION_ID` in their environment (inside a task's PID namespace
/// `$$` is not a host pid): `(pid, command line)`.
pub fn execution_processes(exec: &str) -> Vec<(i32, String)> {
    let marker = format!("HANGAR_EXECUTION_ID={exec}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if alive(pid)
            && environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
        {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// The host pid of the process of `exec` whose command line contains `needle`.
pub fn execution_pid(exec: &str, needle: &str) -> i32 {
    let processes = execution_processes(exec);
    processes
        .iter()
        .find(|(_, cmd)| cmd.contains(needle))
        .map(|(pid, _)| *pid)
        .unwrap_or_else(|| panic!("no process of {exec} runs `{needle}`: {processes:?}"))
}

/// The process group of `pid`, as the host sees it.
pub fn group_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Whether `pid` is alive (not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}
