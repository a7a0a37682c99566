//! The worker's event loop for one `run`: assignments and cancellations from
//! the connection, drain and hard shutdown, kept (idle) sandboxes, and
//! self-fencing.

use super::{
    Deregister, Entry, HARD_SHUTDOWN_MARGIN, MAX_IDLE_SANDBOXES_UNLIMITED, REJECT_AT_CAPACITY,
    REJECT_DRAINING, Shared, Worker, WorkerError, lock,
};
use crate::backends::{Execution, TaskSpec};
use crate::connection::Outbox;
use crate::task::{self, Parked, StopCause, TaskControl, TaskRun};
use hangar_protocol::worker::{
    ServerToWorker, TaskAssignment, TaskCancellation, TaskClaimed, TaskRejected, WorkerToServer,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Limit for flushing the outbox and closing the socket at the end.
const CLOSE_DEADLINE: Duration = Duration::from_secs(15);
/// How often the core checks whether it must self-fence.
const FENCE_CHECK: Duration = Duration::from_millis(500);

/// The state of one `run`.
pub(super) struct Core<'a> {
    worker: &'a Worker,
    registry: Shared,
    outbox: Outbox,
    inbox: mpsc::Receiver<ServerToWorker>,
    /// Every running task; nothing is spawned outside it.
    tasks: JoinSet<()>,
    draining: bool,
    /// Sandboxes kept after their run ended, by run id (`--idle-on-complete`).
    /// They take no task slot; at most [`Core::max_idle`] are kept.
    idle: BTreeMap<String, Idle>,
    /// How long a sandbox is kept; `None` = never.
    idle_for: Option<Duration>,
    parked_tx: mpsc::UnboundedSender<Parked>,
    parked_rx: mpsc::UnboundedReceiver<Parked>,
    /// When the server was last heard from.
    heard: crate::connection::LastHeard,
    /// Running tasks were stopped for being cut off; cleared when heard again.
    fenced: bool,
}

/// One kept sandbox.
struct Idle {
    execution_id: String,
    execution: Box<dyn Execution>,
    until: Instant,
}

impl<'a> Core<'a> {
    pub(super) fn new(
        worker: &'a Worker,
        registry: Shared,
        outbox: Outbox,
        inbox: mpsc::Receiver<ServerToWorker>,
        tasks: JoinSet<()>,
        heard: crate::connection::LastHeard,
    ) -> Self {
        let (parked_tx, parked_rx) = mpsc::unbounded_channel();
        let idle_for = worker
            .config
            .idle_on_complete
            .as_deref()
            .and_then(|d| crate::config::parse_duration(d).ok())
            .filter(|d| !d.is_zero());
        Core {
            worker,
            registry,
            outbox,
            inbox,
            tasks,
            draining: false,
            idle: BTreeMap::new(),
            idle_for,
            parked_tx,
            parked_rx,
            heard,
            fenced: false,
        }
    }
}

