//! The worker's metrics: the Oz worker's set under `hangar_worker_` (same
//! labels and meanings), plus prepare durations, lease renewals, self-fences,
//! idle sandboxes and the spool backlog. Catalog:
//! `hangar_telemetry::catalog::worker`. Every bounded series is primed at
//! start so it exists from the first scrape.

use hangar_protocol::worker::FailureReason;
use hangar_telemetry::catalog::worker as m;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, ObservableGauge, UpDownCounter};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Task results (`tasks_completed_total{result}`).
pub const RESULTS: &[&str] = &["succeeded", "failed", "cancelled", "dispatched"];
/// Failure phases (`task_failures_total{phase}`).
pub const PHASES: &[&str] = &["assignment", "backend", "cleanup"];
/// Rejection reasons.
pub const REJECTIONS: &[&str] = &[crate::REJECT_AT_CAPACITY, crate::REJECT_DRAINING];
/// Reconnect reasons.
pub const RECONNECTS: &[&str] = &["dial_failed", "remote_close"];
/// Prepare steps (`prepare_duration_seconds{step}`).
pub const STEPS: &[&str] = &["image", "clone", "setup"];

/// Every worker instrument.
pub struct Metrics {
    connected: Gauge<i64>,
    tasks_active: UpDownCounter<i64>,
    tasks_max: Gauge<i64>,
    claimed: Counter<u64>,
    rejected: Counter<u64>,
    completed: Counter<u64>,
    duration: Histogram<f64>,
    failures: Counter<u64>,
    reconnects: Counter<u64>,
    info: Gauge<i64>,
    prepare: Histogram<f64>,
    renewals: Counter<u64>,
    fences: Counter<u64>,
    idle: Gauge<i64>,
    _spool: Option<ObservableGauge<i64>>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The instruments; `init` creates them with the worker's identity, and
/// before that (tests, embedding) they are created without it.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(None))
}

