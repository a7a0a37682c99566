//! The control plane's metrics (catalog: `hangar_telemetry::catalog::server`).
//!
//! Counters and histograms are recorded where things happen. The gauges a
//! replica cannot know from its own memory (runs by state, the queue) are
//! read from the store every `metrics.refresh_interval`, so they are right
//! after a restart and agree across replicas. With no exporter configured
//! the instruments are OpenTelemetry's no-ops and the store is not read.

use crate::AppState;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use hangar_protocol::RunState;
use hangar_telemetry::catalog::server as m;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge, UpDownCounter};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What the store-read gauges report, refreshed in the background.
#[derive(Debug, Default)]
struct Snapshot {
    runs: Vec<(String, i64)>,
    /// `(host, depth, oldest created_at ms)`.
    queue: Vec<(String, i64, i64)>,
    slots_busy: i64,
    slots_free: i64,
    workers: i64,
}

/// Every server instrument.
pub struct Metrics {
    runs_created: Counter<u64>,
    dispatch_latency: Histogram<f64>,
    lease_expiries: Counter<u64>,
    http_requests: Counter<u64>,
    http_duration: Histogram<f64>,
    websockets: UpDownCounter<i64>,
    session_viewers: UpDownCounter<i64>,
    events_ingested: Counter<u64>,
    event_commit: Histogram<f64>,
    llm_tokens: Counter<u64>,
    llm_cost: Counter<f64>,
    rate_limited: Counter<u64>,
    schedule_fires: Counter<u64>,
    schedule_misses: Counter<u64>,
    store_errors: Counter<u64>,
    snapshot: Arc<Mutex<Snapshot>>,
    _observed: Vec<ObservableGauge<i64>>,
}

/// Rate limits that refuse requests.
pub const LIMITS: &[&str] = &["api", "llm_gateway", "public_stream", "login"];
/// WebSocket kinds.
pub const WEBSOCKET_KINDS: &[&str] = &["worker", "agent", "viewer"];
/// Store error kinds.
pub const STORE_ERROR_KINDS: &[&str] = &["unavailable", "conflict", "not_found", "other"];

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The instruments (created on first use, from the global meter).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

