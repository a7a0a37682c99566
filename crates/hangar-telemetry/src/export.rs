//! Exporters, chosen from the standard `OTEL_*` variables.

use crate::otlp_http::RuntimeClient;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where metrics or traces go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// Pulled: a `/metrics` endpoint in the Prometheus text format.
    Prometheus,
    /// Pushed over OTLP (HTTP/protobuf).
    Otlp,
    /// Printed to stdout.
    Console,
    /// Nothing.
    None,
}

impl Exporter {
    fn parse(
        var: &str,
        value: &str,
        allowed: &[Exporter],
    ) -> Result<Vec<Exporter>, TelemetryError> {
        let mut out = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let e = match item {
                "prometheus" => Exporter::Prometheus,
                "otlp" => Exporter::Otlp,
                "console" => Exporter::Console,
                "none" => Exporter::None,
                other => {
                    return Err(TelemetryError::Invalid(format!(
                        "{var}={other:?} is not an exporter Hangar knows; use one of {}",
                        names(allowed)
                    )));
                }
            };
            if !allowed.contains(&e) {
                return Err(TelemetryError::Invalid(format!(
                    "{var}={item} is not available for this signal; use one of {}",
                    names(allowed)
                )));
            }
            if e == Exporter::None {
                return Ok(Vec::new());
            }
            if !out.contains(&e) {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn name(self) -> &'static str {
        match self {
            Exporter::Prometheus => "prometheus",
            Exporter::Otlp => "otlp",
            Exporter::Console => "console",
            Exporter::None => "none",
        }
    }
}

fn names(list: &[Exporter]) -> String {
    list.iter().map(|e| e.name()).collect::<Vec<_>>().join(", ")
}

/// Why telemetry could not be set up. Always the operator's configuration.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A variable or setting has a value that cannot work.
    #[error("telemetry configuration: {0}")]
    Invalid(String),
    /// An exporter could not be built.
    #[error("telemetry exporter: {0}")]
    Exporter(String),
    /// The metrics endpoint could not listen.
    #[error(
        "cannot serve metrics on {addr}: {source} (choose another with OTEL_EXPORTER_PROMETHEUS_PORT or the metrics listen setting)"
    )]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a process tells [`Telemetry::init`] beyond the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub service_name: &'static str,
    /// More resource attributes (`worker.id`, `worker.backend`).
    pub attributes: Vec<(&'static str, String)>,
    /// Metrics exporters when `OTEL_METRICS_EXPORTER` is unset. Never OTLP:
    /// unset must not mean pushing to a collector that is not there.
    pub default_metrics: Vec<Exporter>,
    /// Always keep a Prometheus registry (the server's own `/metrics` listener).
    pub prometheus: bool,
    /// Whether `OTEL_METRICS_EXPORTER` is read at all (not for agents).
    pub metrics: bool,
}

impl Settings {
    /// Quiet defaults for `service_name`: no metrics and no traces unless the
    /// environment asks for them.
    pub fn new(service_name: &'static str) -> Self {
        Settings {
            service_name,
            attributes: Vec::new(),
            default_metrics: Vec::new(),
            prometheus: false,
            metrics: true,
        }
    }
}

/// Where `OTEL_METRICS_EXPORTER=prometheus` serves, from
/// `OTEL_EXPORTER_PROMETHEUS_HOST` (default `localhost`) and `_PORT` (default 9464).
#[derive(Debug, Clone)]
pub struct PrometheusEndpoint {
    /// Listen address.
    pub addr: SocketAddr,
    /// When set, scrapes must send `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
}

/// The installed exporters; [`Telemetry::shutdown`] flushes them.
pub struct Telemetry {
    meter_provider: Option<SdkMeterProvider>,
    tracer_provider: Option<SdkTracerProvider>,
    registry: Option<prometheus::Registry>,
    metrics: Vec<Exporter>,
    traces: Vec<Exporter>,
    env_endpoint: Option<PrometheusEndpoint>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("metrics", &self.metrics)
            .field("traces", &self.traces)
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Checks the OTLP protocol: only HTTP/protobuf is built in.
fn check_otlp_protocol() -> Result<(), TelemetryError> {
    for var in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        match env(var).as_deref() {
            None | Some("http/protobuf") => {}
            Some(other) => {
                return Err(TelemetryError::Invalid(format!(
                    "{var}={other:?}: Hangar exports OTLP as http/protobuf only (a collector's port 4318); \
                     set {var}=http/protobuf and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP receiver"
                )));
            }
        }
    }
    Ok(())
}

