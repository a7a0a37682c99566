//! Hangar's control plane.
//!
//! The module tree follows the life of a run:
//!
//! 1. **Triggers** ask for a run: the REST API ([`api`], `/api/v1`), the
//!    [`schedule`]r, and the dashboard ([`web`]), which acts through the API.
//! 2. **[`runs`]** holds the rules every trigger goes through: a request is
//!    validated, its model and environment resolved, the run stored and
//!    handed to dispatch; cancelling and continuing (follow-ups) live there
//!    too.
//! 3. **[`dispatch`]** queues runs and places each on a connected worker: the
//!    [`dispatch::Dispatcher`], the worker WebSocket
//!    ([`dispatch::worker_socket`]), execution leases and the worker registry
//!    every replica shares ([`dispatch::presence`]).
//! 4. **[`sessions`]**: the agent streams its session into the hub
//!    ([`sessions::hub`]); viewers watch it live ([`sessions::viewers`]) when
//!    [`sessions::sharing`] lets them.
//! 5. **[`llm`]**: the agent's model calls go through the LLM gateway, which
//!    holds the provider keys, meters every call and enforces budgets.
//!
//! Around them: credentials ([`auth`]), errors as problem+json ([`error`]),
//! configuration ([`config`]), secrets at rest ([`secrets`]), rate limits
//! ([`rate_limit`]), metrics ([`metrics`]) and the signals between replicas
//! on PostgreSQL ([`replicas`]). Storage comes from `hangar-store`, model
//! providers from `hangar-llm`; this crate never depends on the worker, the
//! agent or the CLI.
//!
//! Entry point: [`Server::start`] with a [`ServerConfig`].

pub mod api;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod llm;
pub mod metrics;
pub mod rate_limit;
pub mod replicas;
pub mod runs;
pub mod schedule;
pub mod secrets;
pub mod sessions;
pub mod web;

pub use config::{ConfigError, MetricsConfig, ServerConfig};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dispatch::Dispatcher;
use error::{ApiError, PROBLEM_JSON, REQUEST_PATH};
use hangar_llm::ProviderRegistry;
use hangar_store::{NewUser, SqliteStore, Store};
use serde::Serialize;
use sessions::hub::SessionHub;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// What [`AppState`] holds.
pub struct AppInner {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Dispatcher.
    pub dispatcher: Arc<Dispatcher>,
    /// Agent sessions.
    pub sessions: Arc<SessionHub>,
    /// Grant changes for open session streams.
    pub shares: Arc<sessions::sharing::ShareHub>,
    /// Open public-link streams, per link and per address.
    pub public_streams: Arc<rate_limit::StreamSlots>,
    /// Backoff for failed dashboard sign-ins.
    pub logins: Arc<web::auth::LoginThrottle>,
    /// Single-use sign-in links (`hangar up`).
    pub sign_in_links: Arc<web::auth::SignInLinks>,
    /// Model providers.
    pub llm: Arc<ProviderRegistry>,
    /// Model for runs that name none.
    pub default_model: Option<String>,
    /// Signals to the other replicas (PostgreSQL); `None` on SQLite.
    pub notifier: Option<Arc<dyn hangar_store::Notifier>>,
    /// Gateway budgets and rate buckets (`llm_gateway:`).
    pub budgets: Arc<llm::GatewayBudgets>,
    /// Encrypts secret values at rest.
    pub secrets: secrets::SecretBox,
    /// Effective configuration.
    pub config: ServerConfig,
    /// Base URL for links and tasks.
    pub public_url: String,
    /// Fires on shutdown; long-lived connections watch it.
    pub shutdown: CancellationToken,
    /// Every task the server starts (supervisors, the HTTP server, viewer
    /// pumps); [`Server::shutdown`] waits for them, with a deadline.
    pub tasks: TaskTracker,
    /// This process's id among the replicas (worker registry entries name it).
    pub replica_id: String,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be prepared.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("cannot open the database: {0}")]
    Store(#[from] hangar_store::StoreError),
    /// A provider is misconfigured.
    #[error("model provider configuration: {0}")]
    Providers(#[from] hangar_llm::LlmError),
    /// The listen address is unusable.
    #[error(
        "cannot listen on {addr}: {source} (is another server running there? choose another with --listen)"
    )]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Credentials created on the first start.