fn lock(s: &Mutex<Snapshot>) -> std::sync::MutexGuard<'_, Snapshot> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    fn new() -> Metrics {
        let meter = hangar_telemetry::meter("hangar-server");
        let snapshot: Arc<Mutex<Snapshot>> = Arc::default();
        let s = snapshot.clone();
        let runs = meter
            .i64_observable_gauge(m::RUNS.name)
            .with_description(m::RUNS.help)
            .with_callback(move |o| {
                let snap = lock(&s);
                for state in RunState::ALL {
                    let name = state.to_string();
                    let n = snap
                        .runs
                        .iter()
                        .find(|(s, _)| *s == name)
                        .map_or(0, |r| r.1);
                    o.observe(n, &[KeyValue::new("state", name)]);
                }
            })
            .build();
        let s = snapshot.clone();
        let depth = meter
            .i64_observable_gauge(m::QUEUE_DEPTH.name)
            .with_description(m::QUEUE_DEPTH.help)
            .with_callback(move |o| {
                let snap = lock(&s);
                if snap.queue.is_empty() {
                    o.observe(0, &[KeyValue::new("host", "any")]);
                }
                for (host, depth, _) in &snap.queue {
                    o.observe(*depth, &[KeyValue::new("host", host.clone())]);
                }
            })
            .build();
        let s = snapshot.clone();
        let age = meter
            .i64_observable_gauge(m::QUEUE_OLDEST_AGE.name)
            .with_description(m::QUEUE_OLDEST_AGE.help)
            .with_callback(move |o| {
                let snap = lock(&s);
                let now = hangar_protocol::Timestamp::now().unix_millis();
                if snap.queue.is_empty() {
                    o.observe(0, &[KeyValue::new("host", "any")]);
                }
                for (host, _, oldest) in &snap.queue {
                    let secs = (now - oldest).max(0) / 1000;
                    o.observe(secs, &[KeyValue::new("host", host.clone())]);
                }
            })
            .build();
        let s = snapshot.clone();
        let slots = meter
            .i64_observable_gauge(m::WORKER_SLOTS.name)
            .with_description(m::WORKER_SLOTS.help)
            .with_callback(move |o| {
                let snap = lock(&s);
                o.observe(snap.slots_busy, &[KeyValue::new("state", "busy")]);
                o.observe(snap.slots_free, &[KeyValue::new("state", "free")]);
            })
            .build();
        let s = snapshot.clone();
        let workers = meter
            .i64_observable_gauge(m::WORKERS_CONNECTED.name)
            .with_description(m::WORKERS_CONNECTED.help)
            .with_callback(move |o| o.observe(lock(&s).workers, &[]))
            .build();
        use hangar_telemetry::{LATENCY_BUCKETS, counter, f64_counter, gauge, histogram};
        let metrics = Metrics {
            runs_created: counter(&meter, &m::RUNS_CREATED),
            dispatch_latency: histogram(&meter, &m::DISPATCH_LATENCY, LATENCY_BUCKETS),
            lease_expiries: counter(&meter, &m::LEASE_EXPIRIES),
            http_requests: counter(&meter, &m::HTTP_REQUESTS),
            http_duration: histogram(&meter, &m::HTTP_DURATION, LATENCY_BUCKETS),
            websockets: gauge(&meter, &m::WEBSOCKETS),
            session_viewers: gauge(&meter, &m::SESSION_VIEWERS),
            events_ingested: counter(&meter, &m::EVENTS_INGESTED),
            event_commit: histogram(&meter, &m::EVENT_COMMIT, LATENCY_BUCKETS),
            llm_tokens: counter(&meter, &m::LLM_TOKENS),
            llm_cost: f64_counter(&meter, &m::LLM_COST),
            rate_limited: counter(&meter, &m::RATE_LIMITED),
            schedule_fires: counter(&meter, &m::SCHEDULE_FIRES),
            schedule_misses: counter(&meter, &m::SCHEDULE_MISSES),
            store_errors: counter(&meter, &m::STORE_ERRORS),
            snapshot,
            _observed: vec![runs, depth, age, slots, workers],
        };
        metrics.prime();
        metrics
    }

    /// Every bounded series exists from the first scrape.
    fn prime(&self) {
        for s in hangar_protocol::RunSourceType::ALL {
            self.runs_created
                .add(0, &[KeyValue::new("source", s.as_str())]);
        }
        for l in LIMITS {
            self.rate_limited.add(0, &[KeyValue::new("limit", *l)]);
        }
        for k in WEBSOCKET_KINDS {
            self.websockets.add(0, &[KeyValue::new("kind", *k)]);
        }
        for k in STORE_ERROR_KINDS {
            self.store_errors.add(0, &[KeyValue::new("kind", *k)]);
        }
        self.session_viewers.add(0, &[]);
        self.lease_expiries.add(0, &[]);
        self.events_ingested.add(0, &[]);
        self.schedule_fires.add(0, &[]);
        self.schedule_misses.add(0, &[]);
    }

    /// A run was created (after its commit).
    pub fn run_created(&self, source: &'static str) {
        self.runs_created.add(1, &[KeyValue::new("source", source)]);
    }

    /// An assignment was sent, `waited` after the run became ready.
    pub fn dispatched(&self, waited: Duration) {
        self.dispatch_latency.record(waited.as_secs_f64(), &[]);
    }

    /// A lease expired.
    pub fn lease_expired(&self) {
        self.lease_expiries.add(1, &[]);
    }

    /// A WebSocket of `kind` is open until the guard drops.
    pub fn websocket(&'static self, kind: &'static str) -> Open {
        let attrs = [KeyValue::new("kind", kind)];
        self.websockets.add(1, &attrs);
        Open {
            gauge: &self.websockets,
            attrs: Some(attrs),
        }
    }

    /// A live session viewer is watching until the guard drops.
    pub fn viewer(&'static self) -> Open {
        self.session_viewers.add(1, &[]);
        Open {
            gauge: &self.session_viewers,
            attrs: None,
        }
    }

    /// `n` session events were committed in `took`.
    pub fn events_committed(&self, n: usize, took: Duration) {
        self.events_ingested.add(n as u64, &[]);
        self.event_commit.record(took.as_secs_f64(), &[]);
    }

    /// A gateway call was metered.
    pub fn llm_call(&self, model: &str, prompt: u64, completion: u64, cost: f64) {
        let (provider, name) = model.split_once('/').unwrap_or(("unknown", model));
        let (provider, name) = (provider.to_owned(), name.to_owned());
        for (kind, n) in [("input", prompt), ("output", completion)] {
            self.llm_tokens.add(
                n,
                &[
                    KeyValue::new("provider", provider.clone()),
                    KeyValue::new("model", name.clone()),
                    KeyValue::new("kind", kind),
                ],
            );
        }
        self.llm_cost.add(
            cost,
            &[
                KeyValue::new("provider", provider),
                KeyValue::new("model", name),
            ],
        );
    }

    /// A request was refused by the limit named `limit` (one of [`LIMITS`]).
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.add(1, &[KeyValue::new("limit", limit)]);
    }

    /// A schedule created its run.
    pub fn schedule_fired(&self) {
        self.schedule_fires.add(1, &[]);
    }

    /// A schedule time passed without a run.
    pub fn schedule_missed(&self, n: u64) {
        self.schedule_misses.add(n, &[]);
    }

    /// A store call failed.
    pub fn store_error(&self, e: &hangar_store::StoreError) {
        use hangar_store::StoreError as E;
        let kind = match e {
            E::Unavailable(_) => "unavailable",
            E::Conflict(_) => "conflict",
            E::NotFound => "not_found",
            _ => "other",
        };
        self.store_errors.add(1, &[KeyValue::new("kind", kind)]);
    }
}

