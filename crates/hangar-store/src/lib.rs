//! Hangar's storage.
//!
//! Owns: one storage trait per aggregate ([`TeamStore`], [`AccountStore`], [`ApiKeyStore`],
//! [`WorkerTokenStore`],
//! [`RunStore`], [`EventStore`], [`UsageStore`]), the [`Store`] trait that bundles them, the
//! records they return, and the implementations: [`SqliteStore`] (embedded
//! default, WAL, `synchronous=FULL`) and [`PostgresStore`] (several replicas on
//! one database, with [`Notifier`] signals between them); [`open`] picks one
//! from a URL. Every statement is written once for both (`sql`, `$N`
//! placeholders; only what truly differs is per dialect), and both pass the
//! same conformance suite.
//!
//! Every state change of a run is a conditional update that names the
//! execution it comes from, so a stale execution can never overwrite a newer
//! one (fencing) and terminal states never reopen.
//!
//! Depends on `hangar-protocol` only (plus sqlx).

mod accounts;
mod cluster;
mod environments;
mod followups;
mod integrations;
mod leases;
mod lifecycle;
mod notify;
mod open;
mod postgres;
mod records;
mod rows;
mod schedules;
mod shares;
mod sql;
mod sqlite;
mod stats;
mod usage;
mod webhooks;
mod worker_tokens;

pub use accounts::{AccountStore, UserCredentials, UserUpdate, WebSessionRecord};
pub use cluster::{BootstrapLock, ClusterStore, WORKER_UPSERT_BATCH, WorkerPresence};
pub use environments::{EnvironmentRecord, EnvironmentStore, SecretRecord, SecretStore};
pub use integrations::{IntegrationRecord, IntegrationStore, IntegrationThread};
pub use lifecycle::{LifecycleEventRecord, LifecycleQuery, LifecycleStore, NewLifecycleEvent};
pub use notify::{
    CANCEL_CHANNEL, DISPATCH_CHANNEL, FOLLOWUP_CHANNEL, Notifier, SHARES_CHANNEL, Signal,
    SignalListener,
};
pub use open::{DatabaseLocation, OpenedStore, open, open_with_notifier};
pub use postgres::{PgSignalListener, PostgresConfig, PostgresStore, redact_url};
pub use records::*;
pub use schedules::*;
pub use shares::{Grantee, NewShare, ShareRecord, ShareStore};
pub use sqlite::SqliteStore;
pub use stats::{QueueStat, StatsStore, TeamOverview};
pub use usage::{CallerUsageRecord, UsageStore, UsageSubject};
pub use webhooks::{
    NewWebhookDelivery, WebhookAttempt, WebhookDeliveryRecord, WebhookRecord, WebhookStore,
};
pub use worker_tokens::{NewWorkerToken, WorkerBinding, WorkerTokenRecord, WorkerTokenStore};

use async_trait::async_trait;
use hangar_protocol::session::SessionEvent;
use hangar_protocol::{ExecutionId, RunId, RunState, WorkerId};

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist (or belongs to another team).
    #[error("not found")]
    NotFound,
    /// The change conflicts with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database is out of space or otherwise temporarily unusable.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Stored data did not decode (a bug or a corrupted row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && let Some(code) = db.code()
            && transient_code(code.as_ref())
        {
            return StoreError::Unavailable(e);
        }
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Io(_) => StoreError::Unavailable(e),
            other => StoreError::Database(other),
        }
    }
}

/// Whether a database error code means "the database cannot write right now"
/// (the caller may retry) rather than "this statement is wrong".
fn transient_code(code: &str) -> bool {
    // SQLite reports extended result codes; the primary code is the low byte:
    // BUSY (5), LOCKED (6), NOMEM (7), READONLY (8), IOERR (10), FULL (13),
    // CANTOPEN (14), PROTOCOL (15).
    if let Ok(n) = code.parse::<i64>() {
        return matches!(n & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15);
    }
    // PostgreSQL SQLSTATEs: 08 connection, 53 insufficient resources (disk
    // full, memory, connections), 57P0x shutdown, 58 system errors (I/O),
    // 25006 read-only transaction, 40001/40P01 serialization failure and
    // deadlock (retry the transaction).
    code.len() == 5
        && (code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P0")
            || code.starts_with("58")
            || code == "25006"
            || code == "40001"
            || code == "40P01")
}

