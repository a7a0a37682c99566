//! A worker that speaks exactly the stock `oz-agent-worker` protocol, for
//! issue 17's drop-in tests (`../shared/reference/oz-agent-worker-notes.md`).
//!
//! Frame for frame as the Go worker: no `worker_hello`, no `execution_id`
//! on its reports, `omitempty` fields left out, `task_claimed` sent
//! unconditionally, `task_completed` / `task_failed{failure_reason,
//! exit_code}` at the end, and `task_completed{task_state: "CANCELLED"}`
//! after a cancellation. Assignments are parsed as JSON values, not with
//! Hangar's types, so a field Hangar renames or retypes breaks the tests.
//!
//! It runs the real agent with the stock command line (§4.2), one of two
//! ways:
//! - [`Launch::Direct`], as the stock direct backend: `<oz_path> agent run …`
//!   in `<workspace_root>/<task_id>` with only `HOME`, `TMPDIR` and `PATH`
//!   from the host plus `TASK_ID`, `GIT_TERMINAL_PROMPT`,
//!   `GH_PROMPT_DISABLED`, `WARP_SERVER_ROOT_URL` and the assignment's
//!   `env_vars`;
//! - [`Launch::Docker`], as the stock Docker backend: the assignment's
//!   `sidecar_image` exported into a volume mounted at `/agent`, and the
//!   task image started with `/agent/entrypoint.sh agent run …`, working
//!   directory `/workspace`.

use anyhow::{Context, Result, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How the worker runs the agent.
#[derive(Debug, Clone)]
pub enum Launch {
    /// The stock direct backend: `oz_path` on the host.
    Direct {
        /// The agent binary (`hangar`).
        oz_path: PathBuf,
        /// Parent of the per-task workspaces.
        workspace_root: PathBuf,
    },
    /// The stock Docker backend: `docker run` of `image` (the environment's,
    /// else this one) with the assignment's sidecar at `/agent`.
    Docker {
        /// Task image when the assignment names none.
        default_image: String,
    },
}

/// What a stock worker needs to connect.
#[derive(Debug, Clone)]
pub struct OzWorkerConfig {
    /// `--web-socket-url`: `ws://HOST/api/v1/selfhosted/worker/ws`.
    pub web_socket_url: String,
    /// `--server-root-url`.
    pub server_root_url: String,
    /// `--worker-id`.
    pub worker_id: String,
    /// `WARP_API_KEY`.
    pub api_key: String,
    /// How tasks run.
    pub launch: Launch,
}

/// A running stock-protocol worker; stops when dropped.
pub struct OzWorker {
    frames: Arc<Mutex<Vec<Value>>>,
    argv: Arc<Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OzWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OzWorker {
    /// Connects and serves assignments until dropped.
    pub async fn start(config: OzWorkerConfig) -> Result<OzWorker> {
        let url = reqwest::Url::parse(&format!(
            "{}?worker_id={}",
            config.web_socket_url, config.worker_id
        ))
        .context("web socket url")?;
        let ws = hangar_client::connect_websocket(&url, &config.api_key)
            .await
            .context("stock worker: connect")?;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let argv = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(ws, config, frames.clone(), argv.clone()));
        Ok(OzWorker { frames, argv, task })
    }

    /// Every frame received and sent so far (`{"dir": "in"|"out", "frame": …}`).
    pub fn frames(&self) -> Vec<Value> {
        lock(&self.frames).clone()
    }

    /// The agent command lines run so far (after the program).
    pub fn argv(&self) -> Vec<Vec<String>> {
        lock(&self.argv).clone()
    }

    /// The `data` of every `task_assignment` received.
    pub fn assignments(&self) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| f["dir"] == "in" && f["frame"]["type"] == "task_assignment")
            .map(|f| f["frame"]["data"].clone())
            .collect()
    }
}

type Outbox = mpsc::UnboundedSender<Value>;