/// Holds a gauge up by one until dropped.
pub struct Open {
    gauge: &'static UpDownCounter<i64>,
    attrs: Option<[KeyValue; 1]>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge
            .add(-1, self.attrs.as_ref().map_or(&[], |a| &a[..]));
    }
}

/// Counts and times every request by method, route template and status
/// class, and runs it inside a `request` span whose `request_id` (the
/// caller's `X-Request-Id` when it is a sane token, else a fresh one) is in
/// every log line of the request and in the response's `X-Request-Id`.
pub async fn http_layer(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned);
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let metrics = get();
    let status = hangar_telemetry::status_class(resp.status().as_u16());
    metrics.http_requests.add(
        1,
        &[
            KeyValue::new("method", method.clone()),
            KeyValue::new("route", route.clone()),
            KeyValue::new("status_class", status),
        ],
    );
    metrics.http_duration.record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("method", method),
            KeyValue::new("route", route),
        ],
    );
    resp
}

/// Emits the root span of a run that just ended (its trace's `hangar.run`,
/// from creation to now). Reads the run only when traces are exported.
pub async fn run_ended(store: &dyn hangar_store::Store, run: &hangar_protocol::RunId) {
    if !hangar_telemetry::trace::enabled() {
        return;
    }
    match store.run_any_team(run).await {
        Ok(r) if r.state.is_terminal() => {
            let failed = matches!(r.state, RunState::Failed | RunState::Error);
            hangar_telemetry::trace::record_run(
                &r.id.0,
                hangar_telemetry::trace::at_millis(r.created_at),
                vec![
                    KeyValue::new("hangar.run.state", r.state.to_string()),
                    KeyValue::new("hangar.run.source", r.source.as_str()),
                    KeyValue::new("hangar.team.id", r.team_id),
                ],
                failed.then_some(r.status_message.as_deref().unwrap_or("failed")),
            );
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, run_id = %run, "cannot read the run for its trace"),
    }
}

/// Reads the store-backed gauges every `interval` until shutdown; does
/// nothing when no metrics exporter is installed.
pub async fn refresh(state: AppState, interval: Duration, shutdown: CancellationToken) {
    if !hangar_telemetry::metrics_enabled() {
        return;
    }
    let metrics = get();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let runs = state.store.run_state_counts().await;
        let queue = state.store.queue_stats().await;
        let workers = state.dispatcher.connected_workers();
        let mut snap = lock(&metrics.snapshot);
        match runs {
            Ok(r) => snap.runs = r,
            Err(e) => {
                metrics.store_error(&e);
                tracing::warn!(error = %e, "metrics: cannot count runs by state");
            }
        }
        match queue {
            Ok(q) => {
                snap.queue = q
                    .into_iter()
                    .map(|s| {
                        (
                            s.host.unwrap_or_else(|| "any".to_owned()),
                            s.depth,
                            s.oldest_created_at,
                        )
                    })
                    .collect();
            }
            Err(e) => {
                metrics.store_error(&e);
                tracing::warn!(error = %e, "metrics: cannot read the queue");
            }
        }
        snap.workers = workers.len() as i64;
        snap.slots_busy = workers.iter().map(|(_, _, w)| w.running_tasks as i64).sum();
        snap.slots_free = workers
            .iter()
            .filter(|(_, _, w)| w.max_concurrent_tasks > 0 && !w.draining)
            .map(|(_, _, w)| (i64::from(w.max_concurrent_tasks) - w.running_tasks as i64).max(0))
            .sum();
    }
}
