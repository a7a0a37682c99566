//! Worker configuration: command-line flags, the YAML file, and the resolved
//! [`WorkerConfig`] (PROTOCOL.md §3).
//!
//! Precedence is flags > file > defaults. [`WorkerArgs::resolve`] is the one
//! loader; `hangar up` skips it and fills a [`WorkerConfig`] directly.

mod args;
mod file;
mod print;
mod settings;

pub use args::WorkerArgs;
pub use file::{
    FileBackend, FileCommand, FileConfig, FileDirect, FileDocker, FileEnvVar, FileKubernetes,
};
pub use settings::{
    CommandSettings, DirectSettings, DockerSettings, KubernetesSettings, PullPolicy, SandboxKind,
    SandboxMount,
};

use clap::ValueEnum;
use hangar_protocol::WorkerId;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default control-plane URL (a local `hangar server` / `hangar up`).
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:7420";
/// Default number of tasks run at once. Unlimited (0) is a foot-gun on the
/// direct backend, where every task is a process tree on the host.
pub const DEFAULT_MAX_CONCURRENT_TASKS: u32 = 4;
/// Default WebSocket ping interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default read deadline: the connection is dead when nothing arrives for this long.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default self-fencing delay: the server's default lease (`worker_lost_timeout`).
pub const DEFAULT_FENCE_AFTER: Duration = Duration::from_secs(120);
/// Default time between SIGTERM and SIGKILL when stopping a task.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// The worker's credential: the one redacting secret type, whose `Debug`
/// and `Display` print `***` so it never reaches a log.
pub use hangar_protocol::SecretString as ApiKey;

/// Where tasks run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// A container per task (the documented default).
    #[default]
    Docker,
    /// A Kubernetes Job per task.
    Kubernetes,
    /// A process per task in a workspace directory on the host.
    Direct,
    /// Hand the task to an operator command.
    Command,
}

impl BackendKind {
    /// The name used on the command line, in the file and in `worker_hello`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackendKind::Docker => "docker",
            BackendKind::Kubernetes => "kubernetes",
            BackendKind::Direct => "direct",
            BackendKind::Command => "command",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log verbosity; the binary installs the subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, including agent output.
    Debug,
    /// Lifecycle events.
    #[default]
    Info,
    /// Problems that the worker recovers from.
    Warn,
    /// Problems that need an operator.
    Error,
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub fn as_str(&self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, with the run, execution and worker ids of
    /// the spans an event happened in (what log shippers want).
    Json,
    /// Human-readable lines.
    Pretty,
}

impl LogFormat {
    /// `json` when stderr is not a terminal, `pretty` when it is.
    pub fn for_stderr() -> LogFormat {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        }
    }
}
/// The resolved worker configuration. Build it with [`WorkerArgs::resolve`] or
/// fill it directly (`hangar up`), starting from `WorkerConfig::default()`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// Name of this worker (exact match for `--host`).
    pub worker_id: WorkerId,
    /// Team API key; only ever sent in the `Authorization` header.
    pub api_key: ApiKey,
    /// Base URL of the control plane.
    pub server_url: String,
    /// Execution backend.
    pub backend: BackendKind,
    /// Log verbosity (applied by the binary).
    pub log_level: LogLevel,
    /// Remove sandboxes after tasks end.
    pub cleanup: bool,
    /// Docker volumes (`HOST:CTR[:ro|rw]`).
    pub volumes: Vec<String>,
    /// Extra environment for every task, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Tasks run at once; 0 = unlimited.
    pub max_concurrent_tasks: u32,
    /// How long a finished run's sandbox is kept for a follow-up (also passed
    /// to the agent as `--idle-on-complete`).
    pub idle_on_complete: Option<String>,
    /// Free-form labels announced in `worker_hello`.
    pub labels: BTreeMap<String, String>,
    /// WebSocket ping interval.
    pub heartbeat_interval: Duration,
    /// Read deadline of the connection.
    pub read_timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Stop running tasks after this long without a frame from the server
    /// (the server has ended them when their leases expired).
    pub fence_after: Duration,
    /// Limit for the WebSocket handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay (before jitter); doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Cap of the reconnect delay.
    pub reconnect_max: Duration,
    /// A connection that stayed up this long resets the reconnect delay.
    pub reconnect_reset_after: Duration,
    /// Binary launched for tasks; `None` = the current executable.
    pub agent_path: Option<PathBuf>,
    /// Direct-backend settings.
    pub direct: DirectSettings,
    /// Docker-backend settings.
    pub docker: DockerSettings,
    /// Command-backend settings (`backend.command`).
    pub command: CommandSettings,
    /// Kubernetes-backend settings (`backend.kubernetes`).
    pub kubernetes: KubernetesSettings,
    /// Accept `file://` URLs and local paths as repositories (tests).
    pub allow_local_repositories: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: WorkerId::from(""),
            api_key: ApiKey::default(),
            server_url: DEFAULT_SERVER_URL.to_owned(),
            backend: BackendKind::default(),
            log_level: LogLevel::default(),
            cleanup: true,
            volumes: Vec::new(),
            env: Vec::new(),
            max_concurrent_tasks: DEFAULT_MAX_CONCURRENT_TASKS,
            idle_on_complete: None,
            labels: BTreeMap::new(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            read_timeout: DEFAULT_READ_TIMEOUT,
            fence_after: DEFAULT_FENCE_AFTER,
            kill_grace: DEFAULT_KILL_GRACE,
            connect_timeout: Duration::from_secs(30),
            reconnect_initial: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            reconnect_reset_after: Duration::from_secs(10),
            agent_path: None,
            direct: DirectSettings::default(),
            docker: DockerSettings::default(),
            command: CommandSettings::default(),
            kubernetes: KubernetesSettings::default(),
            allow_local_repositories: false,
        }
    }
}