/// Creates the instruments for this worker and primes every series.
pub(crate) fn init(
    worker_id: &str,
    backend: &str,
    max_concurrent: u32,
    spool_root: Option<PathBuf>,
) {
    let metrics = METRICS.get_or_init(|| Metrics::new(spool_root));
    metrics.info.record(
        1,
        &[
            KeyValue::new("version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("backend", backend.to_owned()),
            KeyValue::new("worker_id", worker_id.to_owned()),
        ],
    );
    metrics.tasks_max.record(i64::from(max_concurrent), &[]);
}

/// Bytes of undelivered session spools kept under `root`.
fn spool_bytes(root: &std::path::Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(root.join(crate::backends::spools::UNDELIVERED_DIR)) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .sum()
}

impl Metrics {
    fn new(spool_root: Option<PathBuf>) -> Metrics {
        use hangar_telemetry::{TASK_BUCKETS, counter, gauge, histogram, set_gauge};
        let meter = hangar_telemetry::meter("hangar-worker");
        let spool = spool_root.map(|root| {
            meter
                .i64_observable_gauge(m::SPOOL_BACKLOG.name)
                .with_description(m::SPOOL_BACKLOG.help)
                .with_callback(move |o| o.observe(spool_bytes(&root), &[]))
                .build()
        });
        let metrics = Metrics {
            connected: set_gauge(&meter, &m::CONNECTED),
            tasks_active: gauge(&meter, &m::TASKS_ACTIVE),
            tasks_max: set_gauge(&meter, &m::TASKS_MAX_CONCURRENT),
            claimed: counter(&meter, &m::TASKS_CLAIMED),
            rejected: counter(&meter, &m::TASKS_REJECTED),
            completed: counter(&meter, &m::TASKS_COMPLETED),
            duration: histogram(&meter, &m::TASK_DURATION, TASK_BUCKETS),
            failures: counter(&meter, &m::TASK_FAILURES),
            reconnects: counter(&meter, &m::WEBSOCKET_RECONNECTS),
            info: set_gauge(&meter, &m::INFO),
            prepare: histogram(&meter, &m::PREPARE_DURATION, TASK_BUCKETS),
            renewals: counter(&meter, &m::LEASE_RENEWALS),
            fences: counter(&meter, &m::SELF_FENCES),
            idle: set_gauge(&meter, &m::SANDBOXES_IDLE),
            _spool: spool,
        };
        metrics.prime();
        metrics
    }

    fn prime(&self) {
        self.connected.record(0, &[]);
        self.tasks_active.add(0, &[]);
        self.claimed.add(0, &[]);
        self.renewals.add(0, &[]);
        self.fences.add(0, &[]);
        self.idle.record(0, &[]);
        for r in REJECTIONS {
            self.rejected.add(0, &[KeyValue::new("reason", *r)]);
        }
        for r in RESULTS {
            self.completed.add(0, &[KeyValue::new("result", *r)]);
        }
        for r in RECONNECTS {
            self.reconnects.add(0, &[KeyValue::new("reason", *r)]);
        }
        for phase in PHASES {
            for reason in FailureReason::KNOWN {
                self.failures.add(
                    0,
                    &[
                        KeyValue::new("phase", *phase),
                        KeyValue::new("reason", reason.as_str().to_owned()),
                    ],
                );
            }
        }
    }

    /// The connection to the server is up (or not).
    pub fn connected(&self, up: bool) {
        self.connected.record(i64::from(up), &[]);
    }

    /// The connection is being re-established.
    pub fn reconnect(&self, reason: &'static str) {
        self.reconnects.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// The server answered a heartbeat, renewing this worker's leases.
    pub fn lease_renewed(&self) {
        self.renewals.add(1, &[]);
    }

    /// The worker stopped its tasks for being cut off longer than the lease.
    pub fn self_fenced(&self) {
        self.fences.add(1, &[]);
    }

    /// A task was claimed; active until [`Metrics::task_released`].
    pub fn task_claimed(&self) {
        self.claimed.add(1, &[]);
        self.tasks_active.add(1, &[]);
    }

    /// A recovered (or claimed) task no longer runs here.
    pub fn task_released(&self) {
        self.tasks_active.add(-1, &[]);
    }

    /// A task taken over after a restart runs here again.
    pub fn task_recovered(&self) {
        self.tasks_active.add(1, &[]);
    }

    /// An assignment was refused.
    pub fn task_rejected(&self, reason: &'static str) {
        self.rejected.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A task ended with `result` after `took`.
    pub fn task_ended(&self, result: &'static str, took: Duration) {
        self.completed.add(1, &[KeyValue::new("result", result)]);
        self.duration
            .record(took.as_secs_f64(), &[KeyValue::new("result", result)]);
    }

    /// A task failed in `phase` for `reason`.
    pub fn task_failed(&self, phase: &'static str, reason: &FailureReason) {
        self.failures.add(
            1,
            &[
                KeyValue::new("phase", phase),
                KeyValue::new("reason", reason.known().as_str().to_owned()),
            ],
        );
    }

    /// A prepare step (one of [`STEPS`]) took `took`.
    pub fn prepared(&self, step: &'static str, took: Duration) {
        self.prepare
            .record(took.as_secs_f64(), &[KeyValue::new("step", step)]);
    }

    /// Sandboxes kept idle now.
    pub fn idle_sandboxes(&self, n: usize) {
        self.idle.record(i64::try_from(n).unwrap_or(i64::MAX), &[]);
    }
}

/// The context a task's spans nest under: the `TRACEPARENT` of its
/// assignment (the worker's task span once the task runs), else the run's.
pub(crate) fn task_parent(
    spec: &crate::backends::TaskSpec,
) -> hangar_telemetry::trace::TraceParent {
    use hangar_telemetry::trace::{ENV, TraceParent};
    spec.assignment
        .env_vars
        .get(ENV)
        .and_then(|v| TraceParent::parse(v))
        .unwrap_or_else(|| TraceParent::for_run(&spec.task_id))
}

/// Runs prepare step `step` (one of [`STEPS`]) of a task: a `task.<step>`
/// span under the task's and a `prepare_duration_seconds` sample.
pub(crate) async fn step<T, E>(
    step: &'static str,
    spec: &crate::backends::TaskSpec,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: std::fmt::Display,
{
    let name = match step {
        "image" => "task.image",
        "clone" => "task.clone",
        _ => "task.setup",
    };
    let mut span = hangar_telemetry::trace::start(name, &task_parent(spec), Vec::new());
    let started = std::time::Instant::now();
    let out = fut.await;
    get().prepared(step, started.elapsed());
    if let Err(e) = &out {
        span.fail(e.to_string());
    }
    out
}
