//! The server process: [`Server::start`] opens the store, bootstraps on the
//! first start, builds the services and the router, starts the supervisors
//! (dispatch, replicas, scheduler, presence, metrics) and serves;
//! [`Server::shutdown`] stops them within a deadline.

use crate::app::{AppInner, AppState, Runtime};
use crate::bootstrap::{Bootstrap, bootstrap, new_uid};
use crate::config::{ConfigError, ServerConfig};
use crate::dispatch::Dispatcher;
use crate::error::{self, ApiError, PROBLEM_JSON, REQUEST_PATH};
use crate::sessions::hub::SessionHub;
use crate::{
    api, auth, dispatch, integrations, llm, metrics, rate_limit, replicas, schedule, secrets,
    sessions, web, webhooks,
};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hangar_store::{SqliteStore, Store};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// How long [`Server::shutdown`] waits for connections and supervisors.
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: AppState,
    tasks: TaskTracker,
    bootstrap: Option<Bootstrap>,
}

/// Holds a response until what its handler read is durable
/// ([`hangar_store::Store::settled`]): on SQLite a read can see a commit a
/// moment before its fsync, and no answer may show what a power loss could
/// take back. Usually nothing is pending and this costs two atomic loads.
async fn settled_layer(State(store): State<Arc<dyn Store>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    store.settled().await;
    resp
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
        let llm = open_llm(&config)?;
        let (listener, addr) = bind(&config).await?;
        let public_url = config.public_url_for(addr);
        let bootstrap = bootstrap(store.as_ref(), &config, &public_url).await?;

        let replica_id = new_uid();
        let hub = SessionHub::new();
        // No replica's memory decides the fate of a run: leases in the store
        // do, so starting this replica touches no other replica's runs.
        let dispatcher = Dispatcher::new(
            store.clone(),
            public_url.clone(),
            &config,
            secret_box.clone(),
            replica_id.clone(),
            hub.clone(),
        );
        extend_leases(store.as_ref(), &config).await?;
        let state = AppState(Arc::new(AppInner {
            store,
            dispatcher,
            sessions: sessions::Sessions {
                hub,
                shares: Arc::new(sessions::sharing::ShareHub::default()),
                public_streams: Arc::new(rate_limit::StreamSlots::default()),
                feeds: sessions::feed::Feeds::default(),
            },
            llm,
            web: web::SignIn::default(),
            secrets: secret_box,
            config,
            public_url,
            runtime: Runtime {
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                replica_id,
                notifier,
            },
        }));
        let tasks = supervise(&state, listener);
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
        let token = self.state.web.sign_in_links.mint(admin.id);
        Ok(format!("{}/login/link/{token}", self.state.public_url))
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.runtime.shutdown.clone()
    }

    /// Stops accepting work, closes connections and the store. Waits for
    /// the server's tasks at most [`SHUTDOWN_DEADLINE`], then says how many
    /// were still running and goes on (they end with the process).
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_DEADLINE).await;
    }

    /// [`Server::shutdown`] with another deadline.
    pub async fn shutdown_within(self, deadline: std::time::Duration) {
        self.state.runtime.shutdown.cancel();
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
        self.state.llm.budgets.tasks.close();
        self.state.llm.budgets.tasks.wait().await;
        self.state.store.close().await;
    }

    /// Waits until the shutdown token fires, then shuts down.
    pub async fn run_until_stopped(self) {
        self.state.runtime.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// The model providers, and the default model (checked now, so a typo
/// stops the start rather than every run).
fn open_llm(config: &ServerConfig) -> Result<llm::Llm, ServerError> {
    let providers = llm::build_registry(&config.providers, config.providers_from_env)?;
    let default_model = config
        .default_model
        .clone()
        .or_else(|| providers.default_model());
    if let Some(m) = &default_model {
        providers
            .resolve(m)
            .map_err(|e| ServerError::Other(format!("default_model: {e}")))?;
    }
    Ok(llm::Llm {
        providers: Arc::new(providers),
        default_model,
        budgets: Arc::new(llm::GatewayBudgets::new(config.llm_gateway.clone())),
    })
}

async fn bind(config: &ServerConfig) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let err = |source| ServerError::Listen {
        addr: config.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((listener, addr))
}

/// While no replica was up no worker could renew its leases: each gets a
/// full lease from now to reconnect, so a server restart never costs a run.
/// Workers that are really gone expire a lease later.
async fn extend_leases(store: &dyn Store, config: &ServerConfig) -> Result<(), ServerError> {
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
    Ok(())
}

/// The whole HTTP surface: the dashboard, health checks, `/api/v1` (rate
/// limited) and the layers every request goes through.
fn router(state: &AppState) -> Router {
    let config = &state.config;
    Router::new()
        .merge(web::dashboard::routes())
        .route("/healthz", get(api::health::healthz))
        .route("/readyz", get(api::health::readyz))
        .route(
            "/integrations/{kind}/{id}/events",
            axum::routing::post(integrations::webhook::events),
        )
        .nest(
            "/api/v1",
            api::routes().layer(axum::middleware::from_fn_with_state(
                rate_limit::RateLimiter::new(&config.rate_limit, state.store.clone()),
                rate_limit::layer,
            )),
        )
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.store.clone(),
            settled_layer,
        ))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn(web::auth::csrf_layer))
        .layer(axum::middleware::from_fn(problem_layer))
        .layer(axum::middleware::from_fn(metrics::http_layer))
        .with_state(state.clone())
}

/// Starts the supervisors (dispatch, replica signals, scheduler, worker
/// presence, metrics) and the HTTP server on the server's task tracker,
/// all stopped by its shutdown token.
fn supervise(state: &AppState, listener: tokio::net::TcpListener) -> TaskTracker {
    let app = router(state);
    let shutdown = state.runtime.shutdown.clone();
    let tasks = state.runtime.tasks.clone();
    tasks.spawn(state.dispatcher.clone().run(shutdown.clone()));
    if let Some(notifier) = state.runtime.notifier.clone() {
        tasks.spawn(replicas::listen(state.clone(), notifier, shutdown.clone()));
    }
    tasks.spawn(schedule::Scheduler::for_server(state).run(shutdown.clone()));
    tasks.spawn(dispatch::presence::run(state.clone(), shutdown.clone()));
    tasks.spawn(dispatch::worker_socket::sweep(
        state.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(webhooks::run(state.clone(), shutdown.clone()));
    tasks.spawn(crate::integrations::replies::run(
        state.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(metrics::refresh(
        state.clone(),
        state.config.metrics.refresh_interval,
        shutdown.clone(),
    ));
    tasks.spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped with an error");
        }
    });
    tasks.close();
    tasks
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