/// Result alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// Teams and users.
#[async_trait]
pub trait TeamStore: Send + Sync {
    /// Number of teams (0 on a fresh database).
    async fn team_count(&self) -> StoreResult<i64>;
    /// Creates a team.
    async fn create_team(&self, uid: &str, name: &str) -> StoreResult<TeamRecord>;
    /// Creates a user in a team.
    async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord>;
    /// A team by numeric id.
    async fn team(&self, id: i64) -> StoreResult<TeamRecord>;
    /// A user by numeric id.
    async fn user(&self, id: i64) -> StoreResult<UserRecord>;
    /// The (not deleted) user of a team with this email, compared case-insensitively.
    async fn user_by_email(&self, team_id: i64, email: &str) -> StoreResult<Option<UserRecord>>;
}

/// API keys (hashed at rest).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key.
    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord>;
    /// Finds a key by the hash of its secret.
    async fn api_key_by_hash(&self, hash: &[u8]) -> StoreResult<Option<ApiKeyRecord>>;
    /// Revokes a key of a team (idempotent).
    async fn revoke_api_key(&self, team_id: i64, id: &str, at: i64) -> StoreResult<()>;
    /// Keys of a team.
    async fn list_api_keys(&self, team_id: i64) -> StoreResult<Vec<ApiKeyRecord>>;
}