/// What is wrong with the configuration, and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid YAML for the schema.
    #[error(
        "invalid config file {}{}: {source} (see PROTOCOL.md §3 for the schema)",
        path.display(),
        location.map(|(l, c)| format!(" at line {l}, column {c}")).unwrap_or_default()
    )]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Line and column, when serde knows them.
        location: Option<(usize, usize)>,
        /// Cause.
        #[source]
        source: serde_norway::Error,
    },
    /// Any other invalid setting.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl WorkerConfig {
    /// Checks invariants that hold however the config was built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_worker_id(self.worker_id.as_str())?;
        if self.api_key.is_empty() {
            return Err(invalid(
                "no API key: pass --api-key <KEY> or set HANGAR_API_KEY",
            ));
        }
        hangar_client::parse_server_url(&self.server_url)
            .map_err(|e| invalid(format!("server URL: {e}")))?;
        for v in &self.volumes {
            validate_volume(v)?;
        }
        if let Some(image) = &self.docker.default_image {
            hangar_protocol::repository::check_image_ref(image)
                .map_err(|e| invalid(format!("default_image: {e}")))?;
        }
        if self.heartbeat_interval.is_zero() || self.read_timeout.is_zero() {
            return Err(invalid(
                "--heartbeat-interval and --read-timeout must be greater than zero",
            ));
        }
        if self.fence_after <= self.heartbeat_interval {
            return Err(invalid(format!(
                "--fence-after ({:?}) must be longer than --heartbeat-interval ({:?}), \
                 otherwise tasks are stopped between two healthy heartbeats; use the \
                 server's worker_lost_timeout",
                self.fence_after, self.heartbeat_interval
            )));
        }
        if self.read_timeout <= self.heartbeat_interval {
            return Err(invalid(format!(
                "--read-timeout ({:?}) must be longer than --heartbeat-interval ({:?}), \
                 otherwise a healthy idle connection is declared dead",
                self.read_timeout, self.heartbeat_interval
            )));
        }
        if self.backend == BackendKind::Command {
            let c = &self.command;
            if c.dispatch_command
                .as_deref()
                .is_none_or(|d| d.trim().is_empty())
            {
                return Err(invalid(
                    "the command backend needs `backend.command.dispatch_command` in the config \
                     file: a shell command that starts the task from the JSON payload on its \
                     stdin (see examples/command-backend/)",
                ));
            }
            if c.dispatch_timeout.is_zero() || c.status_interval.is_zero() {
                return Err(invalid(
                    "backend.command.dispatch_timeout and status_interval must be above zero",
                ));
            }
        }
        for (key, _) in &self.env {
            if key == hangar_protocol::ENV_API_KEY {
                return Err(invalid(format!(
                    "refusing to pass {key} into tasks: tasks get a run-scoped token, never the worker's key"
                )));
            }
        }
        Ok(())
    }
}

/// What [`WorkerConfig::to_yaml`] prints instead of a secret.
pub const REDACTED: &str = "***";

/// A worker id is non-empty and has no whitespace or `/`.
pub fn validate_worker_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty() {
        return Err(invalid("the worker id is empty: pass --worker-id <ID>"));
    }
    if !hangar_protocol::worker::is_valid_worker_id(id) {
        return Err(invalid(format!(
            "invalid worker id {id:?}: {}",
            hangar_protocol::worker::WORKER_ID_RULE
        )));
    }
    Ok(())
}

/// Parses `KEY=VALUE`, or `KEY` (value taken from `host_env`).
pub fn parse_env_spec(
    spec: &str,
    host_env: &impl Fn(&str) -> Option<String>,
) -> Result<(String, String), ConfigError> {
    let (key, value) = match spec.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (spec, None),
    };
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!(
            "invalid environment entry {spec:?}: expected KEY=VALUE or KEY, with a non-empty KEY without whitespace"
        )));
    }
    let value = match value {
        Some(v) => v,
        None => host_env(key).ok_or_else(|| {
            invalid(format!(
                "{key} is to be inherited from the worker's environment, but it is not set there: \
                 set it, or pass {key}=VALUE"
            ))
        })?,
    };
    Ok((key.to_owned(), value))
}

/// Sets `key` in an ordered env list, replacing an earlier value in place.
fn set_env(env: &mut Vec<(String, String)>, (key, value): (String, String)) {
    match env.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key, value)),
    }
}

