//! Server configuration: typed, with defaults, loaded from an optional YAML file.
//! Precedence: defaults → file → flags (the CLI applies flags on top).

use hangar_llm::ProvidersConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `hangar server` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database and server files live.
    pub data_dir: PathBuf,
    /// Database: `postgres://user:pass@host/db` for several replicas, or
    /// `sqlite:PATH`; default: SQLite at `<data_dir>/hangar.db`.
    pub database_url: Option<String>,
    /// PostgreSQL schema for Hangar's tables (created if missing).
    pub database_schema: Option<String>,
    /// URL clients and workers use to reach this server (default: from `listen`).
    pub public_url: Option<String>,
    /// Model providers by name; a model id is `<name>/<model>`.
    pub providers: ProvidersConfig,
    /// Model used when a run does not name one.
    pub default_model: Option<String>,
    /// Interval between WebSocket pings to workers and agents.
    #[serde(with = "humantime_serde_compat")]
    pub heartbeat_interval: Duration,
    /// A worker that sent nothing for this long is disconnected.
    #[serde(with = "humantime_serde_compat")]
    pub read_timeout: Duration,
    /// A disconnected worker that has not come back after this long is lost:
    /// its running executions end in `ERROR`.
    #[serde(with = "humantime_serde_compat")]
    pub worker_lost_timeout: Duration,
    /// What an expired lease does to a run whose task had started: `error`
    /// (default: the run ends `ERROR` `worker_lost`) or `requeue` (the run is
    /// queued again once for another worker, like Buildkite's automatic retry
    /// on a lost agent; a second lost worker ends it `ERROR`). A task that
    /// never started is always queued again.
    pub lease_expiry_policy: LeaseExpiryPolicy,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Write the bootstrap credentials for the local CLI here (default: the
    /// XDG config dir's `hangar/cli.json`). Set to an empty path to skip.
    pub cli_config_path: Option<PathBuf>,
    /// File holding the 32-byte hex master key that encrypts secrets (default:
    /// `<data_dir>/master.key`, created on first start). `HANGAR_MASTER_KEY` wins.
    pub master_key_file: Option<PathBuf>,
    /// Whether the first start also reads `OPENAI_API_KEY`/`ANTHROPIC_API_KEY`.
    pub providers_from_env: bool,
    /// Runs for cron slots missed while no server ran: `one` (default) or `none`.
    pub schedule_catch_up: crate::schedule::CatchUp,
    /// Per API key and per team request rates of the REST API (0 disables).
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    /// LLM gateway budgets: tokens and dollars per run, model calls per
    /// second per run and per key, with per-team overrides (0 disables).
    pub llm_gateway: crate::llm::GatewayConfig,
    /// Named MCP servers (`--mcp NAME`), each `{command, args, env}` (stdio)
    /// or `{url, headers}` (streamable HTTP). Values may hold `${VAR}`, which
    /// the agent expands from its own environment (including the run's
    /// secrets), so secret values never need to be in this file. Readable by
    /// every API key and run token (server-wide, no team data).
    pub mcp_servers: std::collections::BTreeMap<String, hangar_protocol::McpServerConfig>,
    /// Accept `file://` URLs and local paths as environment repositories
    /// (tests only; workers must allow them too). Default false.
    pub allow_local_repositories: bool,
    /// Accept repository URLs whose host is a loopback, link-local or cloud
    /// metadata address (or `localhost`). Default false.
    pub allow_internal_repository_hosts: bool,
    /// The agent sidecar image sent to stock `oz-agent-worker` workers (their
    /// Docker and Kubernetes backends mount it at `/agent`); built by
    /// `scripts/sidecar-image`. Default `hangar-agent-sidecar:<version>`; an
    /// empty string sends none. Hangar workers never need it.
    pub sidecar_image: Option<String>,
    /// Prometheus metrics of this server on a listener of their own.
    pub metrics: MetricsConfig,
    /// Outbound webhooks: retries and which targets they may reach.
    pub webhooks: crate::webhooks::WebhookConfig,
}

