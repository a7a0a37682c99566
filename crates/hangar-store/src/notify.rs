//! Signals between server replicas that share one database.
//!
//! A replica keeps its workers' connections in memory, so a change made
//! through another replica must reach it: a run created (or sent back to the
//! queue) through replica A has to wake the dispatcher of replica B, where a
//! worker with room may be connected; a run cancelled through B has to reach
//! the worker connected to A.
//!
//! Signals are hints, never the source of truth: the receiver re-reads the
//! store (`queued_runs`, `run_any_team`, `execution`), and every state change
//! stays a fenced conditional update, so a duplicate or stale signal is
//! harmless. A listener that may have missed signals (its connection dropped)
//! yields [`Signal::Resync`]: re-scan everything.
//!
//! PostgreSQL implements [`Notifier`] with `LISTEN/NOTIFY` on
//! [`DISPATCH_CHANNEL`], [`CANCEL_CHANNEL`], [`SHARES_CHANNEL`] and [`FOLLOWUP_CHANNEL`]; the database itself emits the
//! signals (triggers), so every write path signals without the caller doing
//! anything. SQLite serves a single replica and needs no notifier.

use crate::StoreResult;
use async_trait::async_trait;
use hangar_protocol::{ExecutionId, RunId};

/// Channel of [`Signal::Dispatch`].
pub const DISPATCH_CHANNEL: &str = "hangar_dispatch";
/// Channel of [`Signal::Cancel`].
pub const CANCEL_CHANNEL: &str = "hangar_cancel";
/// Channel of [`Signal::SharesChanged`].
pub const SHARES_CHANNEL: &str = "hangar_shares";
/// Channel of [`Signal::Followup`].
pub const FOLLOWUP_CHANNEL: &str = "hangar_followup";

/// Something another replica (or this one) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Dispatch work may be waiting: a run was created or sent back to the
    /// queue, or an execution ended and freed a slot on its worker.
    Dispatch {
        /// The run concerned.
        run_id: Option<RunId>,
        /// The execution that ended, when a slot was freed.
        execution_id: Option<ExecutionId>,
        /// Whether this replica made the change (it has already acted on it).
        local: bool,
    },
    /// A run was cancelled: whichever replica holds the connection of the
    /// worker running `execution_id` must forward the cancellation.
    Cancel {
        /// The cancelled run.
        run_id: RunId,
        /// Its current execution, if it had one.
        execution_id: Option<ExecutionId>,
        /// Whether this replica made the change.
        local: bool,
    },
    /// A run's session grants changed (created, changed or revoked): open
    /// session streams of that run re-check their access.
    SharesChanged {
        /// The run.
        run_id: RunId,
        /// Whether this replica made the change.
        local: bool,
    },
    /// A follow-up was stored for a live execution: whichever replica holds
    /// that execution's agent socket delivers it.
    Followup {
        /// The run.
        run_id: RunId,
        /// The execution whose agent gets it.
        execution_id: ExecutionId,
        /// Whether this replica made the change.
        local: bool,
    },
    /// Signals may have been lost (the listening connection was re-established):
    /// re-scan the queue and the live executions.
    Resync,
}

/// Sends and receives [`Signal`]s across replicas.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// Sends a dispatch signal explicitly (the store already signals every run
    /// creation, requeue and execution end; this is for anything else that makes
    /// dispatch possible).
    async fn notify_dispatch(&self, run_id: Option<&RunId>) -> StoreResult<()>;
    /// Sends a cancel signal explicitly, so the replica holding its worker
    /// or agent stops `execution_id` (the store signals every run that
    /// becomes `CANCELLED`; this is for runs the server ended in another
    /// state whose execution must stop too, such as a run over its budget).
    async fn notify_cancel(&self, run_id: &RunId, execution_id: &ExecutionId) -> StoreResult<()>;
    /// Starts listening. Signals committed after this returns are delivered.
    async fn listen(&self) -> StoreResult<Box<dyn SignalListener>>;
}

/// A subscription to [`Signal`]s.
#[async_trait]
pub trait SignalListener: Send {
    /// The next signal; waits until one arrives. An error means the listener
    /// could not reconnect: retry later (with backoff) and treat the retry as
    /// [`Signal::Resync`].
    async fn recv(&mut self) -> StoreResult<Signal>;
}