fn prometheus_env_endpoint() -> Result<PrometheusEndpoint, TelemetryError> {
    let host = env("OTEL_EXPORTER_PROMETHEUS_HOST").unwrap_or_else(|| "localhost".to_owned());
    let port = match env("OTEL_EXPORTER_PROMETHEUS_PORT") {
        None => 9464,
        Some(p) => p.trim().parse::<u16>().map_err(|_| {
            TelemetryError::Invalid(format!(
                "OTEL_EXPORTER_PROMETHEUS_PORT={p:?} is not a port number (0-65535)"
            ))
        })?,
    };
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    let addr = format!("{}:{port}", host.trim_start_matches('[').trim_end_matches(']'))
        .parse::<SocketAddr>()
        .or_else(|_| format!("[{host}]:{port}").parse::<SocketAddr>())
        .map_err(|_| {
            TelemetryError::Invalid(format!(
                "OTEL_EXPORTER_PROMETHEUS_HOST={host:?} is not an IP address (use 0.0.0.0 for every interface, or 127.0.0.1)"
            ))
        })?;
    Ok(PrometheusEndpoint {
        addr,
        bearer_token: None,
    })
}

fn resource(settings: &Settings) -> Resource {
    let named_by_env = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    let mut builder = Resource::builder();
    if !named_by_env {
        builder = builder.with_service_name(settings.service_name);
    }
    builder = builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    for (k, v) in &settings.attributes {
        builder = builder.with_attribute(KeyValue::new(*k, v.clone()));
    }
    builder.build()
}

