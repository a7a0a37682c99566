//! A cluster of real `hangar` processes for system tests.
//!
//! [`TestCluster::start`] launches `hangar server` on a random loopback port
//! with its own data directory and config file, waits until it answers
//! `/readyz`, and reads the bootstrap API key it saved. Workers are real
//! `hangar worker` processes. Every process is killed when the cluster drops;
//! logs stay in the cluster's temporary directory and are printed when a
//! test panics.

use crate::poll::within;
use anyhow::{Context, Result, bail};
use hangar_client::Client;
use hangar_protocol::RunItem;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How a cluster's server is configured.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Extra YAML appended to the server config (e.g. `providers:`).
    pub extra_config: String,
    /// Heartbeat interval (server pings).
    pub heartbeat: Duration,
    /// Worker lost after this long away.
    pub lost_timeout: Duration,
    /// PostgreSQL `(url, schema)` instead of SQLite, for replica tests.
    pub postgres: Option<(String, String)>,
    /// The server's data directory (SQLite database, master key) instead of
    /// one inside the cluster's temporary directory (e.g. on a small tmpfs).
    pub data_dir: Option<PathBuf>,
    /// Variables for every server, replica and worker process (e.g.
    /// `OTEL_*`). Logs are `pretty` unless this sets `HANGAR_LOG_FORMAT`.
    pub env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            extra_config: String::new(),
            heartbeat: Duration::from_secs(2),
            lost_timeout: Duration::from_secs(6),
            postgres: None,
            data_dir: None,
            env: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Configures one OpenAI-compatible provider named `fake` at `base_url`
    /// with default model `fake/test-model`.
    pub fn with_fake_llm(mut self, base_url: &str) -> Self {
        self.extra_config.push_str(&format!(
            "providers:\n  fake:\n    kind: openai\n    base_url: {base_url}\n    api_key: test-key\n    default_model: test-model\n"
        ));
        self
    }
}

/// A `hangar worker` process.
pub struct WorkerProcess {
    /// Worker id.
    pub id: String,
    /// Its workspace root.
    pub workspace_root: PathBuf,
    /// The process.
    pub child: Child,
    /// Log file.
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().context("worker already exited")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)?;
        Ok(())
    }
}

/// Real server and worker processes.
pub struct TestCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    server: Option<Child>,
    /// Server base URL.
    pub url: String,
    /// Admin API key from bootstrap.
    pub api_key: String,
    workers: Vec<WorkerProcess>,
    /// The worker token of each worker id (a restarted worker reuses its own).
    worker_tokens: std::collections::HashMap<String, String>,
    replicas: Vec<(String, Child, PathBuf)>,
    data_dir: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (name, path) in self.log_files() {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("----- {name} log (last {} lines) -----", tail.len());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        for w in &mut self.workers {
            let _ = w.child.start_kill();
        }
        for (_, r, _) in &mut self.replicas {
            let _ = r.start_kill();
        }
        if let Some(s) = &mut self.server {
            let _ = s.start_kill();
        }
    }
}

fn log_file(path: &Path) -> Result<Stdio> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Stdio::from(f))
}

