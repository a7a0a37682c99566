//! Execution leases, written once for both databases.
//!
//! Every live execution of a managed worker holds a lease: the connection
//! holding it (`lease_holder`) and an expiry (`lease_expires_at`, ms). The
//! heartbeats of the worker running it renew it through whichever replica it
//! is connected to ([`RenewLeases`]); any replica sweeps expired ones, and a
//! conditional update ([`TAKE_EXPIRED`]) makes exactly one sweeper win each,
//! however many run at once. Statements use `$N` placeholders, which both
//! databases take (see [`crate::sql`]).

/// Renews the leases of a worker's live executions:
/// `(holder, expires_at, now, worker_id, team_id)`.
pub(crate) const RENEW: &str = "UPDATE executions SET lease_holder = $1, lease_expires_at = $2, \
     updated_at = $3 WHERE worker_id = $4 AND ended_at IS NULL AND lease_expires_at IS NOT NULL \
     AND run_id IN (SELECT id FROM runs WHERE team_id = $5)";

/// Live executions whose lease expired before `?`, with their run's team, oldest first.
pub(crate) const EXPIRED: &str = "SELECT r.team_id AS team_id, x.id AS id, x.run_id AS run_id, \
     x.worker_id AS worker_id, x.state AS state, x.created_at AS created_at, \
     x.ended_at AS ended_at, x.exit_code AS exit_code, x.failure_reason AS failure_reason, \
     x.message AS message, x.lease_holder AS lease_holder, x.lease_expires_at AS lease_expires_at \
     FROM executions x JOIN runs r ON r.id = x.run_id \
     WHERE x.ended_at IS NULL AND x.lease_expires_at IS NOT NULL AND x.lease_expires_at < $1 \
     ORDER BY x.lease_expires_at LIMIT $2";

/// Takes an expired lease for the caller to end it: `(id, now)`. One row
/// changed means this caller won; no renewal can revive the lease after it.
pub(crate) const TAKE_EXPIRED: &str = "UPDATE executions SET lease_expires_at = NULL \
     WHERE id = $1 AND ended_at IS NULL AND lease_expires_at IS NOT NULL AND lease_expires_at < $2";

/// Records why a live execution is failing, as its agent reported it, for
/// the worker's report to keep: `(reason, id)`. Only a live execution with no
/// reason yet; the execution's end then keeps it (`COALESCE`).
pub(crate) const NOTE_FAILURE_REASON: &str = "UPDATE executions SET failure_reason = $1 \
     WHERE id = $2 AND ended_at IS NULL AND failure_reason IS NULL";

/// Gives every live lease expiring before `until` that expiry: `(until, until)`.
/// A server starting after an outage does this, because no worker could
/// renew its leases while no replica was up.
pub(crate) const EXTEND_ALL: &str = "UPDATE executions SET lease_expires_at = $1 \
     WHERE ended_at IS NULL AND lease_expires_at IS NOT NULL AND lease_expires_at < $2";

/// Whether an execution's issuing API key (if it has one) is still active:
/// `(execution_id, now)`; a row when it is, or when there is none.
pub(crate) const ISSUER_ACTIVE: &str = "SELECT 1 AS ok FROM executions x \
     LEFT JOIN api_keys k ON k.id = x.issuer_key_id WHERE x.id = $1 AND (x.issuer_key_id IS NULL \
     OR (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)))";

/// How many executions of a run ended because their worker was lost: `(run_id)`.
pub(crate) const LOST_COUNT: &str = "SELECT COUNT(*) AS lost FROM executions \
     WHERE run_id = $1 AND failure_reason = 'worker_lost'";

/// The latest execution of each of `runs` runs (by creation, then id):
/// `(run_id, …)`, one placeholder per run. Not about leases, but written
/// once for both databases the same way.
pub(crate) fn last_executions(runs: usize) -> String {
    let ids: Vec<String> = (1..=runs).map(|i| format!("${i}")).collect();
    let ids = ids.join(", ");
    format!(
        "SELECT x.id AS id, x.run_id AS run_id, x.worker_id AS worker_id, x.state AS state, \
         x.created_at AS created_at, x.ended_at AS ended_at, x.exit_code AS exit_code, \
         x.failure_reason AS failure_reason, x.message AS message FROM executions x \
         WHERE x.run_id IN ({ids}) AND NOT EXISTS (SELECT 1 FROM executions y \
         WHERE y.run_id = x.run_id AND (y.created_at > x.created_at \
         OR (y.created_at = x.created_at AND y.id > x.id)))"
    )
}

/// Ends a started execution whose worker was lost: `(at, at, message, id)`.
pub(crate) const END_LOST: &str = "UPDATE executions SET state = 'ended', ended_at = $1, \
     updated_at = $2, failure_reason = 'worker_lost', message = $3 WHERE id = $4 AND ended_at IS NULL";

/// Queues its run again: `(at, message, run_id, execution_id)`.
pub(crate) const REQUEUE_LOST_RUN: &str = "UPDATE runs SET state = 'QUEUED', \
     current_execution_id = NULL, sandbox_running = FALSE, updated_at = $1, status_message = $2 \
     WHERE id = $3 AND current_execution_id = $4 \
     AND state NOT IN ('SUCCEEDED', 'FAILED', 'ERROR', 'CANCELLED', 'BLOCKED')";

/// The leases of a team's live executions: `(team_id)`.
pub(crate) const OF_TEAM: &str = "SELECT x.worker_id AS worker_id, x.run_id AS run_id, \
     x.id AS execution_id, x.lease_holder AS lease_holder, x.lease_expires_at AS lease_expires_at, \
     (SELECT COUNT(*) FROM executions y WHERE y.run_id = x.run_id AND y.created_at <= x.created_at) \
     AS epoch FROM executions x JOIN runs r ON r.id = x.run_id \
     WHERE r.team_id = $1 AND x.ended_at IS NULL AND x.lease_expires_at IS NOT NULL";
