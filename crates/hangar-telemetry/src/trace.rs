//! One trace per run, across the server, the worker and the agent.
//!
//! A run's trace context is derived from its id, so every process that knows
//! the run knows its trace without storing or passing anything more:
//! the trace id is the run's UUID (hashed for ids that are not UUIDs), and
//! the root span id is a hash of it. The root span, `hangar.run`, is emitted
//! once, by whoever ends the run, with the run's creation as its start; every
//! other span (create, dispatch, the worker's task and its prepare steps, the
//! agent's turns, model calls and tool calls) is a descendant of it. W3C
//! `traceparent` carries the context to the worker (in the assignment) and to
//! the agent (the `TRACEPARENT` variable), so their spans nest under the
//! span that started them.

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

/// The variable that carries the context into the agent's environment.
pub const ENV: &str = "TRACEPARENT";

static TRACES_ON: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_enabled() {
    TRACES_ON.store(true, Ordering::Relaxed);
}

/// Whether spans are exported at all (no work is done for them otherwise).
pub fn enabled() -> bool {
    TRACES_ON.load(Ordering::Relaxed)
}

/// A W3C trace context: a trace id and the id of the span to nest under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The parent span.
    pub span_id: SpanId,
}

impl TraceParent {
    /// The run's trace, pointing at its root span.
    pub fn for_run(run_id: &str) -> TraceParent {
        let digest = Sha256::digest(format!("hangar-run-span:{run_id}").as_bytes());
        let trace_id = match uuid::Uuid::parse_str(run_id) {
            Ok(u) if !u.is_nil() => TraceId::from_bytes(*u.as_bytes()),
            _ => {
                let d = Sha256::digest(format!("hangar-run-trace:{run_id}").as_bytes());
                TraceId::from_bytes(first(&d))
            }
        };
        let mut span = [0u8; 8];
        span.copy_from_slice(&digest[..8]);
        span[0] |= 1; // never the invalid all-zero id
        TraceParent {
            trace_id,
            span_id: SpanId::from_bytes(span),
        }
    }

    /// Reads a `traceparent` header value (`00-<trace>-<span>-<flags>`).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2
            || version == "ff"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        Some(TraceParent { trace_id, span_id })
    }

    /// The context in this process's `TRACEPARENT` variable, if any.
    pub fn from_env() -> Option<TraceParent> {
        std::env::var(ENV).ok().and_then(|v| TraceParent::parse(&v))
    }

    /// The `traceparent` header value (always sampled).
    pub fn header(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        self.trace_id.to_string()
    }

    fn context(&self) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            self.trace_id,
            self.span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }
}

fn first(d: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

thread_local! {
    static PRESET: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Span and trace ids: random, except for the one span built inside
/// [`with_preset`] (a run's root span, whose ids are derived from the run).
#[derive(Debug)]
pub(crate) struct PresetIds;

impl opentelemetry_sdk::trace::IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        match PRESET.with(|p| p.get()) {
            Some((t, _)) => t,
            None => opentelemetry_sdk::trace::RandomIdGenerator::default().new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match PRESET.with(|p| p.get()) {
            Some((_, s)) => s,
            None => opentelemetry_sdk::trace::RandomIdGenerator::default().new_span_id(),
        }
    }
}

fn with_preset<T>(ids: (TraceId, SpanId), f: impl FnOnce() -> T) -> T {
    PRESET.with(|p| p.set(Some(ids)));
    let out = f();
    PRESET.with(|p| p.set(None));
    out
}

/// A span in a run's trace; ended when dropped or by [`Span::end`].
pub struct Span {
    inner: Option<opentelemetry::global::BoxedSpan>,
    parent: TraceParent,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("parent", &self.parent)
            .finish()
    }
}

fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer("hangar")
}

/// Starts `name` now, under `parent`.
pub fn start(name: &'static str, parent: &TraceParent, attrs: Vec<KeyValue>) -> Span {
    start_at(name, parent, SystemTime::now(), attrs)
}

