//! Task output in the worker's log, the same for every backend that sees it
//! (direct: the process pipes; docker: the container's log stream).
//!
//! Each line becomes one `debug` event labelled with the run, the execution
//! and its source (`agent`, `agent-stderr`, `setup`, …); output may contain
//! secrets, so never at info. A line longer than [`MAX_LOG_LINE`] is cut
//! there (`truncated = true`), on a character boundary.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest task output line logged; the rest of a longer line is dropped.
pub(crate) const MAX_LOG_LINE: usize = 16 * 1024;

/// Labels attached to one stream of captured output.
#[derive(Debug, Clone)]
pub(crate) struct OutputLabels {
    pub task_id: String,
    pub execution_id: String,
    pub source: &'static str,
}

impl OutputLabels {
    /// The same execution, another source.
    pub fn with_source(&self, source: &'static str) -> OutputLabels {
        OutputLabels {
            source,
            ..self.clone()
        }
    }
}

/// The label of a source's standard error (`agent` → `agent-stderr`).
pub(crate) fn stderr_label(source: &'static str) -> &'static str {
    match source {
        "agent" => "agent-stderr",
        "setup" => "setup-stderr",
        "teardown" => "teardown-stderr",
        _ => "stderr",
    }
}

/// Assembles bytes into lines and logs each complete one.
#[derive(Debug)]
pub(crate) struct LineLog {
    labels: OutputLabels,
    line: Vec<u8>,
    truncated: bool,
}

impl LineLog {
    pub fn new(labels: OutputLabels) -> LineLog {
        LineLog {
            labels,
            line: Vec::new(),
            truncated: false,
        }
    }

    /// Adds `bytes`, logging every line they complete; returns how many
    /// bytes were consumed (up to and including the first newline when
    /// `one_line`, else all).
    fn push(&mut self, bytes: &[u8], one_line: bool) -> usize {
        let mut rest = bytes;
        let mut consumed = 0;
        loop {
            let (chunk, used, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], i + 1, true),
                None => (rest, rest.len(), false),
            };
            let room = MAX_LOG_LINE.saturating_sub(self.line.len());
            if chunk.len() > room {
                self.truncated = true;
            }
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            consumed += used;
            rest = &rest[used..];
            if complete {
                self.emit();
            }
            if !complete || one_line || rest.is_empty() {
                return consumed;
            }
        }
    }

    /// Adds a chunk of output, logging every line it completes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.push(bytes, false);
    }

    /// Logs what is left of an unterminated last line.
    pub fn finish(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }

    fn emit(&mut self) {
        let mut end = self.line.len();
        // A cut in the middle of a character: drop its partial bytes.
        if self.truncated {
            while end > 0 && std::str::from_utf8(&self.line[..end]).is_err() {
                end -= 1;
            }
        }
        let text = String::from_utf8_lossy(&self.line[..end]);
        let text = text.trim_end_matches('\r');
        tracing::debug!(
            task_id = %self.labels.task_id,
            execution_id = %self.labels.execution_id,
            source = self.labels.source,
            truncated = self.truncated,
            "{text}"
        );
        self.line.clear();
        self.truncated = false;
    }
}

/// Forwards a stream line by line into the worker's log until it ends.
pub(crate) async fn pump_lines<R: AsyncRead + Unpin>(reader: R, labels: OutputLabels) {
    let mut reader = BufReader::new(reader);
    let mut log = LineLog::new(labels);
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let consumed = log.push(buf, true);
        reader.consume(consumed);
    }
    log.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> LineLog {
        LineLog::new(OutputLabels {
            task_id: "run".into(),
            execution_id: "exec".into(),
            source: "agent",
        })
    }

    #[test]
    fn lines_are_assembled_across_chunks_and_long_ones_cut() {
        let mut l = log();
        l.feed(b"hel");
        assert_eq!(l.line, b"hel");
        l.feed(b"lo\nwor");
        assert_eq!(l.line, b"wor");
        l.finish();
        assert!(l.line.is_empty());
        let long = vec![b'x'; MAX_LOG_LINE + 10];
        l.feed(&long);
        assert_eq!(l.line.len(), MAX_LOG_LINE);
        assert!(l.truncated);
        l.feed(b"\n");
        assert!(l.line.is_empty() && !l.truncated);
    }

    #[test]
    fn stderr_labels() {
        assert_eq!(stderr_label("agent"), "agent-stderr");
        assert_eq!(stderr_label("setup"), "setup-stderr");
        assert_eq!(stderr_label("other"), "stderr");
    }
}