/// A volume is `HOST:CONTAINER[:ro|rw]`: `HOST` an absolute path or a
/// volume name, `CONTAINER` an absolute path, neither starting with `-` nor
/// holding `..`, whitespace or control characters (they reach Docker as
/// given).
pub fn validate_volume(spec: &str) -> Result<(), ConfigError> {
    let plain = |p: &str| {
        !p.is_empty()
            && !p.starts_with('-')
            && !p.split('/').any(|s| s == "..")
            && !p.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    let host_ok = |h: &str| {
        plain(h)
            && (h.starts_with('/')
                || h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    };
    let ctr_ok = |c: &str| plain(c) && c.starts_with('/');
    let parts: Vec<&str> = spec.split(':').collect();
    let ok = match parts.as_slice() {
        [host, ctr] => host_ok(host) && ctr_ok(ctr),
        [host, ctr, mode] => host_ok(host) && ctr_ok(ctr) && matches!(*mode, "ro" | "rw"),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid volume {spec:?}: expected HOST:CONTAINER[:ro|rw], HOST an absolute path \
             or a volume name and CONTAINER an absolute path, without `..`, spaces or a leading `-`"
        )))
    }
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `1h30m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let bad = || format!("invalid duration {text:?}: expected e.g. 500ms, 30s, 10m, 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2m5s").unwrap(), Duration::from_secs(125));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10x").is_err());
    }

    #[test]
    fn env_specs() {
        assert_eq!(
            parse_env_spec("A=b=c", &no_env).unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(
            parse_env_spec("A=", &no_env).unwrap(),
            ("A".into(), String::new())
        );
        let host = |k: &str| (k == "HOSTY").then(|| "from-host".to_owned());
        assert_eq!(parse_env_spec("HOSTY", &host).unwrap().1, "from-host");
        let err = parse_env_spec("MISSING_ONE", &host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("MISSING_ONE"), "{err}");
        assert!(parse_env_spec("=x", &no_env).is_err());
        assert!(parse_env_spec("A B=x", &no_env).is_err());
    }

    #[test]
    fn worker_ids() {
        assert!(validate_worker_id("my-worker.1").is_ok());
        assert!(validate_worker_id("").is_err());
        assert!(validate_worker_id("a b").is_err());
        assert!(validate_worker_id("a/b").is_err());
        assert!(validate_worker_id("a\tb").is_err());
    }

    #[test]
    fn api_key_is_redacted() {
        let key = ApiKey::new("hk_secret");
        assert_eq!(format!("{key:?}"), "***");
        assert_eq!(format!("{key}"), "***");
        let cfg = WorkerConfig {
            api_key: key,
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hk_secret"));
    }

    #[test]
    fn volumes_are_checked() {
        assert!(validate_volume("/a:/b").is_ok());
        assert!(validate_volume("/a:/b:ro").is_ok());
        assert!(validate_volume("/a:/b:xx").is_err());
        assert!(validate_volume("/a").is_err());
        assert!(validate_volume("named:/data").is_ok());
        assert!(validate_volume("-v:/b").is_err());
        assert!(validate_volume("/a:-b").is_err());
        assert!(validate_volume("/a/../etc:/b").is_err());
        assert!(validate_volume("rel/dir:/b").is_err());
        assert!(validate_volume("/a:b").is_err());
    }

    #[test]
    fn backend_section_must_be_exactly_one() {
        let p = Path::new("w.yaml");
        let f = FileConfig::parse("backend: {}\n", p).unwrap();
        assert!(
            f.backend_kind(p)
                .unwrap_err()
                .to_string()
                .contains("exactly one")
        );
        let f = FileConfig::parse("backend: {direct: {}, docker: {}}\n", p).unwrap();
        let err = f.backend_kind(p).unwrap_err().to_string();
        assert!(err.contains("docker, direct"), "{err}");
        let f = FileConfig::parse("backend:\n  kubernetes:\n    namespace: x\n", p).unwrap();
        assert_eq!(f.backend_kind(p).unwrap(), Some(BackendKind::Kubernetes));
    }

    #[test]
    fn full_schema_parses() {
        let text = r#"
worker_id: my-worker
cleanup: true
max_concurrent_tasks: 4
backend:
  kubernetes: {namespace: default, kubeconfig: /k, default_image: img, image_pull_policy: IfNotPresent,
               preflight_image: p, setup_command: s, teardown_command: t, extra_labels: {a: b}, extra_annotations: {},
               active_deadline_seconds: 28800, ttl_seconds_after_finished: 86400, workspace_size_limit: 10Gi,
               unschedulable_timeout: 30s, pod_template: {containers: []}}
"#;
        FileConfig::parse(text, Path::new("k.yaml")).unwrap();
        let text = "backend:\n  docker: {volumes: [], environment: [{name: FOO, value: bar}, {name: INHERITED}], default_image: x, network: y}\n";
        FileConfig::parse(text, Path::new("d.yaml")).unwrap();
        let text = "backend:\n  command: {dispatch_command: a, cancel_command: b, dispatch_timeout: 60s, environment: []}\n";
        FileConfig::parse(text, Path::new("c.yaml")).unwrap();
    }
}
