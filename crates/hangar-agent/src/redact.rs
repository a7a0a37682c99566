//! Secret redaction of the agent's session events (scenario C6).
//!
//! The redaction itself ([`Redactor`], [`StreamRedactor`]) lives in
//! `hangar_protocol::redact`, shared with the worker, so every process masks
//! the same values the same way; this module adds [`RedactingSink`], which
//! applies it to every event before it reaches the spool.

use crate::event::{EventSink, SinkError};
use hangar_protocol::session::EventBody;
use std::sync::Arc;

pub use hangar_protocol::redact::{MIN_SECRET_LEN, REDACTED, Redactor, StreamRedactor};

/// An [`EventSink`] that redacts every event before passing it on.
#[derive(Debug)]
pub struct RedactingSink<S> {
    inner: S,
    redactor: Arc<Redactor>,
}

impl<S> RedactingSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, redactor: Arc<Redactor>) -> Self {
        RedactingSink { inner, redactor }
    }

    /// The wrapped sink.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait::async_trait]
impl<S: EventSink> EventSink for RedactingSink<S> {
    async fn emit(&self, event: EventBody) -> Result<(), SinkError> {
        self.inner.emit(self.redactor.redact_event(event)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Collect(std::sync::Mutex<Vec<EventBody>>);

    #[async_trait::async_trait]
    impl EventSink for Collect {
        async fn emit(&self, event: EventBody) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(event);
            Ok(())
        }
    }

    #[tokio::test]
    async fn sink_redacts_every_event() {
        let sink = RedactingSink::new(
            Collect::default(),
            Arc::new(Redactor::new(["s3cr3t-value"])),
        );
        sink.emit(EventBody::AssistantMessage {
            text: "it is s3cr3t-value".into(),
        })
        .await
        .unwrap();
        let got = sink.into_inner().0.into_inner().unwrap();
        assert!(
            matches!(&got[0], EventBody::AssistantMessage { text } if text == "it is [REDACTED]"),
            "{got:?}"
        );
    }
}