#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    /// Team created.
    pub team: String,
    /// Admin API key (shown once).
    pub api_key: String,
    /// Where the CLI credentials were written, if anywhere.
    pub cli_config_path: Option<PathBuf>,
}

/// The file the local CLI reads its server and key from.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CliCredentials {
    /// Server base URL.
    pub server_url: String,
    /// API key.
    pub api_key: String,
}

/// How long [`Server::shutdown`] waits for connections and supervisors.
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    tasks: TaskTracker,
    bootstrap: Option<Bootstrap>,
}

/// Turns framework rejections (plain-text 4xx from extractors, 404/405 from
/// routing) into problem+json, and records the request path for `instance`.
async fn problem_layer(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let resp = REQUEST_PATH.scope(path.clone(), next.run(req)).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with(PROBLEM_JSON)
                || ct.starts_with("application/json")
                || ct.starts_with("text/html")
        });
    if is_problem {
        return resp;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let err = match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(format!(
            "no route for `{path}`; the API lives under /api/v1"
        )),
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::MethodNotAllowed(format!("`{path}` does not support this method"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(
            "the request body is larger than the server's limit (`max_body_bytes`)".to_owned(),
        ),
        s if s.is_server_error() => ApiError::Internal(if text.is_empty() {
            "internal error".into()
        } else {
            text
        }),
        _ => ApiError::BadRequest(if text.is_empty() {
            status.to_string()
        } else {
            text
        }),
    };
    let mut problem = err.problem();
    problem.instance = Some(path);
    error::problem_response(&problem)
}

async fn fallback() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

async fn bootstrap(
    store: &dyn Store,
    config: &ServerConfig,
    url: &str,
) -> Result<Option<Bootstrap>, ServerError> {
    // Replicas starting together on one fresh database: one bootstraps, the
    // others wait for it here and then find its team.
    let lock = store.bootstrap_lock().await?;
    if store.team_count().await? > 0 {
        lock.release().await?;
        return Ok(None);
    }
    let created = create_admin(store).await;
    lock.release().await?;
    let (team, key) = created?;
    let path = match &config.cli_config_path {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p.clone()),
        None => config::default_cli_config_path(),
    };
    let written = match path {
        Some(p) => match write_cli_credentials(&p, url, &key) {
            Ok(()) => Some(p),
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "could not save CLI credentials");
                None
            }
        },
        None => None,
    };
    Ok(Some(Bootstrap {
        team: team.name,
        api_key: key,
        cli_config_path: written,
    }))
}

/// The bootstrap team, its admin user and the admin's key.
async fn create_admin(
    store: &dyn Store,
) -> Result<(hangar_store::TeamRecord, String), ServerError> {
    let team = store.create_team(&new_uid(), "default").await?;
    let user = store
        .create_user(NewUser {
            uid: new_uid(),
            team_id: team.id,
            email: None,
            display_name: "admin".to_owned(),
            role: "admin".to_owned(),
        })
        .await?;
    let (_, key) = auth::issue_api_key(store, team.id, Some(user.id), "bootstrap admin key", None)
        .await
        .map_err(|e| ServerError::Other(format!("cannot create the admin key: {e}")))?;
    Ok((team, key))
}