/// `metrics:` in the server config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` (Prometheus text) on this address, apart from
    /// the API, e.g. `0.0.0.0:9465`. Unset: no listener, unless
    /// `OTEL_METRICS_EXPORTER` includes `prometheus` (then
    /// `OTEL_EXPORTER_PROMETHEUS_HOST`/`PORT`, default `localhost:9464`).
    pub listen: Option<SocketAddr>,
    /// A file holding the bearer token scrapes must send
    /// (`Authorization: Bearer …`). Unset: no token.
    pub bearer_token_file: Option<PathBuf>,
    /// How often the gauges read from the database (runs by state, the
    /// queue) are refreshed.
    #[serde(with = "humantime_serde_compat")]
    pub refresh_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            bearer_token_file: None,
            refresh_interval: Duration::from_secs(5),
        }
    }
}

impl MetricsConfig {
    /// Reads the bearer token file: trimmed, non-empty.
    pub fn bearer_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.bearer_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "metrics.bearer_token_file {} is empty; put the token scrapers send in it",
                path.display()
            )));
        }
        Ok(Some(token.to_owned()))
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: default_data_dir(),
            database_url: None,
            database_schema: None,
            public_url: None,
            providers: ProvidersConfig::default(),
            default_model: None,
            heartbeat_interval: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            worker_lost_timeout: Duration::from_secs(120),
            lease_expiry_policy: LeaseExpiryPolicy::Error,
            max_body_bytes: 1024 * 1024,
            cli_config_path: None,
            master_key_file: None,
            providers_from_env: true,
            schedule_catch_up: crate::schedule::CatchUp::One,
            rate_limit: crate::rate_limit::RateLimitConfig::default(),
            llm_gateway: crate::llm::GatewayConfig::default(),
            mcp_servers: std::collections::BTreeMap::new(),
            allow_local_repositories: false,
            allow_internal_repository_hosts: false,
            sidecar_image: None,
            metrics: MetricsConfig::default(),
            webhooks: crate::webhooks::WebhookConfig::default(),
        }
    }
}

/// `sidecar_image` when the config names none.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!("hangar-agent-sidecar:", env!("CARGO_PKG_VERSION"));

/// What an expired lease does to a started run (`lease_expiry_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseExpiryPolicy {
    /// The run ends `ERROR` with `failure_reason` `worker_lost`.
    #[default]
    Error,
    /// The run is queued again, once; a second lost worker ends it `ERROR`.
    Requeue,
}

/// Checks one `mcp_servers` entry: a usable name and exactly one transport.
fn validate_mcp_server(
    name: &str,
    server: &hangar_protocol::McpServerConfig,
) -> Result<(), ConfigError> {
    let bad = |why: &str| Err(ConfigError::Invalid(format!("mcp_servers.{name}: {why}")));
    if name.is_empty()
        || name.contains("__")
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("names use A-Z a-z 0-9 - _ . and no `__`");
    }
    if server.warp_id.is_some() {
        return bad("`warp_id` is not supported here; give `command` or `url`");
    }
    match (&server.command, &server.url) {
        (Some(_), Some(_)) => bad("give either `command` (stdio) or `url` (HTTP), not both"),
        (None, None) => bad("needs `command` (stdio) or `url` (streamable HTTP)"),
        (Some(_), None) if server.headers.is_some() => bad("`headers` apply to `url` servers"),
        (None, Some(_)) if server.args.is_some() || server.env.is_some() => {
            bad("`args` and `env` apply to `command` servers")
        }
        _ => Ok(()),
    }
}

/// `$XDG_DATA_HOME/hangar` (or `./.hangar` when no home is known).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("hangar"))
        .unwrap_or_else(|| PathBuf::from(".hangar"))
}

