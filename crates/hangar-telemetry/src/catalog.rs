//! Every metric Hangar exports, in one table.
//!
//! Instruments are built from these entries (so a name exists once), the
//! README's catalog and the shipped dashboards and alerts are checked against
//! them, and the Prometheus names are the instrument names: counters carry
//! `_total` and durations `_seconds` already, so the exporter adds no suffix
//! and OTLP and Prometheus users see the same names (as the Oz worker does).

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE`.
    pub fn prometheus_type(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Name, as exported.
    pub name: &'static str,
    /// Instrument kind.
    pub kind: Kind,
    /// Label names; every value is from a bounded set (never a run id or a prompt).
    pub labels: &'static [&'static str],
    /// What it means (the `# HELP` text).
    pub help: &'static str,
}

macro_rules! catalog {
    ($list:ident; $($id:ident: $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: Metric = Metric {
                name: $name,
                kind: Kind::$kind,
                labels: &[$($label),*],
                help: $help,
            };
        )*
        /// Every metric of this process kind, in catalog order.
        pub const $list: &[Metric] = &[$($id),*];
    };
}

/// Worker metrics: the Oz worker's set under `hangar_worker_`, then Hangar's own.
pub mod worker {
    use super::{Kind, Metric};
    catalog! { ALL;
        CONNECTED: "hangar_worker_connected", Gauge, [],
            "1 while the worker's WebSocket to the server is up, 0 otherwise.";
        TASKS_ACTIVE: "hangar_worker_tasks_active", Gauge, [],
            "Tasks claimed and not yet finished on this worker.";
        TASKS_MAX_CONCURRENT: "hangar_worker_tasks_max_concurrent", Gauge, [],
            "The worker's concurrency limit (--max-concurrent-tasks; 0 means unlimited).";
        TASKS_CLAIMED: "hangar_worker_tasks_claimed_total", Counter, [],
            "Tasks this worker claimed.";
        TASKS_REJECTED: "hangar_worker_tasks_rejected_total", Counter, ["reason"],
            "Assignments the worker refused (reason: at_capacity, draining).";
        TASKS_COMPLETED: "hangar_worker_tasks_completed_total", Counter, ["result"],
            "Tasks that ended, by result (succeeded, failed, cancelled, dispatched).";
        TASK_DURATION: "hangar_worker_task_duration_seconds", Histogram, ["result"],
            "Wall time of a task on this worker, from assignment to its end, by result.";
        TASK_FAILURES: "hangar_worker_task_failures_total", Counter, ["phase", "reason"],
            "Task failures by phase (assignment, backend, cleanup) and failure reason (PROTOCOL.md section 2).";
        WEBSOCKET_RECONNECTS: "hangar_worker_websocket_reconnects_total", Counter, ["reason"],
            "Reconnections to the server, by reason (dial_failed, remote_close).";
        INFO: "hangar_worker_info", Gauge, ["version", "backend", "worker_id"],
            "Always 1; its labels name the worker's version, backend and id.";
        PREPARE_DURATION: "hangar_worker_prepare_duration_seconds", Histogram, ["step"],
            "Time spent preparing a task's sandbox, by step (image, clone, setup).";
        LEASE_RENEWALS: "hangar_worker_lease_renewals_total", Counter, [],
            "Heartbeats that renewed this worker's execution leases.";
        SELF_FENCES: "hangar_worker_self_fences_total", Counter, [],
            "Times the worker stopped its tasks because it could not renew their leases in time.";
        SANDBOXES_IDLE: "hangar_worker_sandboxes_idle", Gauge, [],
            "Sandboxes kept after a run ended, waiting for a follow-up (--idle-on-complete).";
        SPOOL_BACKLOG: "hangar_worker_spool_backlog_bytes", Gauge, [],
            "Transcript bytes spooled on disk and not yet acknowledged by the server.";
    }
}

