//! The state every handler shares: the server's services, each owned by
//! the module of its concept, plus what this process is among the replicas.

use crate::ServerConfig;
use crate::dispatch::Dispatcher;
use crate::secrets::SecretBox;
use hangar_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared state of every handler (cheap to clone).
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<AppInner>);

/// The services [`AppState`] holds. The run service is
/// [`AppState::runs`](crate::runs::Runs).
pub struct AppInner {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Dispatch: the queue, worker connections and leases.
    pub dispatcher: Arc<Dispatcher>,
    /// Agent sessions, share grants and public-link streams.
    pub sessions: crate::sessions::Sessions,
    /// Model providers, the default model and the gateway's budgets.
    pub llm: crate::llm::Llm,
    /// The dashboard's sign-in: login backoff and single-use links.
    pub web: crate::web::SignIn,
    /// Encrypts secret values at rest.
    pub secrets: SecretBox,
    /// Effective configuration.
    pub config: ServerConfig,
    /// Base URL for links and tasks.
    pub public_url: String,
    /// This process: its tasks, its shutdown, its place among the replicas.
    pub runtime: Runtime,
}

/// This process as a server: what it runs, how it stops, and who it is
/// among the replicas.
pub struct Runtime {
    /// Fires on shutdown; long-lived connections watch it.
    pub shutdown: CancellationToken,
    /// Every task the server starts (supervisors, the HTTP server, viewer
    /// pumps); [`Server::shutdown`](crate::Server::shutdown) waits for them,
    /// with a deadline.
    pub tasks: TaskTracker,
    /// This process's id among the replicas (worker registry entries name it).
    pub replica_id: String,
    /// Signals to the other replicas (PostgreSQL); `None` on SQLite.
    pub notifier: Option<Arc<dyn hangar_store::Notifier>>,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
