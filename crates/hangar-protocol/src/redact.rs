//! Secret redaction (scenarios C6 and S10), shared by every process that
//! handles a task's secrets: the agent (transcript, tool output), the worker
//! (failure messages, its log) and anything that later posts elsewhere.
//!
//! The worker passes secrets to a task as environment variables and lists
//! their names in `HANGAR_SECRET_NAMES` (comma-separated); the run token
//! (`HANGAR_RUN_TOKEN`) is always a secret. [`Redactor`] replaces every known
//! value with [`REDACTED`] in whole strings, JSON values and session events;
//! [`StreamRedactor`] does it over a byte stream whose chunks may split a
//! value, holding back just enough bytes to see every value whole.
//! [`LogSecrets`] is the set of values a process's log writer masks
//! ([`RedactingWriter`]): tasks register theirs while they run.

use crate::session::EventBody;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

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
    /// Non-empty values left out for being shorter than [`MIN_SECRET_LEN`].
    too_short: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .field("too_short", &self.too_short)
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
            .filter(|v: &String| !v.is_empty())
            .collect();
        let before = secrets.len();
        secrets.retain(|v| v.len() >= MIN_SECRET_LEN);
        let too_short = before - secrets.len();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets, too_short }
    }

    /// The secrets of this process: the values of the variables named in
    /// `HANGAR_SECRET_NAMES` and of `HANGAR_RUN_TOKEN`.
    pub fn from_env() -> Self {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// [`Redactor::from_env`] with lookups through `env`.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Self {
        let mut values = Vec::new();
        if let Some(names) = env(crate::ENV_SECRET_NAMES) {
            for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if let Some(value) = env(name) {
                    values.push(value);
                }
            }
        }
        if let Some(token) = env(crate::ENV_RUN_TOKEN) {
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

    /// How many non-empty values were too short to redact (callers warn:
    /// such a value may appear in transcripts and logs).
    pub fn too_short(&self) -> usize {
        self.too_short
    }

    /// The values, longest first.
    pub fn values(&self) -> &[String] {
        &self.secrets
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
            EventBody::Status { message, .. } | EventBody::Error { message } => {
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

/// The secret values a process's log output must never show, shared between
/// whoever learns them (the worker, per task) and the log writer
/// ([`LogSecrets::writer`]). Cloning shares the set.
#[derive(Clone, Default)]
pub struct LogSecrets {
    inner: Arc<RwLock<LogSecretsInner>>,
}

#[derive(Default)]
struct LogSecretsInner {
    next: u64,
    by_owner: BTreeMap<u64, Vec<String>>,
    /// Every registered value, rebuilt on each change (reads are the hot path).
    all: Redactor,
}

impl std::fmt::Debug for LogSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("LogSecrets")
            .field("owners", &inner.by_owner.len())
            .finish()
    }
}

impl LogSecrets {
    /// Masks `values` in the log until the returned guard is dropped.
    pub fn register<I, S>(&self, values: I) -> LogSecretsGuard
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        // A poisoned lock only means a panic elsewhere mid-update of plain
        // collections; the sets are still usable.
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let id = inner.next;
        inner.next += 1;
        inner.by_owner.insert(id, values);
        inner.rebuild();
        LogSecretsGuard {
            set: self.clone(),
            id,
        }
    }

    /// `text` with every registered value replaced.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match inner.all.redact(text) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(s) => Cow::Owned(s),
        }
    }

    /// `bytes` with every registered value replaced.
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if inner.all.is_empty() {
            return bytes.to_vec();
        }
        replace_bytes(bytes, &inner.all.secrets)
    }

    /// A writer that masks registered values in everything written to
    /// `inner`. Log formatters write one whole record per call, so a value
    /// is never split across writes.
    pub fn writer<W: std::io::Write>(&self, inner: W) -> RedactingWriter<W> {
        RedactingWriter {
            secrets: self.clone(),
            inner,
        }
    }

    fn remove(&self, id: u64) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.by_owner.remove(&id).is_some() {
            inner.rebuild();
        }
    }
}

impl LogSecretsInner {
    fn rebuild(&mut self) {
        self.all = Redactor::new(self.by_owner.values().flatten().cloned());
    }
}

/// Keeps values registered with [`LogSecrets::register`]; dropping it removes them.
#[derive(Debug)]
pub struct LogSecretsGuard {
    set: LogSecrets,
    id: u64,
}

impl Drop for LogSecretsGuard {
    fn drop(&mut self) {
        self.set.remove(self.id);
    }
}

/// See [`LogSecrets::writer`].
#[derive(Debug)]
pub struct RedactingWriter<W> {
    secrets: LogSecrets,
    inner: W,
}

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let clean = self.secrets.redact_bytes(buf);
        self.inner.write_all(&clean)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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

    #[test]
    fn log_secrets_mask_while_registered() {
        let set = LogSecrets::default();
        let mut out = Vec::new();
        {
            let _guard = set.register(["s3cr3t-log-value"]);
            let mut w = set.writer(&mut out);
            std::io::Write::write_all(&mut w, b"line with s3cr3t-log-value\n").unwrap();
        }
        assert_eq!(String::from_utf8_lossy(&out), "line with [REDACTED]\n");
        // Dropped: no longer masked (and nothing else is).
        assert_eq!(set.redact("s3cr3t-log-value"), "s3cr3t-log-value");
    }

    #[test]
    fn too_short_values_are_counted() {
        let r = Redactor::new(["abc", "", "abcdef"]);
        assert_eq!(r.too_short(), 1);
        assert_eq!(r.values(), ["abcdef"]);
    }
}