/// Builds the tracer provider exporting to `traces` and installs it as the
/// global one.
fn tracer_provider(
    traces: &[Exporter],
    resource: Resource,
    client: impl Fn() -> Result<RuntimeClient, TelemetryError>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_id_generator(crate::trace::PresetIds);
    if traces.contains(&Exporter::Otlp) {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client()?)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    if traces.contains(&Exporter::Console) {
        builder = builder.with_simple_exporter(opentelemetry_stdout::SpanExporter::default());
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    crate::trace::set_enabled();
    Ok(provider)
}

impl Telemetry {
    /// Reads the `OTEL_*` variables, builds the exporters and installs them
    /// as the global providers. Call once, early, inside the tokio runtime.
    pub fn init(settings: Settings) -> Result<Telemetry, TelemetryError> {
        let metrics = match env("OTEL_METRICS_EXPORTER").filter(|_| settings.metrics) {
            Some(v) => Exporter::parse(
                "OTEL_METRICS_EXPORTER",
                &v,
                &[
                    Exporter::Prometheus,
                    Exporter::Otlp,
                    Exporter::Console,
                    Exporter::None,
                ],
            )?,
            None => settings.default_metrics.clone(),
        };
        let traces = match env("OTEL_TRACES_EXPORTER") {
            Some(v) => Exporter::parse(
                "OTEL_TRACES_EXPORTER",
                &v,
                &[Exporter::Otlp, Exporter::Console, Exporter::None],
            )?,
            None => Vec::new(),
        };
        if metrics.contains(&Exporter::Otlp) || traces.contains(&Exporter::Otlp) {
            check_otlp_protocol()?;
        }
        let env_endpoint = if metrics.contains(&Exporter::Prometheus) {
            Some(prometheus_env_endpoint()?)
        } else {
            None
        };
        let resource = resource(&settings);
        let client = || {
            let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                TelemetryError::Exporter("OTLP export needs the tokio runtime".to_owned())
            })?;
            RuntimeClient::new(handle).map_err(|e| TelemetryError::Exporter(e.to_string()))
        };

        let mut registry = None;
        let meter_provider = if metrics.is_empty() && !settings.prometheus {
            None
        } else {
            let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
            if metrics.contains(&Exporter::Prometheus) || settings.prometheus {
                let reg = prometheus::Registry::new();
                let exporter = opentelemetry_prometheus::exporter()
                    .with_registry(reg.clone())
                    .without_counter_suffixes()
                    .without_units()
                    .scope_info_enabled(false)
                    .build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                builder = builder.with_reader(exporter);
                registry = Some(reg);
            }
            if metrics.contains(&Exporter::Otlp) {
                let exporter = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_http_client(client()?)
                    .build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
                builder = builder.with_reader(PeriodicReader::builder(exporter).build());
            }
            if metrics.contains(&Exporter::Console) {
                let exporter = opentelemetry_stdout::MetricExporter::default();
                builder = builder.with_reader(PeriodicReader::builder(exporter).build());
            }
            let provider = builder.build();
            opentelemetry::global::set_meter_provider(provider.clone());
            crate::METRICS_ON.store(true, std::sync::atomic::Ordering::Relaxed);
            Some(provider)
        };

        let tracer_provider = if traces.is_empty() {
            None
        } else {
            Some(tracer_provider(&traces, resource, client)?)
        };
        Ok(Telemetry {
            meter_provider,
            tracer_provider,
            registry,
            metrics,
            traces,
            env_endpoint,
        })
    }

    /// [`Telemetry::init`] for traces only: `OTEL_METRICS_EXPORTER` is ignored.
    pub fn init_traces(mut settings: Settings) -> Result<Telemetry, TelemetryError> {
        settings.metrics = false;
        settings.default_metrics.clear();
        settings.prometheus = false;
        Telemetry::init(settings)
    }

    /// One line for the start-up log: which exporters are on.
    pub fn describe(&self) -> String {
        let list = |v: &[Exporter]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                names(v)
            }
        };
        format!(
            "metrics: {}; traces: {}",
            list(&self.metrics),
            list(&self.traces)
        )
    }

    /// Whether traces are exported (agents get the OTLP settings passed on).
    pub fn traces_exported(&self) -> bool {
        !self.traces.is_empty()
    }

    /// The endpoint `OTEL_METRICS_EXPORTER=prometheus` asks for, if it does.
    pub fn env_endpoint(&self) -> Option<&PrometheusEndpoint> {
        self.env_endpoint.as_ref()
    }

    /// The current metrics in the Prometheus text format, if a Prometheus
    /// registry is installed.
    pub fn render(&self) -> Option<String> {
        let registry = self.registry.as_ref()?;
        Some(render(registry))
    }

    /// Serves `GET /metrics` on `endpoint` until `shutdown` fires. Returns
    /// the bound address (port 0 picks one).
    pub async fn serve_prometheus(
        &self,
        endpoint: &PrometheusEndpoint,
        shutdown: CancellationToken,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), TelemetryError> {
        let Some(registry) = self.registry.clone() else {
            return Err(TelemetryError::Invalid(
                "no Prometheus registry: OTEL_METRICS_EXPORTER does not include prometheus"
                    .to_owned(),
            ));
        };
        let listener = tokio::net::TcpListener::bind(endpoint.addr)
            .await
            .map_err(|source| TelemetryError::Listen {
                addr: endpoint.addr,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| TelemetryError::Listen {
                addr: endpoint.addr,
                source,
            })?;
        let app = crate::export::metrics_router(registry, endpoint.bearer_token.clone());
        // Owned by the caller through the returned handle.
        #[allow(clippy::disallowed_methods)] // the caller owns it through the returned JoinHandle
        let handle = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics endpoint stopped with an error");
            }
        });
        Ok((addr, handle))
    }

    /// Flushes and stops the exporters, waiting at most 5 seconds.
    pub async fn shutdown(self) {
        let Telemetry {
            meter_provider,
            tracer_provider,
            ..
        } = self;
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(p) = tracer_provider {
                let _ = p.shutdown();
            }
            if let Some(p) = meter_provider {
                let _ = p.shutdown();
            }
        });
        if tokio::time::timeout(Duration::from_secs(5), flush)
            .await
            .is_err()
        {
            tracing::warn!("telemetry exporters did not flush within 5 s");
        }
    }
}

fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn metrics_router(registry: prometheus::Registry, token: Option<String>) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    let handler = move |headers: HeaderMap| {
        let registry = registry.clone();
        let token = token.clone();
        async move {
            if let Some(token) = token {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("");
                if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        "metrics need `Authorization: Bearer <token>` (the server's metrics bearer token)\n",
                    )
                        .into_response();
                }
            }
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(&registry),
            )
                .into_response()
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Hashing first makes the comparison independent of the lengths.
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_lists_parse_and_bad_values_say_what_is_allowed() {
        let all = [
            Exporter::Prometheus,
            Exporter::Otlp,
            Exporter::Console,
            Exporter::None,
        ];
        assert_eq!(
            Exporter::parse("X", "prometheus, otlp", &all).unwrap(),
            vec![Exporter::Prometheus, Exporter::Otlp]
        );
        assert!(Exporter::parse("X", "none", &all).unwrap().is_empty());
        let err = Exporter::parse("OTEL_METRICS_EXPORTER", "jaeger", &all).unwrap_err();
        assert!(
            err.to_string().contains("prometheus, otlp, console, none"),
            "{err}"
        );
        let err = Exporter::parse("OTEL_TRACES_EXPORTER", "prometheus", &all[1..]).unwrap_err();
        assert!(err.to_string().contains("not available"), "{err}");
    }

    #[test]
    fn bearer_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"", b"abc"));
    }
}