/// Starts `name` at `at` (a moment already past), under `parent`.
pub fn start_at(
    name: &'static str,
    parent: &TraceParent,
    at: SystemTime,
    attrs: Vec<KeyValue>,
) -> Span {
    if !enabled() {
        return Span {
            inner: None,
            parent: *parent,
        };
    }
    let tracer = tracer();
    let builder = tracer
        .span_builder(name)
        .with_start_time(at)
        .with_attributes(attrs);
    let span = tracer.build_with_context(builder, &parent.context());
    Span {
        inner: Some(span),
        parent: *parent,
    }
}

impl Span {
    /// The context children of this span nest under (the parent's when
    /// spans are not exported, so the trace stays connected).
    pub fn context(&self) -> TraceParent {
        match &self.inner {
            Some(s) if s.span_context().is_valid() => TraceParent {
                trace_id: s.span_context().trace_id(),
                span_id: s.span_context().span_id(),
            },
            _ => self.parent,
        }
    }

    /// Adds an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(s) = &mut self.inner {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed.
    pub fn fail(&mut self, message: impl Into<String>) {
        if let Some(s) = &mut self.inner {
            s.set_status(Status::error(message.into()));
        }
    }

    /// Ends the span now.
    pub fn end(mut self) {
        if let Some(mut s) = self.inner.take() {
            s.end();
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(mut s) = self.inner.take() {
            s.end();
        }
    }
}

/// A Unix time in milliseconds as a [`SystemTime`].
pub fn at_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Emits a span that already happened (`start` to `end`) under `parent`.
pub fn record(
    name: &'static str,
    parent: &TraceParent,
    start: SystemTime,
    end: SystemTime,
    attrs: Vec<KeyValue>,
) {
    if !enabled() {
        return;
    }
    let mut span = start_at(name, parent, start, attrs);
    if let Some(mut s) = span.inner.take() {
        s.end_with_timestamp(end);
    }
}

/// Emits the run's root span, `hangar.run`, from its creation until now,
/// with the ids every other span of the run already points at.
pub fn record_run(
    run_id: &str,
    created: SystemTime,
    mut attrs: Vec<KeyValue>,
    error: Option<&str>,
) {
    if !enabled() {
        return;
    }
    let root = TraceParent::for_run(run_id);
    attrs.push(KeyValue::new("hangar.run.id", run_id.to_owned()));
    let tracer = tracer();
    let builder = tracer
        .span_builder("hangar.run")
        .with_start_time(created)
        .with_attributes(attrs);
    let mut span = with_preset((root.trace_id, root.span_id), || {
        tracer.build_with_context(builder, &Context::new())
    });
    if let Some(e) = error {
        span.set_status(Status::error(e.to_owned()));
    }
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_context_is_derived_from_the_run_id_and_round_trips() {
        let id = "0193c3f4-5f44-7a31-9c2e-1d2f3a4b5c6d";
        let tp = TraceParent::for_run(id);
        assert_eq!(tp.trace_id_hex(), "0193c3f45f447a319c2e1d2f3a4b5c6d");
        assert_eq!(tp, TraceParent::for_run(id));
        assert_eq!(TraceParent::parse(&tp.header()), Some(tp));
        let other = TraceParent::for_run("not-a-uuid");
        assert_ne!(other.trace_id, TraceId::INVALID);
        assert_ne!(other.span_id, SpanId::INVALID);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-0193c3f45f447a319c2e1d2f3a4b5c6d-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-0193c3f45f447a319c2e1d2f3a4b5c6d-0000000000000000-01",
            "ff-0193c3f45f447a319c2e1d2f3a4b5c6d-00f067aa0ba902b7-01",
            "00-xyz3c3f45f447a319c2e1d2f3a4b5c6d-00f067aa0ba902b7-01",
            "00-0193c3f45f447a319c2e1d2f3a4b5c6d-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