impl Core<'_> {
    pub(super) async fn run_loop(
        &mut self,
        shutdown: &CancellationToken,
        hard_shutdown: &CancellationToken,
        mut conn: tokio::task::JoinHandle<()>,
        close: &CancellationToken,
    ) -> Result<(), WorkerError> {
        let mut hard_deadline: Option<Instant> = None;
        let mut conn_result: Option<Result<(), tokio::task::JoinError>> = None;
        let mut inbox_open = true;
        let mut fence_check = tokio::time::interval(FENCE_CHECK);
        fence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.draining && self.tasks.is_empty() {
                break;
            }
            crate::metrics::get().idle_sandboxes(self.idle.len());
            let idle_expiry = self.next_idle_expiry();
            tokio::select! {
                biased;
                _ = hard_shutdown.cancelled(), if hard_deadline.is_none() => {
                    hard_deadline = Some(Instant::now() + self.worker.config.kill_grace + HARD_SHUTDOWN_MARGIN);
                    self.start_drain().await;
                    self.stop_all(StopCause::Shutdown);
                }
                _ = shutdown.cancelled(), if !self.draining => self.start_drain().await,
                Some(joined) = self.tasks.join_next() => {
                    if let Err(e) = joined {
                        tracing::error!(worker_id = %self.worker.config.worker_id, error = %e, "a task panicked; its report is lost");
                    }
                }
                // Before the inbox: a follow-up assignment must find the
                // sandbox its previous execution parked just before reporting.
                Some(parked) = self.parked_rx.recv() => self.keep(parked),
                _ = sleep_until_opt(idle_expiry) => self.expire_idle(),
                _ = fence_check.tick() => self.check_fence(),
                msg = self.inbox.recv(), if inbox_open => match msg {
                    Some(msg) => self.handle(msg).await,
                    // The connection task owned the sender and ended; handled below.
                    None => inbox_open = false,
                },
                r = &mut conn, if conn_result.is_none() => {
                    tracing::error!(worker_id = %self.worker.config.worker_id, "the connection task stopped; stopping all tasks");
                    conn_result = Some(r);
                    if hard_deadline.is_none() {
                        hard_deadline = Some(Instant::now() + self.worker.config.kill_grace + HARD_SHUTDOWN_MARGIN);
                    }
                    self.draining = true;
                    self.stop_all(StopCause::Shutdown);
                }
                _ = sleep_until_opt(hard_deadline) => {
                    tracing::error!(
                        worker_id = %self.worker.config.worker_id,
                        remaining = self.tasks.len(),
                        "tasks did not stop within the kill grace; abandoning them"
                    );
                    break;
                }
            }
        }
        self.finish(conn, conn_result, close).await
    }

    /// After the loop: cleans up kept sandboxes, stops the tasks abandoned
    /// at the hard deadline, and closes the connection.
    async fn finish(
        &mut self,
        mut conn: tokio::task::JoinHandle<()>,
        conn_result: Option<Result<(), tokio::task::JoinError>>,
        close: &CancellationToken,
    ) -> Result<(), WorkerError> {
        // Sandboxes parked after the last check, and any still kept: cleaned
        // up here, each within the kill grace plus a margin.
        let mut leftovers: Vec<(String, String, Box<dyn Execution>)> =
            std::mem::take(&mut self.idle)
                .into_iter()
                .map(|(task_id, i)| (task_id, i.execution_id, i.execution))
                .collect();
        while let Ok(p) = self.parked_rx.try_recv() {
            leftovers.push((p.task_id, p.execution_id, p.execution));
        }
        for (task_id, execution_id, mut execution) in leftovers {
            let limit = self.worker.config.kill_grace + HARD_SHUTDOWN_MARGIN;
            match tokio::time::timeout(limit, execution.cleanup()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(task_id = %task_id, execution_id = %execution_id, error = %e, "cleanup of an idle sandbox failed")
                }
                Err(_) => {
                    tracing::warn!(task_id = %task_id, execution_id = %execution_id, "cleanup of an idle sandbox timed out")
                }
            }
        }
        // Nothing reads the inbox any more: let the connection fail fast on it.
        self.inbox.close();
        // Aborts only tasks abandoned at the hard deadline.
        self.tasks.shutdown().await;
        close.cancel();
        match conn_result {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(WorkerError::Connection(e)),
            None => match tokio::time::timeout(CLOSE_DEADLINE, &mut conn).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(WorkerError::Connection(e)),
                Err(_) => {
                    tracing::warn!(worker_id = %self.worker.config.worker_id, "closing the connection took too long; dropping it");
                    conn.abort();
                    Ok(())
                }
            },
        }
    }

    async fn start_drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        lock(&self.registry).draining = true;
        self.clean_all_idle();
        tracing::info!(worker_id = %self.worker.config.worker_id, running = self.tasks.len(), "draining: taking no new tasks");
        self.outbox.send(WorkerToServer::WorkerDraining).await;
    }

    /// At most this many sandboxes are kept idle.
    fn max_idle(&self) -> usize {
        match self.worker.config.max_concurrent_tasks {
            0 => MAX_IDLE_SANDBOXES_UNLIMITED,
            n => n as usize,
        }
    }

    /// Keeps a parked sandbox for `idle_for` (or cleans it up right away
    /// while draining), evicting the one closest to expiry beyond the bound.
    fn keep(&mut self, parked: Parked) {
        let Some(idle_for) = self.idle_for.filter(|_| !self.draining) else {
            self.clean(parked.task_id, parked.execution_id, parked.execution);
            return;
        };
        tracing::info!(task_id = %parked.task_id, execution_id = %parked.execution_id, ?idle_for, "sandbox kept idle for a follow-up");
        let entry = Idle {
            execution_id: parked.execution_id,
            execution: parked.execution,
            until: Instant::now() + idle_for,
        };
        if let Some(old) = self.idle.insert(parked.task_id.clone(), entry) {
            self.clean(parked.task_id, old.execution_id, old.execution);
        }
        while self.idle.len() > self.max_idle() {
            let Some(oldest) = self
                .idle
                .iter()
                .min_by_key(|(_, i)| i.until)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = self.idle.remove(&oldest) {
                tracing::info!(task_id = %oldest, max = self.max_idle(), "too many idle sandboxes; cleaning up the oldest");
                self.clean(oldest, old.execution_id, old.execution);
            }
        }
    }

    fn next_idle_expiry(&self) -> Option<Instant> {
        self.idle.values().map(|i| i.until).min()
    }

    fn expire_idle(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .idle
            .iter()
            .filter(|(_, i)| i.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for task_id in expired {
            if let Some(old) = self.idle.remove(&task_id) {
                tracing::info!(task_id = %task_id, execution_id = %old.execution_id, "idle sandbox expired; cleaning up");
                self.clean(task_id, old.execution_id, old.execution);
            }
        }
    }

    fn clean_all_idle(&mut self) {
        for (task_id, old) in std::mem::take(&mut self.idle) {
            self.clean(task_id, old.execution_id, old.execution);
        }
    }

    /// Cleans a sandbox up in the background (drain waits for it).
    fn clean(&mut self, task_id: String, execution_id: String, mut execution: Box<dyn Execution>) {
        self.tasks.spawn(async move {
            if let Err(e) = execution.cleanup().await {
                tracing::warn!(task_id = %task_id, execution_id = %execution_id, reason = ?e.reason, error = %e, "cleanup of an idle sandbox failed");
            }
        });
    }

    /// Self-fencing: cut off from the server for longer than the lease, the
    /// server has ended (or re-queued) every execution this worker runs, so
    /// keeping them would be work nobody supervises: stop them through the
    /// backend's normal cancel path. Their reports are sent on reconnect and
    /// refused as late.
    fn check_fence(&mut self) {
        let silent = self.heard.elapsed();
        let limit = self.worker.config.fence_after;
        if silent < limit {
            self.fenced = false;
            return;
        }
        let running = lock(&self.registry).running.len();
        if self.fenced || running == 0 {
            return;
        }
        self.fenced = true;
        crate::metrics::get().self_fenced();
        tracing::error!(
            worker_id = %self.worker.config.worker_id,
            silent_secs = silent.as_secs(),
            fence_after_secs = limit.as_secs(),
            running,
            "cut off from the control plane for longer than the lease; stopping every running task (self-fence)"
        );
        self.stop_all(StopCause::Fenced);
    }

    fn stop_all(&self, cause: StopCause) {
        for entry in lock(&self.registry).running.values() {
            entry.control.stop(cause);
        }
    }

    async fn handle(&mut self, msg: ServerToWorker) {
        match msg {
            ServerToWorker::TaskAssignment(a) => self.assign(*a).await,
            ServerToWorker::TaskCancellation(c) => self.cancel(c),
        }
    }

    async fn assign(&mut self, mut assignment: TaskAssignment) {
        let cfg = &self.worker.config;
        let task_id = assignment.task_id.clone();
        if assignment.execution_id.is_empty() {
            // Oz servers may omit it; the run id then names the execution.
            assignment.execution_id = task_id.clone();
        }
        let execution_id = assignment.execution_id.clone();
        let decision = {
            let mut reg = lock(&self.registry);
            if reg.running.contains_key(&execution_id) {
                None
            } else if self.draining {
                Some(Err(REJECT_DRAINING))
            } else if cfg.max_concurrent_tasks > 0
                && reg.running.len() >= cfg.max_concurrent_tasks as usize
            {
                Some(Err(REJECT_AT_CAPACITY))
            } else {
                let control = TaskControl::default();
                reg.running.insert(
                    execution_id.clone(),
                    Entry {
                        task_id: task_id.clone(),
                        control: control.clone(),
                    },
                );
                Some(Ok(control))
            }
        };
        match decision {
            None => {
                tracing::info!(task_id = %task_id, execution_id = %execution_id, "duplicate assignment ignored; the execution is already running");
            }
            Some(Err(reason)) => {
                tracing::info!(task_id = %task_id, execution_id = %execution_id, reason, "task rejected");
                crate::metrics::get().task_rejected(reason);
                self.outbox
                    .send(WorkerToServer::TaskRejected(TaskRejected {
                        task_id,
                        reason: reason.to_owned(),
                        execution_id: Some(execution_id),
                    }))
                    .await;
            }
            Some(Ok(control)) => {
                tracing::info!(task_id = %task_id, execution_id = %execution_id, worker_id = %cfg.worker_id, "task claimed");
                crate::metrics::get().task_claimed();
                self.outbox
                    .send(WorkerToServer::TaskClaimed(TaskClaimed {
                        task_id: task_id.clone(),
                        worker_id: cfg.worker_id.clone(),
                        execution_id: Some(execution_id.clone()),
                    }))
                    .await;
                let guard = Deregister {
                    registry: self.registry.clone(),
                    execution_id: execution_id.clone(),
                };
                let reuse = self.idle.remove(&task_id).map(|i| {
                    tracing::info!(task_id = %task_id, execution_id = %execution_id, previous = %i.execution_id, "reusing the idle sandbox of this run");
                    i.execution
                });
                let run = TaskRun {
                    reuse,
                    park: self.idle_for.map(|_| self.parked_tx.clone()),
                    backend: self.worker.backend.clone(),
                    spec: TaskSpec {
                        task_id,
                        execution_id,
                        assignment,
                        allow_local_repositories: cfg.allow_local_repositories,
                    },
                    control,
                    outbox: self.outbox.clone(),
                    kill_grace: cfg.kill_grace,
                    log_secrets: self.worker.log_secrets.clone(),
                    trace_env: self.worker.trace_env.clone(),
                    worker_id: cfg.worker_id.clone(),
                    backend_name: self.worker.backend.name(),
                };
                // Every log line of the task carries these (JSON logs: `spans`).
                let span = tracing::info_span!(
                    "task",
                    run_id = %run.spec.task_id,
                    execution_id = %run.spec.execution_id,
                    worker_id = %run.worker_id,
                    trace_id = %hangar_telemetry::trace::TraceParent::for_run(&run.spec.task_id).trace_id_hex(),
                );
                self.tasks.spawn(tracing::Instrument::instrument(
                    async move {
                        let _guard = guard;
                        task::drive(run).await;
                    },
                    span,
                ));
            }
        }
    }

    fn cancel(&self, c: TaskCancellation) {
        let reg = lock(&self.registry);
        let mut found = false;
        for (execution_id, entry) in reg.running.iter().filter(|(_, e)| e.task_id == c.task_id) {
            tracing::info!(task_id = %c.task_id, execution_id = %execution_id, "cancellation requested");
            entry.control.stop(StopCause::User);
            found = true;
        }
        if !found {
            tracing::warn!(task_id = %c.task_id, "cancellation for a task that is not running here; ignored");
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