/// `$XDG_CONFIG_HOME/hangar/cli.json`: where the local CLI finds its server and key.
pub fn default_cli_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("hangar").join("cli.json"))
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What serde said, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServerConfig {
    /// The sidecar image stock workers get: the configured one, else the
    /// image `scripts/sidecar-image` tags for this version; none for `""`.
    pub fn sidecar_image(&self) -> Option<String> {
        match self.sidecar_image.as_deref() {
            None => Some(DEFAULT_SIDECAR_IMAGE.to_owned()),
            Some("") => None,
            Some(image) => Some(image.to_owned()),
        }
    }

    /// Loads a YAML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: ServerConfig =
            serde_norway::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relationships.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "heartbeat_interval must be above zero".into(),
            ));
        }
        if self.read_timeout <= self.heartbeat_interval {
            return Err(ConfigError::Invalid(format!(
                "read_timeout ({}) must be longer than heartbeat_interval ({})",
                humantime::format_duration(self.read_timeout),
                humantime::format_duration(self.heartbeat_interval)
            )));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        for (name, server) in &self.mcp_servers {
            validate_mcp_server(name, server)?;
        }
        self.llm_gateway.validate().map_err(ConfigError::Invalid)?;
        if let Some(image) = self.sidecar_image.as_deref().filter(|i| !i.is_empty()) {
            hangar_protocol::repository::check_image_ref(image).map_err(|e| {
                ConfigError::Invalid(format!(
                    "sidecar_image `{image}`: {e}; use a reference such as \
                     registry.example.com/hangar-agent-sidecar:1.0, or \"\" to send none"
                ))
            })?;
        }
        if self.metrics.refresh_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "metrics.refresh_interval must be at least 100ms".into(),
            ));
        }
        if self.metrics.bearer_token_file.is_some() && self.metrics.listen.is_none() {
            return Err(ConfigError::Invalid(
                "metrics.bearer_token_file is set but metrics.listen is not; \
                 set metrics.listen (e.g. 0.0.0.0:9465) to serve /metrics"
                    .into(),
            ));
        }
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("public_url `{url}`: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "public_url `{url}` must start with http:// or https://"
                )));
            }
        }
        Ok(())
    }

    /// The base URL workers and clients should use.
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = if bound.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else if bound.is_ipv6() {
                    format!("[{}]", bound.ip())
                } else {
                    bound.ip().to_string()
                };
                format!("http://{host}:{}", bound.port())
            }
        }
    }
}

/// `"30s"`-style durations in the config file.
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration like `30s` or `5m`: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_servers_need_one_transport_and_a_usable_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.yaml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            ServerConfig::from_file(&path).and_then(|c| c.validate().map(|()| c))
        };
        let ok = load(
            "mcp_servers:\n  gh: {command: gh-mcp, args: [stdio], env: {TOKEN: \"${GH_TOKEN}\"}}\n  docs: {url: https://d/mcp, headers: {A: \"${X}\"}}\n",
        )
        .unwrap();
        assert_eq!(
            ok.mcp_servers["gh"].env.as_ref().unwrap()["TOKEN"],
            "${GH_TOKEN}"
        );
        for (text, needle) in [
            (
                "mcp_servers:\n  both: {command: a, url: http://x}\n",
                "not both",
            ),
            ("mcp_servers:\n  none: {}\n", "needs `command`"),
            ("mcp_servers:\n  a__b: {command: a}\n", "mcp_servers.a__b"),
            (
                "mcp_servers:\n  h: {command: a, headers: {A: b}}\n",
                "`headers`",
            ),
            ("mcp_servers:\n  t: {command: a, typo: 1}\n", "typo"),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn llm_gateway_budgets_load_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.yaml");
        std::fs::write(
            &path,
            "llm_gateway:\n  max_tokens_per_run: 100000\n  max_cost_usd_per_run: 2.5\n  \
             requests_per_second: 5\n  teams:\n    research: {max_cost_usd_per_run: 50}\n",
        )
        .unwrap();
        let c = ServerConfig::from_file(&path).unwrap();
        assert_eq!(c.llm_gateway.max_tokens_per_run, 100_000);
        assert_eq!(c.llm_gateway.max_cost_usd_per_run, 2.5);
        assert_eq!(
            c.llm_gateway.teams["research"].max_cost_usd_per_run,
            Some(50.0)
        );
        assert_eq!(ServerConfig::default().llm_gateway.max_tokens_per_run, 0);
        for (text, needle) in [
            (
                "llm_gateway:\n  max_cost_usd_per_run: -1\n",
                "max_cost_usd_per_run",
            ),
            (
                "llm_gateway:\n  teams:\n    t: {max_cost_usd_per_run: .nan}\n",
                "llm_gateway.teams.t.max_cost_usd_per_run",
            ),
            ("llm_gateway:\n  max_tokens: 5\n", "max_tokens"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = ServerConfig::from_file(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.yaml");
        std::fs::write(&path, "listen: 127.0.0.1:9000\nlisten_port: 3\n").unwrap();
        let err = ServerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn durations_parse_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.yaml");
        std::fs::write(&path, "heartbeat_interval: 2s\nread_timeout: 6s\n").unwrap();
        let c = ServerConfig::from_file(&path).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        std::fs::write(&path, "heartbeat_interval: 10s\nread_timeout: 5s\n").unwrap();
        let err = ServerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("read_timeout"), "{err}");
        std::fs::write(&path, "heartbeat_interval: soon\n").unwrap();
        let err = ServerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
    }
}
