//! From the worker's configuration to its backend: the one place that lists
//! the backends. Each backend's `XConfig` implements [`BackendFactory`], so
//! the worker core never sees a backend's own settings.

use super::command::CommandConfig;
use super::direct::DirectConfig;
use super::docker::DockerConfig;
use super::kubernetes::KubernetesConfig;
use super::{Backend, BackendError};
use crate::config::{BackendKind, WorkerConfig};
use crate::worker::WorkerError;
use std::path::PathBuf;
use std::sync::Arc;

/// A backend's settings (`XConfig`) and how to build the backend (`X`) from them.
pub trait BackendFactory: Sized {
    /// The `--backend` this is.
    const KIND: BackendKind;
    /// The backend built.
    type Backend: Backend;

    /// Reads this backend's settings from the worker's configuration.
    fn from_worker(config: &WorkerConfig) -> Result<Self, WorkerError>;

    /// Where undelivered session spools are kept, for the spool backlog
    /// metric; `None` when the backend keeps none on this host.
    fn spool_root(&self) -> Option<PathBuf> {
        None
    }

    /// Checks the settings and builds the backend; nothing runs yet.
    fn build(self) -> Result<Self::Backend, BackendError>;
}

/// A built backend and where its spools are.
pub(crate) struct Built {
    pub backend: Arc<dyn Backend>,
    pub spool_root: Option<PathBuf>,
}

/// Builds the backend `config.backend` names.
pub(crate) fn build(config: &WorkerConfig) -> Result<Built, WorkerError> {
    match config.backend {
        BackendKind::Direct => make::<DirectConfig>(config),
        BackendKind::Docker => make::<DockerConfig>(config),
        BackendKind::Command => make::<CommandConfig>(config),
        BackendKind::Kubernetes => make::<KubernetesConfig>(config),
    }
}

fn make<F: BackendFactory>(config: &WorkerConfig) -> Result<Built, WorkerError> {
    let settings = F::from_worker(config)?;
    let spool_root = settings.spool_root();
    let backend = settings
        .build()
        .map_err(|source| backend_error::<F>(source))?;
    Ok(Built {
        backend: Arc::new(backend),
        spool_root,
    })
}

/// `source` as the error of backend `F` failing to start.
pub(crate) fn backend_error<F: BackendFactory>(source: BackendError) -> WorkerError {
    WorkerError::Backend {
        backend: F::KIND,
        source,
    }
}

/// The binary launched for tasks: `--agent-path`, else this executable.
pub(crate) fn agent_path(config: &WorkerConfig) -> Result<PathBuf, WorkerError> {
    match &config.agent_path {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().map_err(WorkerError::AgentPath),
    }
}
