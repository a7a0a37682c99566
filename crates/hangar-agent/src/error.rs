//! Errors that stop the agent runtime itself (as opposed to a run that fails).

use crate::event::SinkError;
use std::path::PathBuf;

/// Why the agent could not carry a run to an outcome. A run whose model or
/// tools fail is not an error: it ends with [`RunOutcome::Failed`](crate::RunOutcome).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The run could not be fetched from the server.
    #[error("cannot fetch run {run_id}: {source}")]
    FetchRun {
        /// The run asked for.
        run_id: String,
        /// Cause.
        #[source]
        source: hangar_client::ClientError,
    },
    /// The server URL or token is not usable.
    #[error("invalid client configuration: {0}")]
    Client(#[source] hangar_client::ClientError),
    /// Neither the run nor the caller names a model.
    #[error("run {0} names no model")]
    NoModel(String),
    /// The model provider could not be set up.
    #[error("cannot set up the model provider: {0}")]
    Provider(#[source] hangar_llm::LlmError),
    /// The session spool could not be opened.
    #[error("cannot open the session spool {}: {source}", path.display())]
    Spool {
        /// Spool file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An event could not be recorded.
    #[error(transparent)]
    Sink(#[from] SinkError),
}
