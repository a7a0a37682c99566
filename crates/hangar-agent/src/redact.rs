//! Secret redaction (scenario C6).
//!
//! The worker passes secrets to a task as environment variables and lists
//! their names in `HANGAR_SECRET_NAMES` (comma-separated); the run token
//! (`HANGAR_RUN_TOKEN`) is always a secret. [`Redactor`] replaces every known
//! value with [`REDACTED`] in whole strings, JSON values and session events;
//! [`StreamRedactor`] does it over a byte stream whose chunks may split a
//! value, holding back just enough bytes to see every value whole.
//! [`RedactingSink`] applies it to every event before it reaches the spool.

use crate::event::{EventSink, SinkError};
use hangar_protocol::session::EventBody;
use std::borrow::Cow;
use std::sync::Arc;

/// What a secret value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Secret values shorter than this are not redacted: replacing every `ab`
/// in a transcript would destroy it without protecting anything.
pub const MIN_SECRET_LEN: usize = 4;

/// Known secret values and how to blank them out.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for `values` (empty and too-short values are skipped).
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = values
            .into_iter()
            .map(Into::into)
            .filter(|v| {
                let keep = v.len() >= MIN_SECRET_LEN;
                if !keep && !v.is_empty() {
                    tracing::warn!(
                        len = v.len(),
                        "a secret value is too short to redact; it may appear in transcripts"
                    );
                }
                keep
            })
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// The secrets of this process: the values of the variables named in
    /// `HANGAR_SECRET_NAMES` and of `HANGAR_RUN_TOKEN`.
    pub fn from_env() -> Self {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// [`Redactor::from_env`] with lookups through `env`.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Self {
        let mut values = Vec::new();
        if let Some(names) = env(hangar_protocol::ENV_SECRET_NAMES) {
            for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if let Some(value) = env(name) {
                    values.push(value);
                }
            }
        }
        if let Some(token) = env(hangar_protocol::ENV_RUN_TOKEN) {
            values.push(token);
        }
        Redactor::new(values)
    }

    /// Adds more secret values.
    pub fn with<I, S>(self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Redactor::new(
            self.secrets
                .into_iter()
                .chain(values.into_iter().map(Into::into)),
        )
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Length of the longest secret (0 when none).
    pub fn max_len(&self) -> usize {
        self.secrets.first().map_or(0, String::len)
    }

    /// `text` with every secret replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    /// Redacts `text` in place.
    pub fn redact_in_place(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.redact(text) {
            *text = clean;
        }
    }

    /// Redacts every string (keys included) of a JSON value in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => self.redact_in_place(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let dirty = map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_)));
                if dirty {
                    let entries = std::mem::take(map);
                    for (key, v) in entries {
                        map.insert(self.redact(&key).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.redact_json(v));
            }
            serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            }
        }
    }

    /// An event with every secret replaced, in every text field.
    pub fn redact_event(&self, mut body: EventBody) -> EventBody {
        if self.is_empty() {
            return body;
        }
        match &mut body {
            EventBody::UserMessage { text }
            | EventBody::AssistantMessage { text }
            | EventBody::Reasoning { text } => self.redact_in_place(text),
            EventBody::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                self.redact_in_place(call_id);
                self.redact_in_place(name);
                self.redact_json(arguments);
            }
            EventBody::ToolResult {
                call_id,
                name,
                output,
                is_error: _,
            } => {
                self.redact_in_place(call_id);
                self.redact_in_place(name);
                self.redact_in_place(output);
            }
            EventBody::Status { state: _, message } | EventBody::Error { message } => {
                self.redact_in_place(message);
            }
            EventBody::Artifact {
                artifact_type,
                url,
                path,
                title,
            } => {
                self.redact_in_place(artifact_type);
                for field in [url, path, title].into_iter().flatten() {
                    self.redact_in_place(field);
                }
            }
            EventBody::Usage { model, .. } => self.redact_in_place(model),
        }
        body
    }

    /// A redactor for one byte stream.
    pub fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            redactor: self.clone(),
            pending: Vec::new(),
        }
    }
}

/// Redacts a byte stream whose chunks may split a secret: it holds back the
/// last `max_len - 1` bytes of what it has seen until more arrives or the
/// stream ends, so every secret is seen whole before bytes are released.
#[derive(Debug)]
pub struct StreamRedactor {
    redactor: Redactor,
    pending: Vec<u8>,
}

impl StreamRedactor {
    /// Takes a chunk; returns the bytes that are safe to release.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.redactor.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        self.pending = replace_bytes(&self.pending, &self.redactor.secrets);
        let keep = self.redactor.max_len().saturating_sub(1);
        let release = self.pending.len().saturating_sub(keep);
        self.pending.drain(..release).collect()
    }

    /// Ends the stream; returns what was held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = replace_bytes(&self.pending, &self.redactor.secrets);
        self.pending.clear();
        rest
    }
}

fn replace_bytes(haystack: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    for secret in secrets {
        let needle = secret.as_bytes();
        if out.len() < needle.len() || !out.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                next.extend_from_slice(REDACTED.as_bytes());
                i += needle.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

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
    use serde_json::json;

    #[test]
    fn reads_secret_names_and_the_run_token() {
        let env = |name: &str| match name {
            "HANGAR_SECRET_NAMES" => Some("API_KEY, DB_PASS,,MISSING".to_owned()),
            "API_KEY" => Some("sk-abcdef".to_owned()),
            "DB_PASS" => Some("hunter22".to_owned()),
            "HANGAR_RUN_TOKEN" => Some("hr_token_1".to_owned()),
            _ => None,
        };
        let r = Redactor::from_env_with(env);
        assert_eq!(
            r.redact("k=sk-abcdef p=hunter22 t=hr_token_1 ok"),
            "k=[REDACTED] p=[REDACTED] t=[REDACTED] ok"
        );
        assert_eq!(r.redact("nothing"), Cow::Borrowed("nothing"));
    }

    #[test]
    fn longest_secret_wins_and_short_ones_are_skipped() {
        let r = Redactor::new(["abcd", "abcdefgh", "ab", ""]);
        assert_eq!(r.redact("xabcdefghx abcd ab"), "x[REDACTED]x [REDACTED] ab");
    }

    #[test]
    fn json_and_events() {
        let r = Redactor::new(["s3cr3t-value"]);
        let mut v =
            json!({"cmd": "echo s3cr3t-value", "list": [1, "s3cr3t-value"], "s3cr3t-value": true});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            json!({"cmd": "echo [REDACTED]", "list": [1, "[REDACTED]"], "[REDACTED]": true})
        );
        let e = r.redact_event(EventBody::ToolResult {
            call_id: "c".into(),
            name: "shell".into(),
            output: "got s3cr3t-value".into(),
            is_error: false,
        });
        assert!(matches!(e, EventBody::ToolResult { output, .. } if output == "got [REDACTED]"));
    }

    #[test]
    fn stream_catches_values_split_across_chunks() {
        let secret = "TOPSECRET-42";
        let r = Redactor::new([secret]);
        let text = format!("a{secret}b{secret}{secret}c and more text at the end");
        // Every split into chunks of every size.
        for size in 1..text.len() {
            let mut s = r.stream();
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                out.extend(s.push(chunk));
            }
            out.extend(s.finish());
            let out = String::from_utf8(out).unwrap();
            assert_eq!(
                out, "a[REDACTED]b[REDACTED][REDACTED]c and more text at the end",
                "chunk size {size}"
            );
        }
    }
}