/// Locks `m`, even after a panic elsewhere (the data is a log).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(
    ws: hangar_client::WebSocket,
    config: OzWorkerConfig,
    frames: Arc<Mutex<Vec<Value>>>,
    argv_log: Arc<Mutex<Vec<Vec<String>>>>,
) {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Value>();
    let log = frames.clone();
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            lock(&log).push(json!({"dir": "out", "frame": frame.clone()}));
            if sink
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let running: Arc<Mutex<BTreeMap<String, tokio::task::AbortHandle>>> = Arc::default();
    let kills: Arc<Mutex<BTreeMap<String, mpsc::UnboundedSender<()>>>> = Arc::default();
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue; // the stock worker logs and drops undecodable frames
        };
        lock(&frames).push(json!({"dir": "in", "frame": frame.clone()}));
        let data = frame["data"].clone();
        let Some(task_id) = data["task_id"].as_str().map(str::to_owned) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("task_assignment") => {
                let _ = out_tx.send(json!({"type": "task_claimed",
                    "data": {"task_id": task_id, "worker_id": config.worker_id}}));
                let argv = base_args(&data, &config.server_root_url);
                lock(&argv_log).push(argv.clone());
                let (kill_tx, kill_rx) = mpsc::unbounded_channel();
                lock(&kills).insert(task_id.clone(), kill_tx);
                let handle =
                    tokio::spawn(execute(config.clone(), data, argv, out_tx.clone(), kill_rx));
                lock(&running).insert(task_id, handle.abort_handle());
            }
            Some("task_cancellation") => {
                if let Some(kill) = lock(&kills).remove(&task_id) {
                    let _ = kill.send(());
                }
            }
            _ => {} // unknown types are logged and ignored
        }
    }
    for (_, h) in lock(&running).iter() {
        h.abort();
    }
    writer.abort();
}

/// The agent's arguments exactly as `worker.go` + `task_utils.go` build them.
pub fn base_args(data: &Value, server_root_url: &str) -> Vec<String> {
    let task = &data["task"];
    let mut args: Vec<String> = vec!["agent".into(), "run".into()];
    if task["owner"]["Type"] == "TEAM" {
        args.extend(["--share".into(), "team:edit".into()]);
    }
    args.extend([
        "--task-id".into(),
        task["id"].as_str().unwrap_or_default().to_owned(),
        "--sandboxed".into(),
        "--server-root-url".into(),
        server_root_url.to_owned(),
    ]);
    let trimmed = |v: &Value| {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let cfg = &task["agent_config_snapshot"];
    let mut environment = None;
    if cfg.is_object() {
        let harness = trimmed(&cfg["harness"]["type"]).filter(|h| h != "oz");
        if harness.is_none()
            && let Some(m) = trimmed(&cfg["model_id"])
        {
            args.extend(["--model".into(), m]);
        }
        if let Some(p) = trimmed(&cfg["profile_id"]) {
            args.extend(["--profile".into(), p]);
        }
        if let Some(s) = trimmed(&cfg["skill_spec"]) {
            args.extend(["--skill".into(), s]);
        }
        if let Some(mcp) = cfg["mcp_servers"].as_object().filter(|m| !m.is_empty()) {
            // Re-marshalled with sorted keys, as Go does for a map.
            let sorted: BTreeMap<&String, &Value> = mcp.iter().collect();
            args.extend([
                "--mcp".into(),
                serde_json::to_string(&sorted).unwrap_or_default(),
            ]);
        }
        let computer_use = cfg["computer_use_enabled"]
            .as_bool()
            .unwrap_or(harness.is_none());
        args.push(if computer_use {
            "--computer-use".into()
        } else {
            "--no-computer-use".into()
        });
        let aws = &cfg["inference_providers"]["aws"];
        if aws["disabled"] != true
            && let Some(role) = trimmed(&aws["role_arn"])
        {
            args.extend(["--bedrock-inference-role".into(), role]);
            if let Some(region) = trimmed(&aws["region"]) {
                args.extend(["--bedrock-role-region".into(), region]);
            }
        }
        if let Some(h) = harness {
            args.extend(["--harness".into(), h]);
        }
        match cfg["session_sharing"]["public_access"].as_str() {
            Some("VIEWER") => args.extend(["--share".into(), "public:view".into()]),
            Some("EDITOR") => args.extend(["--share".into(), "public:edit".into()]),
            _ => {}
        }
        if cfg["snapshot_disabled"] == true {
            args.push("--no-snapshot".into());
        }
        for (key, flag) in [
            ("snapshot_upload_timeout_secs", "--snapshot-upload-timeout"),
            ("snapshot_script_timeout_secs", "--snapshot-script-timeout"),
        ] {
            if let Some(n) = cfg[key].as_i64().filter(|n| *n > 0) {
                args.extend([flag.into(), format!("{n}s")]);
            }
        }
        environment = trimmed(&cfg["environment_id"]);
    }
    if let Some(env) = environment {
        args.extend(["--environment".into(), env]);
    }
    if let Some(extra) = data["additional_oz_args"].as_array() {
        args.extend(extra.iter().filter_map(|a| a.as_str().map(str::to_owned)));
    }
    args.push("--idle-on-complete".into());
    if let Some(m) = cfg["idle_timeout_minutes"].as_i64().filter(|m| *m > 0) {
        args.push(format!("{m}m"));
    }
    args
}

/// The task env in the stock order: `TASK_ID`, the prompt switches, the
/// server root, then `env_vars`.
fn task_env(data: &Value, server_root_url: &str) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "TASK_ID".to_owned(),
            data["task"]["id"].as_str().unwrap_or_default().to_owned(),
        ),
        ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
        ("GH_PROMPT_DISABLED".to_owned(), "1".to_owned()),
        (
            "WARP_SERVER_ROOT_URL".to_owned(),
            server_root_url.to_owned(),
        ),
    ];
    if let Some(vars) = data["env_vars"].as_object() {
        env.extend(
            vars.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())),
        );
    }
    env
}

