//! Streaming answers: watches (newline-delimited events, bookmarks, 410
//! Gone, selectors applied to transitions) and pod logs (`container`,
//! `tailLines`, `limitBytes`, `follow`).

use super::{ApiError, Req, field_selector, label_selector};
use crate::fake_kube::Inner;
use crate::fake_kube::store::{self, ChangeType, FieldSelector, LabelSelector, Res};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// `GET pods/{name}/log`.
pub(super) fn logs(req: &Req, ns: &str, name: &str) -> Result<Response, ApiError> {
    let pods = store::resource("", "pods").ok_or_else(ApiError::no_route)?;
    let (pod, uid, container, bytes) = {
        let st = req.inner.lock();
        let pod = st
            .get("pods", ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(pods, name))?;
        let container = log_container(&pod, req.params.get("container"))?;
        let uid = pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let bytes = st.logs.get(&(uid.clone(), container.clone())).cloned();
        (pod, uid, container, bytes)
    };
    if req.params.flag("previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let state = container_state(&pod, &container);
    let waiting = if state.is_null() {
        Some("ContainerCreating")
    } else {
        state["waiting"]["reason"].as_str()
    };
    if let Some(reason) = waiting
        && bytes.is_none()
    {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    let tail = req.params.int("tailLines")?;
    let limit = req.params.int("limitBytes")?;
    let shape = move |bytes: &[u8]| -> Vec<u8> {
        let mut out = bytes.to_vec();
        if let Some(n) = tail {
            out = tail_lines(&out, n.max(0) as usize);
        }
        if let Some(limit) = limit {
            out.truncate(limit.max(0) as usize);
        }
        out
    };
    if !req.params.flag("follow") {
        let body = shape(&bytes.unwrap_or_default());
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response());
    }
    // follow: stream what is there, then new output until the container ends.
    let inner = req.inner.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let key = (uid, container.clone());
    let (ns, name) = (ns.to_owned(), name.to_owned());
    inner.clone().spawn(async move {
        let mut sent = 0usize;
        let mut first = true;
        let mut budget = limit.map(|l| l.max(0) as usize);
        loop {
            let (chunk, done) = {
                let st = inner.lock();
                let all = st.logs.get(&key).cloned().unwrap_or_default();
                let done = match st.get("pods", &ns, &name) {
                    Some(pod) => !container_state(pod, &key.1)["terminated"].is_null(),
                    None => true,
                };
                let chunk = if first {
                    let mut c = all.clone();
                    if let Some(n) = tail {
                        c = tail_lines(&c, n.max(0) as usize);
                    }
                    c
                } else {
                    all.get(sent..).map(<[u8]>::to_vec).unwrap_or_default()
                };
                sent = all.len();
                (chunk, done)
            };
            first = false;
            let mut chunk = chunk;
            if let Some(b) = budget.as_mut() {
                chunk.truncate(*b);
                *b -= chunk.len();
            }
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if done || budget == Some(0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(receiver_stream(rx)),
    )
        .into_response())
}

/// The container a log request means, or the API server's 400.
fn log_container(pod: &Value, asked: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let regular = names("containers");
    let init = names("initContainers");
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if regular.iter().chain(&init).any(|n| n == c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if regular.len() == 1 => Ok(regular[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                regular.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// The `state` of container `name` in the pod's status (init or regular).
fn container_state(pod: &Value, name: &str) -> Value {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][*k].as_array())
        .flatten()
        .find(|s| s["name"].as_str() == Some(name))
        .map(|s| s["state"].clone())
        .unwrap_or(Value::Null)
}

fn tail_lines(bytes: &[u8], n: usize) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut count = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return bytes[i + 1..].to_vec();
            }
        }
    }
    bytes.to_vec()
}

fn receiver_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

/// Counts an open watch for as long as it lives.
struct WatchGuard(Arc<Inner>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn expired_line(rv: u64, current: u64) -> Bytes {
    watch_line(
        "ERROR",
        &ApiError::gone(format!("too old resource version: {rv} ({current})")).status(),
    )
}

/// `?watch=true`: newline-delimited watch events.
pub(super) fn watch_response(
    req: &Req,
    res: &'static Res,
    ns: Option<String>,
) -> Result<Response, ApiError> {
    let filter = WatchFilter {
        labels: label_selector(&req.params)?,
        fields: field_selector(res, &req.params)?,
        ns,
    };
    let timeout = req.params.int("timeoutSeconds")?.unwrap_or(1800).max(0) as u64;
    let bookmarks = req.params.flag("allowWatchBookmarks");
    let send_initial = req.params.flag("sendInitialEvents");
    let rv_param = resource_version_param(req)?;
    let inner = req.inner.clone();
    let changed = inner.changed.subscribe();
    let close = inner.close.subscribe();
    let expire = inner.expire.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let (initial, cursor, too_old) = watch_start(&inner, res, &filter, rv_param, send_initial);
    inner.open_watches.fetch_add(1, Ordering::SeqCst);
    let guard = WatchGuard(inner.clone());
    let bookmark_every = *inner
        .bookmark_every
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let task = Watch {
        inner: inner.clone(),
        res,
        filter,
        tx,
        cursor,
        timeout,
        bookmarks,
        bookmark_every,
        changed,
        close,
        expire,
    };
    inner.spawn(task.run(guard, initial, too_old));
    Ok(stream_response(rx))
}

/// The `resourceVersion` parameter of a watch, if set.
fn resource_version_param(req: &Req) -> Result<Option<u64>, ApiError> {
    req.params
        .get("resourceVersion")
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r:?}")))
        })
        .transpose()
}

