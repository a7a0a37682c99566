//! Hangar's metrics and traces.
//!
//! - [`catalog`]: every metric Hangar exports (name, kind, labels, meaning).
//! - [`Telemetry::init`]: OpenTelemetry exporters chosen the way every OTel
//!   SDK and the Oz worker choose them (`OTEL_METRICS_EXPORTER`,
//!   `OTEL_TRACES_EXPORTER`, `OTEL_EXPORTER_*`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_SERVICE_NAME`), installed as the global providers, with a
//!   Prometheus text endpoint ([`Telemetry::serve_prometheus`]).
//! - [`trace`]: W3C trace context for runs (one trace per run, its id derived
//!   from the run id) and the spans the server, worker and agent add to it.
//!
//! Instruments are created from the global meter ([`meter`]); with no
//! exporter configured that is OpenTelemetry's no-op meter, so recording costs
//! next to nothing.

pub mod catalog;
mod export;
mod otlp_http;
pub mod trace;

pub use export::{Exporter, PrometheusEndpoint, Settings, Telemetry, TelemetryError};

use opentelemetry::metrics::Meter;
use std::sync::atomic::{AtomicBool, Ordering};

static METRICS_ON: AtomicBool = AtomicBool::new(false);

/// The meter instruments are created from (the global provider's).
pub fn meter(scope: &'static str) -> Meter {
    opentelemetry::global::meter(scope)
}

/// Whether a metrics exporter is installed: work done only to feed metrics
/// (such as counting runs by state in the database) is skipped otherwise.
pub fn metrics_enabled() -> bool {
    METRICS_ON.load(Ordering::Relaxed)
}

/// Builds a counter from its catalog entry.
pub fn counter(meter: &Meter, m: &catalog::Metric) -> opentelemetry::metrics::Counter<u64> {
    debug_assert_eq!(m.kind, catalog::Kind::Counter);
    meter.u64_counter(m.name).with_description(m.help).build()
}

/// Builds a counter of fractional amounts (cost) from its catalog entry.
pub fn f64_counter(meter: &Meter, m: &catalog::Metric) -> opentelemetry::metrics::Counter<f64> {
    debug_assert_eq!(m.kind, catalog::Kind::Counter);
    meter.f64_counter(m.name).with_description(m.help).build()
}

/// Builds an up-down gauge from its catalog entry.
pub fn gauge(meter: &Meter, m: &catalog::Metric) -> opentelemetry::metrics::UpDownCounter<i64> {
    debug_assert_eq!(m.kind, catalog::Kind::Gauge);
    meter
        .i64_up_down_counter(m.name)
        .with_description(m.help)
        .build()
}

/// Builds a gauge set to absolute values from its catalog entry.
pub fn set_gauge(meter: &Meter, m: &catalog::Metric) -> opentelemetry::metrics::Gauge<i64> {
    debug_assert_eq!(m.kind, catalog::Kind::Gauge);
    meter.i64_gauge(m.name).with_description(m.help).build()
}

/// Bucket bounds in seconds for run-scale durations (tasks, clones, setup).
pub const TASK_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// Bucket bounds in seconds for request-scale latencies (dispatch, HTTP, commits).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Builds a histogram in seconds from its catalog entry.
pub fn histogram(
    meter: &Meter,
    m: &catalog::Metric,
    buckets: &[f64],
) -> opentelemetry::metrics::Histogram<f64> {
    debug_assert_eq!(m.kind, catalog::Kind::Histogram);
    meter
        .f64_histogram(m.name)
        .with_description(m.help)
        .with_boundaries(buckets.to_vec())
        .build()
}

/// `"2xx"` for 204, and so on.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