async fn execute(
    config: OzWorkerConfig,
    data: Value,
    argv: Vec<String>,
    out: Outbox,
    mut kill: mpsc::UnboundedReceiver<()>,
) {
    let task_id = data["task_id"].as_str().unwrap_or_default().to_owned();
    let started = match spawn(&config, &data, &argv).await {
        Ok(child) => child,
        Err(e) => {
            let _ = out.send(json!({"type": "task_failed", "data": {
                "task_id": task_id, "message": format!("{e:#}"), "failure_reason": "agent_invocation"}}));
            return;
        }
    };
    let (mut child, cleanup) = started;
    let status = tokio::select! {
        s = child.wait() => s,
        _ = kill.recv() => {
            // Direct: SIGKILL, no grace; Docker: force-remove.
            let _ = child.start_kill();
            let _ = child.wait().await;
            cleanup.run().await;
            let _ = out.send(json!({"type": "task_completed", "data": {
                "task_id": task_id, "message": "Task cancelled by user request.", "task_state": "CANCELLED"}}));
            return;
        }
    };
    cleanup.run().await;
    let frame = match status {
        Ok(s) if s.success() => json!({"type": "task_completed", "data": {
            "task_id": task_id, "message": "Task completed successfully"}}),
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            let code = s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            json!({"type": "task_failed", "data": {"task_id": task_id,
                "message": format!("agent exited with status {code}"),
                "failure_reason": "agent_invocation", "exit_code": code}})
        }
        Err(e) => json!({"type": "task_failed", "data": {"task_id": task_id,
            "message": format!("wait: {e}"), "failure_reason": "agent_invocation"}}),
    };
    let _ = out.send(frame);
}

/// What to remove after a task.
enum Cleanup {
    Nothing,
    /// The container and its env file.
    Container(String, tempfile::NamedTempFile),
}

impl Cleanup {
    async fn run(self) {
        if let Cleanup::Container(name, _env_file) = self {
            let _ = Command::new("docker")
                .args(["rm", "-f", &name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }
}

async fn spawn(
    config: &OzWorkerConfig,
    data: &Value,
    argv: &[String],
) -> Result<(tokio::process::Child, Cleanup)> {
    let task_id = data["task"]["id"].as_str().unwrap_or_default();
    let env = task_env(data, &config.server_root_url);
    match &config.launch {
        Launch::Direct {
            oz_path,
            workspace_root,
        } => {
            if task_id.is_empty() || task_id.contains('/') || task_id == "." || task_id == ".." {
                bail!("invalid task id {task_id:?}");
            }
            let workspace = workspace_root.join(task_id);
            std::fs::create_dir_all(&workspace)?;
            let mut cmd = Command::new(oz_path);
            cmd.args(argv).current_dir(&workspace).env_clear();
            for name in ["HOME", "TMPDIR", "PATH"] {
                if let Some(v) = std::env::var_os(name) {
                    cmd.env(name, v);
                }
            }
            cmd.envs(env).kill_on_drop(true);
            Ok((cmd.spawn().context("start the agent")?, Cleanup::Nothing))
        }
        Launch::Docker { default_image } => {
            let image = data["docker_image"]
                .as_str()
                .unwrap_or(default_image)
                .to_owned();
            let sidecar = data["sidecar_image"].as_str().context(
                "the assignment names no sidecar_image (a stock Docker worker needs one)",
            )?;
            let volume = crate::images::sidecar_volume(sidecar)?;
            let name = format!("oz-task-{task_id}-{}", std::process::id());
            // In the container's config, as the stock worker puts it; never
            // on this process's command line.
            let env_file = tempfile::NamedTempFile::new()?;
            let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(env_file.path(), lines)?;
            let mut cmd = Command::new("docker");
            cmd.args(["run", "--rm", "--name", &name, "--network", "host"])
                .args(["-v", &format!("{volume}:/agent:ro"), "-w", "/workspace"])
                .arg("--env-file")
                .arg(env_file.path());
            cmd.arg(&image)
                .arg("/agent/entrypoint.sh")
                .args(argv)
                .stdin(Stdio::null())
                .kill_on_drop(true);
            Ok((
                cmd.spawn().context("docker run")?,
                Cleanup::Container(name, env_file),
            ))
        }
    }
}
