//! Shared bench helpers: percentiles and a null sink.

#![allow(dead_code)]

use hangar_agent::{EventBody, EventSink, SinkError};
use std::time::Duration;

/// Discards events (the agent's own work up to the sink is still measured).
pub struct NullSink;

#[async_trait::async_trait]
impl EventSink for NullSink {
    async fn emit(&self, event: EventBody) -> Result<(), SinkError> {
        std::hint::black_box(event);
        Ok(())
    }
}

/// The `p`-th percentile (0–100) of `samples` (sorted in place).
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// `p50 … p99 …` in a readable unit.
pub fn summary(samples: &mut [Duration]) -> String {
    let p50 = percentile(samples, 50.0);
    let p99 = percentile(samples, 99.0);
    format!("p50 {p50:?}  p99 {p99:?}  (n={})", samples.len())
}
