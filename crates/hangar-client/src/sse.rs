//! Reading Server-Sent Events: the live session stream
//! (`GET /api/v1/agent/runs/{id}/events`).

use crate::{Client, ClientError};
use futures::StreamExt;
use futures::stream::BoxStream;

/// One event of an SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` (the resume point to send as `Last-Event-ID`), if any.
    pub id: Option<String>,
    /// `event:` (`message` when absent).
    pub event: String,
    /// `data:` lines, joined with `\n`.
    pub data: String,
}

/// An open SSE response, read event by event.
pub struct SseStream {
    body: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pending: SseEvent,
    has_data: bool,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream").finish_non_exhaustive()
    }
}

fn empty_event() -> SseEvent {
    SseEvent {
        id: None,
        event: String::new(),
        data: String::new(),
    }
}

impl SseStream {
    /// Reads `resp`'s body as SSE.
    pub fn new(resp: reqwest::Response) -> Self {
        SseStream {
            body: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
            pending: empty_event(),
            has_data: false,
        }
    }

    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                    return Ok(Some(event));
                }
            }
            match self.body.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => return Ok(None),
            }
        }
    }

    /// Feeds one line; a blank line completes an event.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_data && self.pending.event.is_empty() {
                self.pending = empty_event();
                return None;
            }
            let mut event = std::mem::replace(&mut self.pending, empty_event());
            self.has_data = false;
            if event.event.is_empty() {
                event.event = "message".to_owned();
            }
            return Some(event);
        }
        if line.starts_with(':') {
            return None; // comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.pending.id = Some(value.to_owned()),
            "event" => self.pending.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

impl Client {
    /// Opens `GET /api/v1/agent/runs/{id}/events`: replays the session after
    /// `last_event_id` (from the start when `None`) and, with `follow`, stays
    /// open until the run ends.
    pub async fn run_events(
        &self,
        run_id: &str,
        last_event_id: Option<&str>,
        follow: bool,
    ) -> Result<SseStream, ClientError> {
        let url = self.url(&format!(
            "api/v1/agent/runs/{}/events?follow={follow}",
            crate::encode(run_id)
        ))?;
        let mut req = self.http.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = self.send_checked(req).await?;
        Ok(SseStream::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_make_events_and_comments_are_skipped() {
        let mut s = SseStream {
            body: futures::stream::empty().boxed(),
            buf: Vec::new(),
            pending: empty_event(),
            has_data: false,
        };
        assert_eq!(s.line(": keep-alive"), None);
        assert_eq!(s.line(""), None);
        assert_eq!(s.line("id: 1.2"), None);
        assert_eq!(s.line("event: session"), None);
        assert_eq!(s.line("data: {\"a\":"), None);
        assert_eq!(s.line("data: 1}"), None);
        let e = s.line("").unwrap();
        assert_eq!(e.id.as_deref(), Some("1.2"));
        assert_eq!(e.event, "session");
        assert_eq!(e.data, "{\"a\":\n1}");
    }
}
