//! HTTP plumbing shared by the providers: sending with a timeout, turning
//! error statuses into [`LlmError`], and driving an SSE body through a
//! translator into a [`ChunkStream`].

use crate::retry::Failure;
use crate::{ChunkStream, LlmError};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::StreamExt;
use hangar_protocol::llm::ChatChunk;
use std::collections::VecDeque;
use std::time::Duration;

/// Error bodies are cut to this many bytes: enough for the provider's
/// message, not enough to flood a log or a run's status.
const MAX_ERROR_BODY: usize = 2048;

/// Builds the HTTP client a provider keeps for its lifetime, for requests
/// to `endpoint` (no TLS roots for a plain-HTTP one: [`hangar_client::http_builder`]).
pub(crate) fn client(endpoint: &str) -> Result<reqwest::Client, LlmError> {
    hangar_client::http_builder(endpoint, "configure the endpoint's https:// URL directly")
        .build()
        .map_err(|e| LlmError::Transport(format!("building HTTP client: {}", chain(&e))))
}

/// Sends `request` and waits for the response head, within `timeout`.
/// Non-2xx statuses become [`LlmError::Status`] with the (truncated) body and
/// the provider's `Retry-After`.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, Failure> {
    let response = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => return Err(LlmError::Timeout(timeout).into()),
        Ok(Err(e)) => return Err(transport("sending request", &e).into()),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match tokio::time::timeout(timeout, response.bytes()).await {
        Ok(Ok(bytes)) => truncate(&String::from_utf8_lossy(&bytes)),
        Ok(Err(e)) => format!("(body unreadable: {})", chain(&e)),
        Err(_) => "(body timed out)".to_owned(),
    };
    let code = status.as_u16();
    Err(Failure {
        error: LlmError::Status {
            status: code,
            body,
            retryable: code == 429 || status.is_server_error(),
        },
        retry_after,
    })
}

/// Whether the response is an SSE stream (as opposed to one JSON document).
pub(crate) fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Reads a whole JSON body within `timeout`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    timeout: Duration,
) -> Result<T, LlmError> {
    let bytes = match tokio::time::timeout(timeout, response.bytes()).await {
        Err(_) => return Err(LlmError::Timeout(timeout)),
        Ok(Err(e)) => return Err(transport("reading response", &e)),
        Ok(Ok(bytes)) => bytes,
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        LlmError::Malformed(format!(
            "{e}; body: {}",
            truncate(&String::from_utf8_lossy(&bytes))
        ))
    })
}

/// Cuts `text` to at most [`MAX_ERROR_BODY`] bytes on a char boundary.
pub(crate) fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_BODY {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_BODY;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// A transport error with its whole source chain: reqwest's own message
/// ("error sending request") says little without it.
pub(crate) fn transport(what: &str, error: &reqwest::Error) -> LlmError {
    if error.is_timeout() {
        return LlmError::Transport(format!("{what}: timed out: {}", chain(error)));
    }
    LlmError::Transport(format!("{what}: {}", chain(error)))
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Whether the SSE stream should keep going after an event.
#[derive(Debug)]
pub(crate) enum Flow {
    /// Read the next event.
    Continue,
    /// The response is complete; stop reading.
    Done,
}

/// Turns one provider's SSE events into OpenAI chunks.
pub(crate) trait SseTranslator: Send + 'static {
    /// Handles one event, pushing any chunks it yields to `out`.
    fn event(&mut self, event: Event, out: &mut VecDeque<ChatChunk>) -> Result<Flow, LlmError>;
    /// The body ended without a [`Flow::Done`]: push trailing chunks, or
    /// fail if the response is incomplete.
    fn end(&mut self, out: &mut VecDeque<ChatChunk>) -> Result<(), LlmError>;
}

struct SseState<T> {
    events: futures::stream::BoxStream<'static, Result<Event, EventStreamError<reqwest::Error>>>,
    translator: T,
    pending: VecDeque<ChatChunk>,
    finished: bool,
    idle: Duration,
}

/// Drives an SSE response through `translator`. Each wait for the next
/// event is bounded by `idle`; a read error or an incomplete body ends the
/// stream with an error item.
pub(crate) fn sse_stream<T: SseTranslator>(
    response: reqwest::Response,
    idle: Duration,
    translator: T,
) -> ChunkStream {
    let state = SseState {
        events: response.bytes_stream().eventsource().boxed(),
        translator,
        pending: VecDeque::new(),
        finished: false,
        idle,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(chunk) = state.pending.pop_front() {
                return Some((Ok(chunk), state));
            }
            if state.finished {
                return None;
            }
            let next = tokio::time::timeout(state.idle, state.events.next()).await;
            let result = match next {
                Err(_) => Err(LlmError::Timeout(state.idle)),
                Ok(None) => {
                    state.finished = true;
                    state.translator.end(&mut state.pending)
                }
                Ok(Some(Err(e))) => Err(match e {
                    EventStreamError::Transport(e) => {
                        transport("stream ended early while reading", &e)
                    }
                    EventStreamError::Utf8(e) => LlmError::Malformed(format!("SSE body: {e}")),
                    EventStreamError::Parser(e) => LlmError::Malformed(format!("SSE body: {e}")),
                }),
                Ok(Some(Ok(event))) => match state.translator.event(event, &mut state.pending) {
                    Ok(Flow::Continue) => Ok(()),
                    Ok(Flow::Done) => {
                        state.finished = true;
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(error) = result {
                // `pending` is empty here: it is drained before each read.
                state.finished = true;
                return Some((Err(error), state));
            }
        }
    }))
}

/// Seconds since the Unix epoch, for the `created` field of chunks.
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_a_char_boundary() {
        let short = "short body";
        assert_eq!(truncate(short), short);
        let long = "é".repeat(2000);
        let cut = truncate(&long);
        assert!(cut.len() < 2100);
        assert!(cut.ends_with("(4000 bytes in all)"));
    }
}