/// Control-plane metrics.
pub mod server {
    use super::{Kind, Metric};
    catalog! { ALL;
        RUNS_CREATED: "hangar_server_runs_created_total", Counter, ["source"],
            "Runs created, by source (API, CLI, SCHEDULED_AGENT, SLACK, LINEAR, ...).";
        RUNS: "hangar_server_runs", Gauge, ["state"],
            "Runs in the store by state. Read from the database: every replica reports the same totals, so aggregate with max, not sum.";
        QUEUE_DEPTH: "hangar_server_queue_depth", Gauge, ["host"],
            "Runs waiting for a worker, by target host (\"any\" for runs that name none). Read from the database, like hangar_server_runs.";
        QUEUE_OLDEST_AGE: "hangar_server_queue_oldest_age_seconds", Gauge, ["host"],
            "Age of the oldest queued run, by target host.";
        DISPATCH_LATENCY: "hangar_server_dispatch_latency_seconds", Histogram, [],
            "From a run becoming ready to its assignment being sent to a worker.";
        WORKERS_CONNECTED: "hangar_server_workers_connected", Gauge, [],
            "Workers connected to this replica.";
        WORKER_SLOTS: "hangar_server_worker_slots", Gauge, ["state"],
            "Task slots of the workers connected to this replica, by state (busy, free). Unlimited workers count their running tasks only.";
        LEASE_EXPIRIES: "hangar_server_lease_expiries_total", Counter, [],
            "Execution leases that expired because their worker went silent.";
        HTTP_REQUESTS: "hangar_server_http_requests_total", Counter, ["method", "route", "status_class"],
            "HTTP requests by method, route template and status class (2xx, 4xx, ...).";
        HTTP_DURATION: "hangar_server_http_request_duration_seconds", Histogram, ["method", "route"],
            "HTTP request duration until the response head, by method and route template.";
        WEBSOCKETS: "hangar_server_websocket_connections", Gauge, ["kind"],
            "Open WebSocket connections by kind (worker, agent, viewer).";
        SESSION_VIEWERS: "hangar_server_session_viewers", Gauge, [],
            "Live viewers of run sessions (dashboard, CLI, shared links).";
        EVENTS_INGESTED: "hangar_server_events_ingested_total", Counter, [],
            "Session events committed to the store.";
        EVENT_COMMIT: "hangar_server_event_commit_duration_seconds", Histogram, [],
            "Time to commit one batch of session events.";
        LLM_TOKENS: "hangar_server_llm_tokens_total", Counter, ["provider", "model", "kind"],
            "Tokens through the LLM gateway by provider, model and kind (input, output).";
        LLM_COST: "hangar_server_llm_cost_usd_total", Counter, ["provider", "model"],
            "Cost of LLM gateway calls in US dollars, from the provider's configured prices.";
        RATE_LIMITED: "hangar_server_rate_limit_refusals_total", Counter, ["limit"],
            "Requests refused by a rate limit (api, llm_gateway, public_stream, login).";
        SCHEDULE_FIRES: "hangar_server_schedule_fires_total", Counter, [],
            "Scheduled runs created.";
        SCHEDULE_MISSES: "hangar_server_schedule_misses_total", Counter, [],
            "Schedule times skipped (the server was down and the catch-up policy skips, or the run could not be created).";
        STORE_ERRORS: "hangar_server_store_errors_total", Counter, ["kind"],
            "Store errors by kind (unavailable, conflict, not_found, other).";
    }
}

/// Every metric, worker first.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    worker::ALL.iter().chain(server::ALL.iter())
}

/// The metric a Prometheus series name belongs to (`x_bucket` → `x` for histograms).
pub fn lookup(series: &str) -> Option<&'static Metric> {
    all().find(|m| {
        m.name == series
            || (m.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| series.strip_suffix(s) == Some(m.name)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for m in all() {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("hangar_worker_") || m.name.starts_with("hangar_server_"));
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty());
        }
        assert_eq!(
            lookup("hangar_server_dispatch_latency_seconds_bucket"),
            Some(&server::DISPATCH_LATENCY)
        );
        assert_eq!(lookup("hangar_server_runs_bucket"), None);
    }
}