impl TestCluster {
    /// Starts a server from the `hangar` binary at `bin`.
    pub async fn start(bin: &Path, options: ClusterOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let cli_json = dir.path().join("cli.json");
        let mut config = format!(
            "heartbeat_interval: {}ms\nread_timeout: {}ms\nworker_lost_timeout: {}ms\nproviders_from_env: false\ncli_config_path: {}\nmaster_key_file: {}\n{}",
            options.heartbeat.as_millis(),
            options.heartbeat.as_millis() * 3,
            options.lost_timeout.as_millis(),
            cli_json.display(),
            dir.path().join("master.key").display(),
            options.extra_config
        );
        if let Some((url, schema)) = &options.postgres {
            config.push_str(&format!("database_url: {url}\ndatabase_schema: {schema}\n"));
        }
        std::fs::write(dir.path().join("server.yaml"), config)?;
        let mut cluster = TestCluster {
            dir,
            bin: bin.to_owned(),
            server: None,
            url: String::new(),
            api_key: String::new(),
            workers: Vec::new(),
            worker_tokens: Default::default(),
            replicas: Vec::new(),
            data_dir: options.data_dir.clone(),
            env: options.env.clone(),
        };
        cluster.start_server("127.0.0.1:0").await?;
        let creds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cli_json)?)?;
        cluster.url = creds["server_url"]
            .as_str()
            .context("server_url")?
            .to_owned();
        cluster.api_key = creds["api_key"].as_str().context("api_key")?.to_owned();
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    async fn start_server(&mut self, listen: &str) -> Result<()> {
        let dir = self.dir.path();
        let log = dir.join("server.log");
        let child = Command::new(&self.bin)
            .args(["server", "--listen", listen, "--data-dir"])
            .arg(self.data_dir.clone().unwrap_or_else(|| dir.join("data")))
            .arg("--config")
            .arg(dir.join("server.yaml"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .env("RUST_LOG", "info,hangar_server=debug")
            .env("HANGAR_LOG_FORMAT", "pretty")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("spawn hangar server")?;
        self.server = Some(child);
        if self.url.is_empty() {
            let cli_json = dir.join("cli.json");
            within(
                "the server to bootstrap",
                BOOT,
                BOOT_POLL,
                async || match self.check_server_alive() {
                    Err(died) => Ok(Err(died)),
                    Ok(()) if cli_json.exists() => Ok(Ok(())),
                    Ok(()) => Err("no cli.json yet"),
                },
            )
            .await??;
        }
        Ok(())
    }

    fn check_server_alive(&mut self) -> Result<()> {
        if let Some(s) = &mut self.server
            && let Some(status) = s.try_wait()?
        {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            bail!("server exited with {status}:\n{log}");
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::new();
        let readyz = format!("{}/readyz", self.url);
        let what = format!("the server at {} to be ready", self.url);
        within(&what, BOOT, BOOT_POLL, async || {
            match self.check_server_alive() {
                Err(died) => Ok(Err(died)),
                Ok(()) => ready(&http, &readyz).await.map(Ok),
            }
        })
        .await?
    }

    /// Starts another `hangar server` replica with the same config file (so the
    /// same database and master key) on its own port and data directory; returns its URL.
    pub async fn start_replica(&mut self, name: &str) -> Result<String> {
        let dir = self.dir.path();
        let log = dir.join(format!("server-{name}.log"));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new(&self.bin)
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.join(format!("data-{name}")))
            .arg("--config")
            .arg(dir.join("server.yaml"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("RUST_LOG", "info,hangar_server=debug")
            .env("HANGAR_LOG_FORMAT", "pretty")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("spawn replica")?;
        self.replicas.push((name.to_owned(), child, log));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let readyz = format!("{url}/readyz");
        let what = format!("replica {name} to be ready");
        within(&what, BOOT, BOOT_POLL, async || ready(&http, &readyz).await).await?;
        Ok(url)
    }

    /// Kills replica `name` with SIGKILL.
    pub async fn kill_replica(&mut self, name: &str) -> Result<()> {
        for (n, child, _) in &mut self.replicas {
            if n == name {
                child.kill().await?;
                return Ok(());
            }
        }
        bail!("no replica named {name}")
    }

    /// Starts a worker connected to the server at `url` (e.g. a replica);
    /// waits until that server lists it (each replica lists its own workers).
    pub async fn start_worker_on(
        &mut self,
        url: &str,
        id: &str,
        extra: &[&str],
    ) -> Result<PathBuf> {
        let url = url.to_owned();
        let worker = self.launch_worker(&url, id, "direct", extra).await?;
        let root = worker.workspace_root.clone();
        wait_listed(&Client::new(&url, self.api_key.clone())?, id, true).await?;
        Ok(root)
    }

    /// Kills the server with SIGKILL.
    pub async fn kill_server(&mut self) -> Result<()> {
        if let Some(mut s) = self.server.take() {
            s.kill().await?;
        }
        Ok(())
    }

    /// Restarts the server on the same port and data directory.
    pub async fn restart_server(&mut self) -> Result<()> {
        self.kill_server().await?;
        let listen = self.url.trim_start_matches("http://").to_owned();
        self.start_server(&listen).await?;
        self.wait_ready().await
    }

    /// The server's log file.
    pub fn server_log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The log file of replica `name`.
    pub fn replica_log(&self, name: &str) -> Option<PathBuf> {
        self.replicas
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, log)| log.clone())
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client with the admin key.
    pub fn client(&self) -> Client {
        // The URL came from the server itself; it always parses.
        Client::new(&self.url, self.api_key.clone()).unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// Starts `hangar worker --worker-id ID` with extra flags; waits until the server lists it.
    pub async fn start_worker(&mut self, id: &str, extra: &[&str]) -> Result<&mut WorkerProcess> {
        self.start_worker_with(id, "direct", extra).await
    }

    /// Starts `hangar worker --worker-id ID --backend BACKEND` with extra
    /// flags (e.g. `--config-file`); waits until the server lists it. The
    /// workspace root is `ws-ID` in the cluster directory, as for
    /// [`start_worker`](Self::start_worker).
    pub async fn start_worker_with(
        &mut self,
        id: &str,
        backend: &str,
        extra: &[&str],
    ) -> Result<&mut WorkerProcess> {
        let url = self.url.clone();
        self.launch_worker(&url, id, backend, extra).await?;
        self.wait_worker(id, true).await?;
        self.workers.last_mut().context("worker")
    }

    /// Makes workers started as `id` connect with `token` (e.g. one made
    /// with `hangar worker token create`).
    pub fn use_worker_token(&mut self, id: &str, token: &str) {
        self.worker_tokens.insert(id.to_owned(), token.to_owned());
    }

    /// The worker token bound to worker id `id` (created on first use, then
    /// reused, as an operator would for a restarted worker).
    pub async fn worker_token(&mut self, id: &str) -> Result<String> {
        if let Some(token) = self.worker_tokens.get(id) {
            return Ok(token.clone());
        }
        let created = self
            .client()
            .create_worker_token(&hangar_protocol::CreateWorkerTokenRequest {
                worker_id: Some(id.into()),
                ..Default::default()
            })
            .await
            .with_context(|| format!("create a worker token for `{id}`"))?;
        let token = created.token.context("the created worker token")?;
        self.worker_tokens.insert(id.to_owned(), token.clone());
        Ok(token)
    }

    /// Spawns `hangar worker` for server `url` with its worker token; its
    /// workspace root is `ws-ID`.
    async fn launch_worker(
        &mut self,
        url: &str,
        id: &str,
        backend: &str,
        extra: &[&str],
    ) -> Result<&mut WorkerProcess> {
        let token = self.worker_token(id).await?;
        let root = self.dir.path().join(format!("ws-{id}"));
        let log = self.dir.path().join(format!("worker-{id}.log"));
        let child = Command::new(&self.bin)
            .args([
                "worker",
                "--worker-id",
                id,
                "--server-url",
                url,
                "--backend",
                backend,
            ])
            .arg("--workspace-root")
            .arg(&root)
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("HANGAR_API_KEY", &token)
            .env("RUST_LOG", "info,hangar_worker=debug")
            .env("HANGAR_LOG_FORMAT", "pretty")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn hangar worker --backend {backend}"))?;
        self.workers.push(WorkerProcess {
            id: id.to_owned(),
            workspace_root: root,
            child,
            log,
        });
        self.workers.last_mut().context("worker")
    }

    /// The worker process with this id.
    pub fn worker(&mut self, id: &str) -> Option<&mut WorkerProcess> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    /// Waits until the server lists (or no longer lists) worker `id`.
    pub async fn wait_worker(&self, id: &str, present: bool) -> Result<()> {
        wait_listed(&self.client(), id, present).await
    }

    /// Polls a run until `done(run)` holds; returns the run.
    pub async fn wait_run(
        &self,
        run_id: &str,
        timeout: Duration,
        done: impl Fn(&RunItem) -> bool,
    ) -> Result<RunItem> {
        let client = self.client();
        let what = format!("run {run_id}");
        let run = within(
            &what,
            timeout,
            Duration::from_millis(20),
            async || match client.get_run(run_id).await {
                Err(e) => Ok(Err(e)),
                Ok(run) if done(&run) => Ok(Ok(run)),
                Ok(run) => Err(format!("{} ({:?})", run.state, run.status_message)),
            },
        )
        .await??;
        Ok(run)
    }

    /// Waits until a run reaches a terminal state and its sandbox is gone.
    pub async fn wait_finished(&self, run_id: &str, timeout: Duration) -> Result<RunItem> {
        self.wait_run(run_id, timeout, |r| {
            r.state.is_terminal() && r.is_sandbox_running != Some(true)
        })
        .await
    }

    fn log_files(&self) -> Vec<(String, PathBuf)> {
        let mut logs = vec![("server".to_owned(), self.dir.path().join("server.log"))];
        for w in &self.workers {
            logs.push((format!("worker {}", w.id), w.log.clone()));
        }
        for (name, _, log) in &self.replicas {
            logs.push((format!("replica {name}"), log.clone()));
        }
        logs
    }
}

/// How long a server or replica gets to start.
const BOOT: Duration = Duration::from_secs(30);
/// How often a starting server is checked.
const BOOT_POLL: Duration = Duration::from_millis(20);

/// Whether `GET readyz` answers success (`Err`: what it answered instead).
async fn ready(http: &reqwest::Client, readyz: &str) -> std::result::Result<(), String> {
    match http.get(readyz).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// The last `http://…/metrics` URL a process printed in its log (the
/// server prints where it serves metrics; a worker logs it), waiting up to
/// 30 s for one to appear after `skip` bytes of the log.
pub async fn metrics_url(log: &Path, skip: usize) -> Result<String> {
    let what = format!("a metrics URL in {}", log.display());
    let url = within(&what, BOOT, Duration::from_millis(50), async || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .get(skip..)
            .unwrap_or("")
            .lines()
            .rev()
            .find_map(|line| {
                let start = line.find("http://")?;
                let rest = &line[start..];
                let end = rest.find("/metrics")? + "/metrics".len();
                Some(rest[..end].to_owned())
            });
        found.ok_or("none yet")
    })
    .await?;
    Ok(url)
}

/// Polls `GET /workers` until worker `id` is (or is not) listed.
async fn wait_listed(client: &Client, id: &str, present: bool) -> Result<()> {
    let what = format!(
        "worker {id} to be {} at {}",
        if present { "listed" } else { "unlisted" },
        client.base_url()
    );
    within(&what, BOOT, Duration::from_millis(25), async || {
        let list: serde_json::Value = match client.get_json("api/v1/workers").await {
            Ok(list) => list,
            Err(e) => return Ok(Err(e)),
        };
        let found = list["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["worker_id"] == id));
        if found == present {
            Ok(Ok(()))
        } else {
            Err(format!("listed={found}"))
        }
    })
    .await??;
    Ok(())
}