/// The events a new watch starts with (the current objects, and the
/// initial-events bookmark, when it starts from now), the resource version
/// it goes on from, and the 410 line when that version is compacted.
fn watch_start(
    inner: &Inner,
    res: &'static Res,
    filter: &WatchFilter,
    rv_param: Option<u64>,
    send_initial: bool,
) -> (Vec<Bytes>, u64, Option<Bytes>) {
    let st = inner.lock();
    let mut initial = Vec::new();
    let from_now = matches!(rv_param, None | Some(0)) || send_initial;
    if from_now {
        for o in st.list(res.plural, filter.ns.as_deref()) {
            if filter.matches(o) {
                initial.push(watch_line("ADDED", o));
            }
        }
        if send_initial {
            initial.push(bookmark_line(res, st.rv, true));
        }
        return (initial, st.rv, None);
    }
    let rv = rv_param.unwrap_or_default();
    if rv < st.compacted {
        (initial, rv, Some(expired_line(rv, st.rv)))
    } else {
        (initial, rv.min(st.rv), None)
    }
}

/// A BOOKMARK event at `rv`, marking the end of the initial events when
/// `initial_end`.
fn bookmark_line(res: &Res, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({
            "kind": res.kind,
            "apiVersion": res.api_version(),
            "metadata": metadata,
        }),
    )
}

/// The 200 answer streaming a watch's lines as they come.
fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(receiver_stream(rx)),
    )
        .into_response()
}

/// Which objects a watcher sees: those in its namespace (all when `None`)
/// that match its selectors.
struct WatchFilter {
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    /// Whether the watcher sees object `o`.
    fn matches(&self, o: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
            && self.labels.matches(&o["metadata"]["labels"])
            && self.fields.matches(o)
    }
}

/// A watch's task: what it sends to whom, and how far it has got.
struct Watch {
    inner: Arc<Inner>,
    res: &'static Res,
    filter: WatchFilter,
    tx: mpsc::Sender<Bytes>,
    /// The resource version sent up to.
    cursor: u64,
    /// `timeoutSeconds`.
    timeout: u64,
    /// `allowWatchBookmarks`.
    bookmarks: bool,
    bookmark_every: Duration,
    changed: watch::Receiver<u64>,
    close: watch::Receiver<u64>,
    expire: watch::Receiver<u64>,
}

impl Watch {
    /// Sends the `initial` lines (or the `too_old` error), then each change
    /// and bookmark until the watch ends, times out or expires.
    async fn run(mut self, guard: WatchGuard, initial: Vec<Bytes>, too_old: Option<Bytes>) {
        let _guard = guard;
        if !self.send_all(initial).await {
            return;
        }
        if let Some(line) = too_old {
            let _ = self.tx.send(line).await;
            return;
        }
        let deadline = tokio::time::sleep(Duration::from_secs(self.timeout));
        tokio::pin!(deadline);
        let mut bookmark =
            tokio::time::interval(self.bookmark_every.max(Duration::from_millis(10)));
        bookmark.tick().await;
        loop {
            let (lines, gone) = self.pending();
            if !self.send_all(lines).await {
                return;
            }
            if let Some(line) = gone {
                let _ = self.tx.send(line).await;
                return;
            }
            tokio::select! {
                _ = self.changed.changed() => {}
                _ = self.close.changed() => return,
                _ = self.expire.changed() => {
                    let current = self.inner.lock().rv;
                    let _ = self.tx.send(expired_line(self.cursor, current)).await;
                    return;
                }
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = bookmark.tick(), if self.bookmarks => {
                    let line = bookmark_line(self.res, self.cursor, false);
                    if self.tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Sends `lines` in order; answers false once the watcher is gone.
    async fn send_all(&self, lines: Vec<Bytes>) -> bool {
        for line in lines {
            if self.tx.send(line).await.is_err() {
                return false;
            }
        }
        true
    }

    /// The lines for the changes past the cursor (which moves to the
    /// current version), or the 410 line when the cursor is compacted.
    fn pending(&mut self) -> (Vec<Bytes>, Option<Bytes>) {
        let st = self.inner.lock();
        if self.cursor < st.compacted {
            return (Vec::new(), Some(expired_line(self.cursor, st.rv)));
        }
        let matches = |o: &Value| self.filter.matches(o);
        let mut lines = Vec::new();
        for change in st.changes.iter().filter(|c| c.rv > self.cursor) {
            if change.resource == self.res.plural
                && let Some(kind) = watch_type(change, &matches)
            {
                lines.push(watch_line(kind, &change.object));
            }
        }
        self.cursor = self.cursor.max(st.rv);
        (lines, None)
    }
}

/// The event a watcher with selector `matches` sees for `change`, if any
/// (an object that stops matching is DELETED for it, one that starts
/// matching is ADDED).
fn watch_type(change: &store::Change, matches: &impl Fn(&Value) -> bool) -> Option<&'static str> {
    let now = matches(&change.object);
    match change.kind {
        ChangeType::Added | ChangeType::Deleted => now.then(|| change.kind.as_str()),
        ChangeType::Modified => {
            let before = change.previous.as_ref().is_some_and(matches);
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (true, false) => Some("DELETED"),
                (false, true) => Some("ADDED"),
                (false, false) => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_keeps_the_last_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n".to_vec());
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c".to_vec());
        assert_eq!(tail_lines(b"a\n", 5), b"a\n".to_vec());
    }
}
