//! `hangar up` as a new user runs it: a fresh HOME, a free loopback port,
//! its banner and logs in one file.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// A running `hangar up`; killed when dropped.
pub struct HangarUp {
    /// Its HOME (config, state and data directories live under it).
    pub home: tempfile::TempDir,
    /// The API's port on 127.0.0.1.
    pub port: u16,
    /// Banner and logs.
    pub log: PathBuf,
    /// The process.
    pub child: Child,
}

impl HangarUp {
    /// Starts `bin up --listen 127.0.0.1:<free port> --data-dir <home>/data`
    /// with `args` after, in `home` (made by the caller, so it can put a
    /// config file there first), with a clean environment plus `env`.
    /// Prometheus metrics go on a free port (`OTEL_EXPORTER_PROMETHEUS_PORT=0`).
    pub fn start(
        bin: &Path,
        home: tempfile::TempDir,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<HangarUp> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = home.path().join("up.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(home.path().join("data"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env("OTEL_EXPORTER_PROMETHEUS_PORT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .context("spawn hangar up")?;
        Ok(HangarUp {
            home,
            port,
            log,
            child,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin API key the first start saved for the local CLI.
    pub fn api_key(&self) -> Result<String> {
        let path = self.home.path().join("config/hangar/cli.json");
        let creds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        creds["api_key"]
            .as_str()
            .map(str::to_owned)
            .context("no api_key in cli.json")
    }
}