/// Writes `{server_url, api_key}` with mode 0600.
pub fn write_cli_credentials(path: &std::path::Path, url: &str, key: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let body = serde_json::to_vec_pretty(&CliCredentials {
        server_url: url.to_owned(),
        api_key: key.to_owned(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A fresh time-ordered public id.
fn new_uid() -> String {
    hangar_protocol::RunId::generate().0
}

impl Server {
    /// Opens the store, bootstraps on first start, binds and serves.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        create_private_dir(&config.data_dir)?;
        let (store, notifier) = open_store(&config).await?;
        let master_key_file = config
            .master_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("master.key"));
        let secret_box = secrets::SecretBox::load(&master_key_file)
            .map_err(|e| ServerError::Other(format!("secrets master key: {e}")))?;
        let llm = llm::build_registry(&config.providers, config.providers_from_env)?;
        let default_model = config.default_model.clone().or_else(|| llm.default_model());
        if let Some(m) = &default_model {
            llm.resolve(m)
                .map_err(|e| ServerError::Other(format!("default_model: {e}")))?;
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        let public_url = config.public_url_for(addr);
        let bootstrap = bootstrap(store.as_ref(), &config, &public_url).await?;

        let shutdown = CancellationToken::new();
        let replica_id = new_uid();
        let sessions = SessionHub::new();
        // No replica's memory decides the fate of a run: leases in the store
        // do, so starting this replica touches no other replica's runs.
        let dispatcher = Dispatcher::new(
            store.clone(),
            public_url.clone(),
            &config,
            secret_box.clone(),
            replica_id.clone(),
            sessions.clone(),
        );
        // While no replica was up no worker could renew its leases: each gets
        // a full lease from now to reconnect, so a server restart never
        // costs a run. Workers that are really gone expire a lease later.
        let until = hangar_protocol::Timestamp::now().unix_millis()
            + i64::try_from(config.worker_lost_timeout.as_millis()).unwrap_or(i64::MAX);
        let extended = store.extend_leases(until).await?;
        if extended > 0 {
            tracing::info!(
                executions = extended,
                lease = ?config.worker_lost_timeout,
                "start-up: live execution leases extended to give their workers time to reconnect"
            );
        }
        let state = AppState(Arc::new(AppInner {
            store,
            dispatcher: dispatcher.clone(),
            sessions,
            shares: Arc::new(sessions::sharing::ShareHub::default()),
            public_streams: Arc::new(rate_limit::StreamSlots::default()),
            logins: Arc::new(web::auth::LoginThrottle::default()),
            sign_in_links: Arc::new(web::auth::SignInLinks::default()),
            llm: Arc::new(llm),
            default_model,
            notifier: notifier.clone(),
            budgets: Arc::new(llm::GatewayBudgets::new(config.llm_gateway.clone())),
            secrets: secret_box.clone(),
            config: config.clone(),
            public_url,
            shutdown: shutdown.clone(),
            tasks: TaskTracker::new(),
            replica_id,
        }));

        let app = Router::new()
            .merge(web::dashboard::routes())
            .route("/healthz", get(api::health::healthz))
            .route("/readyz", get(api::health::readyz))
            .nest(
                "/api/v1",
                api::routes().layer(axum::middleware::from_fn_with_state(
                    rate_limit::RateLimiter::new(&config.rate_limit, state.store.clone()),
                    rate_limit::layer,
                )),
            )
            .fallback(fallback)
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .layer(axum::middleware::from_fn(web::auth::csrf_layer))
            .layer(axum::middleware::from_fn(problem_layer))
            .layer(axum::middleware::from_fn(metrics::http_layer))
            .with_state(state.clone());

        let tasks = state.tasks.clone();
        tasks.spawn(dispatcher.run(shutdown.clone()));
        if let Some(notifier) = notifier {
            tasks.spawn(replicas::listen(state.clone(), notifier, shutdown.clone()));
        }
        tasks.spawn(schedule::Scheduler::for_server(&state).run(shutdown.clone()));
        tasks.spawn(dispatch::presence::run(state.clone(), shutdown.clone()));
        tasks.spawn(metrics::refresh(
            state.clone(),
            config.metrics.refresh_interval,
            shutdown.clone(),
        ));
        let serve_shutdown = shutdown.clone();
        tasks.spawn(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { serve_shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server stopped with an error");
            }
        });
        tasks.close();
        tracing::info!(%addr, "hangar server listening");
        Ok(Server {
            addr,
            state,
            tasks,
            bootstrap,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients and workers use.
    pub fn url(&self) -> &str {
        &self.state.public_url
    }

    /// Credentials created by this start, if it was the first.
    pub fn bootstrap(&self) -> Option<&Bootstrap> {
        self.bootstrap.as_ref()
    }

    /// Handler state (tests and in-process embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Issues a fresh API key for an in-process worker (`hangar up`),
    /// revoking earlier keys of the same name so they do not pile up.
    pub async fn issue_local_key(&self, name: &str) -> Result<String, ServerError> {
        let store = self.state.store.as_ref();
        let now = hangar_protocol::Timestamp::now().unix_millis();
        // The first team is the bootstrap team.
        let team = store.team(1).await?;
        for key in store.list_api_keys(team.id).await? {
            if key.name == name && key.revoked_at.is_none() {
                store.revoke_api_key(team.id, &key.id, now).await?;
            }
        }
        let (_, secret) = auth::issue_api_key(store, team.id, None, name, None)
            .await
            .map_err(|e| ServerError::Other(e.to_string()))?;
        Ok(secret)
    }

    /// A single-use link, valid for 15 minutes, that signs into the
    /// dashboard as the bootstrap team's first admin (`hangar up` prints it
    /// for whoever started it); the dashboard then asks for a password.
    pub async fn sign_in_link(&self) -> Result<String, ServerError> {
        let store = self.state.store.as_ref();
        let team = store.team(1).await?;
        let admin = store
            .list_users(team.id)
            .await?
            .into_iter()
            .find(|u| u.role == "admin" && !u.disabled)
            .ok_or_else(|| ServerError::Other("the first team has no active admin".into()))?;
        let token = self.state.sign_in_links.mint(admin.id);
        Ok(format!("{}/login/link/{token}", self.state.public_url))
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Stops accepting work, closes connections and the store. Waits for
    /// the server's tasks at most [`SHUTDOWN_DEADLINE`], then says how many
    /// were still running and goes on (they end with the process).
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_DEADLINE).await;
    }

    /// [`Server::shutdown`] with another deadline.
    pub async fn shutdown_within(self, deadline: std::time::Duration) {
        self.state.shutdown.cancel();
        if tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = self.tasks.len(),
                ?deadline,
                "shutdown deadline passed; stopping without waiting for the rest"
            );
        }
        // Streams the shutdown dropped are metered before the store closes.
        self.state.budgets.tasks.close();
        self.state.budgets.tasks.wait().await;
        self.state.store.close().await;
    }

    /// Waits until the shutdown token fires, then shuts down.
    pub async fn run_until_stopped(self) {
        self.state.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// Opens the configured database: PostgreSQL when `database_url` says so
/// (with the cross-replica notifier), else SQLite in the data directory.
async fn open_store(
    config: &ServerConfig,
) -> Result<(Arc<dyn Store>, Option<Arc<dyn hangar_store::Notifier>>), ServerError> {
    let Some(url) = &config.database_url else {
        let store = SqliteStore::open(&config.data_dir.join("hangar.db")).await?;
        return Ok((Arc::new(store), None));
    };
    if let Some(schema) = &config.database_schema {
        let mut pg = hangar_store::PostgresConfig::new(url.clone());
        pg.schema = Some(schema.clone());
        let store = Arc::new(hangar_store::PostgresStore::connect_with(&pg).await?);
        return Ok((store.clone(), Some(store)));
    }
    let opened = hangar_store::open_with_notifier(url).await?;
    Ok((opened.store, opened.notifier))
}

fn create_private_dir(path: &std::path::Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| ServerError::DataDir {
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(err)?;
    }
    if !path.is_dir() {
        return Err(err(std::io::Error::other("not a directory")));
    }
    Ok(())
}