/// Runs and their executions.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Stores a new `QUEUED` run.
    async fn create_run(&self, run: NewRun) -> StoreResult<RunRecord>;
    /// Stores a run that executes outside any worker (an unmanaged `hangar agent
    /// run`): the run and its execution are created together, already
    /// `INPROGRESS`, so the dispatcher never sees it queued.
    async fn create_local_run(&self, run: NewRun, exec: NewExecution) -> StoreResult<RunRecord>;
    /// Stores a new `QUEUED` run already assigned to `exec` (the dispatcher's
    /// fast path: a worker had room when the run was created), the run and
    /// its execution in one write, as [`RunStore::create_run`] then
    /// [`RunStore::assign`] would leave them.
    async fn create_assigned_run(&self, run: NewRun, exec: NewExecution) -> StoreResult<RunRecord>;
    /// A run of a team.
    async fn run(&self, team_id: i64, id: &RunId) -> StoreResult<RunRecord>;
    /// A run regardless of team (internal use: dispatch, run tokens).
    async fn run_any_team(&self, id: &RunId) -> StoreResult<RunRecord>;
    /// One page of a team's runs.
    async fn list_runs(&self, team_id: i64, query: &RunQuery) -> StoreResult<RunPage>;
    /// Runs waiting for a worker (no live execution), oldest first.
    async fn queued_runs(&self, limit: i64) -> StoreResult<Vec<RunRecord>>;

    /// Records an assignment: inserts the execution and makes it the run's
    /// current one, only if the run is still `QUEUED` without a live execution.
    async fn assign(&self, exec: NewExecution) -> StoreResult<Transition>;
    /// The worker accepted: `QUEUED` → `CLAIMED`.
    async fn claim(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition>;
    /// The worker refused, or the execution never started before its lease
    /// expired: the execution ends and a `QUEUED`, `PENDING` or `CLAIMED` run
    /// is queued again.
    async fn reject(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        reason: &str,
        at: i64,
    ) -> StoreResult<Transition>;
    /// The sandbox is ready: → `INPROGRESS`.
    async fn start(&self, run: &RunId, exec: &ExecutionId, at: i64) -> StoreResult<Transition>;
    /// The agent reported its outcome; the run becomes terminal (the sandbox may still run).
    async fn report_outcome(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        outcome: &Outcome,
    ) -> StoreResult<Transition>;
    /// The worker reported the end of the execution: it ends, and the run becomes
    /// terminal with `outcome` unless it already is.
    async fn finish_execution(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        end: &ExecutionEnd,
    ) -> StoreResult<Transition>;
    /// Cancels a run of a team that is not terminal; returns the run as it was
    /// before, so the caller can notify the worker running it.
    async fn cancel_run(
        &self,
        team_id: i64,
        id: &RunId,
        message: &str,
        at: i64,
    ) -> StoreResult<RunRecord>;
    /// Adds token usage and cost to a run.
    async fn add_usage(
        &self,
        run: &RunId,
        prompt: u64,
        completion: u64,
        cost: f64,
    ) -> StoreResult<()>;

    /// An execution.
    async fn execution(&self, id: &ExecutionId) -> StoreResult<ExecutionRecord>;
    /// Resolves a run token (by hash) to its live execution.
    async fn execution_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<ExecutionRecord>>;
    /// Executions that have not ended on a worker.
    async fn live_executions(&self, worker_id: &WorkerId) -> StoreResult<Vec<ExecutionRecord>>;
    /// Every execution that has not ended, with its run's team.
    async fn all_live_executions(&self) -> StoreResult<Vec<(i64, ExecutionRecord)>>;

    /// Renews, until `expires_at` (ms), the leases of the live executions of
    /// a team's worker, now held by connection `holder`; returns how many.
    async fn renew_leases(
        &self,
        team_id: i64,
        worker_id: &WorkerId,
        holder: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<u64>;
    /// Live executions whose lease expired before `now`, soonest expired
    /// first, with their run's team.
    async fn expired_leases(
        &self,
        now: i64,
        limit: i64,
    ) -> StoreResult<Vec<(i64, ExecutionRecord)>>;
    /// Records the `failure_reason` the agent of a live execution reported
    /// (it prepared the environment itself and that failed); the worker's
    /// later report of the execution's end keeps it instead of its own
    /// generic reason (`agent_invocation`).
    async fn note_failure_reason(&self, exec: &ExecutionId, reason: &str) -> StoreResult<()>;
    /// Takes an expired lease so the caller can end its execution: `true`
    /// for exactly one caller, however many replicas sweep at once, and
    /// only while the lease is still expired.
    async fn take_expired_lease(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool>;
    /// Extends every live lease that expires before `until` to `until`;
    /// returns how many. For a server starting after an outage, during which
    /// no worker could renew.
    async fn extend_leases(&self, until: i64) -> StoreResult<u64>;
    /// How many executions of the run ended because their worker was lost.
    async fn lost_executions(&self, run: &RunId) -> StoreResult<i64>;
    /// The latest execution of each of these runs that has one (any order):
    /// what a run's details show of how its last attempt ended.
    async fn last_executions(&self, runs: &[RunId]) -> StoreResult<Vec<ExecutionRecord>>;
    /// Ends a started execution whose worker was lost (`worker_lost`) and
    /// queues its run again, in one transaction; `Applied` when the run was
    /// queued, fenced like every transition.
    async fn requeue_lost(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        message: &str,
        at: i64,
    ) -> StoreResult<Transition>;
    /// Whether the API key that registered the execution (an unmanaged
    /// run's) is still active at `now`; true for executions without one.
    async fn issuer_active(&self, exec: &ExecutionId, now: i64) -> StoreResult<bool>;
    /// The leases of a team's live executions.
    async fn team_leases(&self, team_id: i64) -> StoreResult<Vec<LeaseRecord>>;

    /// Reopens an ended run for a follow-up, atomically: a terminal run whose
    /// executions have all ended goes back to `QUEUED` without a current
    /// execution (status cleared), and the follow-up is recorded for the next
    /// execution to continue the conversation with. Returns the reopened run.
    /// `Conflict` when the run is not terminal or an execution is still live,
    /// `NotFound` when the team has no such run.
    async fn reopen_run(
        &self,
        team_id: i64,
        id: &RunId,
        followup: &NewFollowup,
    ) -> StoreResult<RunRecord>;
    /// The latest follow-up that reopened the run, if any.
    async fn latest_followup(&self, id: &RunId) -> StoreResult<Option<FollowupRecord>>;
    /// Stores a follow-up for the live execution `execution_id` of run `id`
    /// (committed before it returns); `Conflict` when the execution ended.
    async fn add_followup(
        &self,
        id: &RunId,
        execution_id: &ExecutionId,
        followup: &NewFollowup,
    ) -> StoreResult<FollowupRecord>;
    /// The execution's follow-ups its agent has not acknowledged, oldest first.
    async fn pending_followups(
        &self,
        execution_id: &ExecutionId,
    ) -> StoreResult<Vec<FollowupRecord>>;
    /// The agent of `execution_id` acknowledged follow-up `followup_id`.
    async fn followup_delivered(
        &self,
        execution_id: &ExecutionId,
        followup_id: i64,
        at: i64,
    ) -> StoreResult<()>;
}

/// The session transcript.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores events of one execution; already-stored sequence numbers are
    /// ignored. Returns the highest contiguous stored seq.
    async fn append_events(
        &self,
        run: &RunId,
        exec: &ExecutionId,
        events: &[SessionEvent],
    ) -> StoreResult<u64>;
    /// Highest contiguous stored seq of an execution (0 when none).
    async fn last_seq(&self, run: &RunId, exec: &ExecutionId) -> StoreResult<u64>;
    /// Every event of a run: executions in creation order, then by seq.
    async fn run_events(&self, run: &RunId) -> StoreResult<Vec<(ExecutionId, SessionEvent)>>;
    /// The events of one kind (`artifact`, …) of a run, in the same order;
    /// reads only those rows.
    async fn run_events_of_kind(
        &self,
        run: &RunId,
        kind: &str,
    ) -> StoreResult<Vec<(ExecutionId, SessionEvent)>>;
}

/// Everything the server needs.
#[async_trait]
pub trait Store:
    TeamStore
    + AccountStore
    + ApiKeyStore
    + WorkerTokenStore
    + RunStore
    + EventStore
    + EnvironmentStore
    + SecretStore
    + IntegrationStore
    + WebhookStore
    + ScheduleStore
    + LifecycleStore
    + ClusterStore
    + ShareStore
    + UsageStore
    + StatsStore
    + Send
    + Sync
{
    /// Whether the database answers and can commit a write (it rewrites one
    /// probe row): `/readyz` fails while a full disk, an I/O error, a
    /// read-only database or a lost connection would fail users' writes.
    async fn ping(&self) -> StoreResult<()>;
    /// Returns once everything committed before the call is durable. On
    /// SQLite a reader may see a commit a moment before its fsync (the group
    /// writer syncs the log off the write lock); the server calls this
    /// before what it read leaves the process (a response, a streamed event,
    /// a delivery), so nothing is shown that a power loss could take back.
    /// On PostgreSQL a commit is durable before it is visible: a no-op.
    async fn settled(&self);
    /// Why the store refuses every write until the process restarts, if it
    /// does: on SQLite, after a failed fsync of the write-ahead log (the
    /// kernel may have dropped the pages it failed to write, so nothing
    /// written since can be vouched for). `/healthz` fails meanwhile, so a
    /// supervisor (Kubernetes' liveness probe, systemd) restarts the server.
    fn broken(&self) -> Option<String>;
    /// Closes connections (flushes the WAL).
    async fn close(&self);
    /// How many writes this store has made durable since it opened, and in
    /// how many commits (on SQLite, fsyncs: group commit shares one among
    /// the writes that queue up together).
    fn write_counts(&self) -> WriteCounts;
}

/// [`Store::write_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Writes that committed (one per `write`/`transaction` of the store).
    pub writes: u64,
    /// Transactions committed.
    pub commits: u64,
}

/// The counters behind [`Store::write_counts`].
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    writes: std::sync::atomic::AtomicU64,
    commits: std::sync::atomic::AtomicU64,
}

impl WriteCounters {
    pub(crate) fn add(&self, writes: u64, commits: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.writes.fetch_add(writes, Relaxed);
        self.commits.fetch_add(commits, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WriteCounts {
        use std::sync::atomic::Ordering::Relaxed;
        WriteCounts {
            writes: self.writes.load(Relaxed),
            commits: self.commits.load(Relaxed),
        }
    }
}

/// The write [`Store::ping`] commits (`?` is the time in ms; PostgreSQL
/// numbers it `$1`).
const PROBE_WRITE: &str = "INSERT INTO store_probe (id, at) VALUES (1, $1) \
    ON CONFLICT (id) DO UPDATE SET at = excluded.at";

/// Worker id recorded on executions of unmanaged runs; such executions are
/// never tracked as a worker's.
pub const LOCAL_WORKER_ID: &str = "local:unmanaged";

/// Convenience: the state a run ends in, plus message and error code.
pub fn terminal(state: RunState, message: impl Into<String>) -> Outcome {
    Outcome {
        state,
        message: message.into(),
        error_code: None,
    }
}
