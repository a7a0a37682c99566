//! Where the loop's events go.

use hangar_protocol::session::EventBody;

/// Why an event could not be recorded. Either way the run cannot continue:
/// an event that is not recorded would be silently missing from the transcript.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing the event to durable storage (the spool) failed.
    #[error("cannot spool event: {0}")]
    Spool(#[source] std::io::Error),
    /// The sink has shut down.
    #[error("the event sink is closed")]
    Closed,
}

/// Receives every event the agent produces, in order.
///
/// The managed runner's sink is the [`SessionStream`](crate::SessionStream),
/// which assigns sequence numbers and spools; an unmanaged run prints instead.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync {
    /// Records one event. Returns once the event is durable (for sinks that
    /// persist); an error ends the run.
    async fn emit(&self, event: EventBody) -> Result<(), SinkError>;
}

#[async_trait::async_trait]
impl<T: EventSink + ?Sized> EventSink for &T {
    async fn emit(&self, event: EventBody) -> Result<(), SinkError> {
        (**self).emit(event).await
    }
}
