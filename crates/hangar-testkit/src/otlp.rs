//! A small OTLP/HTTP collector: accepts the protobuf exports of metrics
//! (`POST /v1/metrics`) and traces (`POST /v1/traces`) the way an
//! OpenTelemetry Collector's `otlphttp` receiver does, decodes them with the
//! official protobuf types, and keeps what arrived for assertions.

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One received span.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id (empty for a root).
    pub parent_span_id: String,
    /// Name.
    pub name: String,
    /// String and integer attributes, rendered as strings.
    pub attributes: Vec<(String, String)>,
}

/// One received metric (its name and the exporting service).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMetric {
    /// `service.name` of the exporting process.
    pub service: String,
    /// Metric name.
    pub name: String,
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ReceivedMetric>,
    /// Requests that were not `application/x-protobuf` or did not decode.
    rejected: Vec<String>,
}

/// A running collector.
pub struct Collector {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    _server: tokio::task::JoinHandle<()>,
}

fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attrs(kv: &[KeyValue]) -> Vec<(String, String)> {
    kv.iter()
        .map(|a| (a.key.clone(), value(&a.value)))
        .collect()
}

fn service(resource: &Option<Resource>) -> String {
    resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .map(|a| value(&a.value))
        .unwrap_or_default()
}

fn lock(r: &Mutex<Received>) -> std::sync::MutexGuard<'_, Received> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"))
}

async fn traces(
    State(r): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let decoded = ExportTraceServiceRequest::decode(body);
    let mut r = lock(&r);
    match decoded {
        Ok(req) if is_protobuf(&headers) => {
            for rs in req.resource_spans {
                let svc = service(&rs.resource);
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        r.spans.push(ReceivedSpan {
                            service: svc.clone(),
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            name: s.name,
                            attributes: attrs(&s.attributes),
                        });
                    }
                }
            }
            StatusCode::OK
        }
        Ok(_) => {
            r.rejected
                .push("traces without application/x-protobuf".into());
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Err(e) => {
            r.rejected.push(format!("traces: {e}"));
            StatusCode::BAD_REQUEST
        }
    }
}

async fn metrics(
    State(r): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let decoded = ExportMetricsServiceRequest::decode(body);
    let mut r = lock(&r);
    match decoded {
        Ok(req) if is_protobuf(&headers) => {
            for rm in req.resource_metrics {
                let svc = service(&rm.resource);
                for sm in rm.scope_metrics {
                    for m in sm.metrics {
                        r.metrics.push(ReceivedMetric {
                            service: svc.clone(),
                            name: m.name,
                        });
                    }
                }
            }
            StatusCode::OK
        }
        Ok(_) => {
            r.rejected
                .push("metrics without application/x-protobuf".into());
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        Err(e) => {
            r.rejected.push(format!("metrics: {e}"));
            StatusCode::BAD_REQUEST
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Listens on a random loopback port.
    pub async fn start() -> Result<Collector> {
        let received: Arc<Mutex<Received>> = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the collector")?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Collector {
            addr,
            received,
            _server: server,
        })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for exporters.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.received).spans.clone()
    }

    /// Metrics received so far.
    pub fn metrics(&self) -> Vec<ReceivedMetric> {
        lock(&self.received).metrics.clone()
    }

    /// Requests refused (wrong content type, undecodable).
    pub fn rejected(&self) -> Vec<String> {
        lock(&self.received).rejected.clone()
    }
}
