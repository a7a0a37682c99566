//! The worker's one outbound WebSocket: connect, greet, heartbeat, reconnect.
//!
//! One task owns the socket. Decoded server messages go to the worker core
//! through a bounded inbox; worker messages come from a bounded [`Outbox`] that
//! outlives connections, so reports produced while disconnected are delivered
//! after the reconnect. A message whose write failed is kept and re-sent first
//! on the next connection. (The protocol has no acks: a frame that reached the
//! kernel but not the server before a crash is still lost.)
//!
//! Reconnects use exponential backoff with full jitter, reset only after a
//! connection stayed up for a while, so a server that accepts and immediately
//! closes cannot cause a hot loop.

use crate::config::ApiKey;
use futures::{SinkExt, StreamExt};
use hangar_protocol::WorkerId;
use hangar_protocol::worker::{ServerToWorker, WorkerToServer};
use hangar_protocol::{Envelope, WORKER_WS_PATH};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Capacity of the outbox. Bounded by design: per task at most claimed,
/// started and one terminal report are queued, so this covers hundreds of
/// tasks finishing while the server is unreachable; beyond that senders wait.
pub const OUTBOX_CAPACITY: usize = 1024;
/// Capacity of the inbox from the socket to the worker core.
pub const INBOX_CAPACITY: usize = 64;
/// Limit for writing one frame.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutdown keeps trying to deliver queued reports without a connection.
const FINAL_FLUSH_DEADLINE: Duration = Duration::from_secs(10);
/// How long to wait for the server's close reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `{server_url}/api/v1/selfhosted/worker/ws?worker_id=<id>` URL.
pub fn worker_ws_url(server_url: &str, worker_id: &str) -> Result<Url, hangar_client::ClientError> {
    let base = hangar_client::parse_server_url(server_url)?;
    let mut url = base
        .join(WORKER_WS_PATH.trim_start_matches('/'))
        .map_err(|e| hangar_client::ClientError::BadUrl {
            url: server_url.to_owned(),
            reason: e.to_string(),
        })?;
    url.query_pairs_mut()
        .clear()
        .append_pair("worker_id", worker_id);
    Ok(url)
}

/// Sending side of the outbound queue. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<WorkerToServer>,
}

impl Outbox {
    pub(crate) fn new() -> (Self, mpsc::Receiver<WorkerToServer>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        (Outbox { tx }, rx)
    }

    /// Queues a message; waits when the queue is full.
    pub(crate) async fn send(&self, msg: WorkerToServer) {
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(msg).await {
            // Only after the connection task is gone, i.e. at the very end of shutdown.
            tracing::warn!(kind = %msg.to_envelope().kind, "connection closed; message dropped");
        }
    }
}

/// Produces the frames sent first on every connection (`worker_hello`, …).
pub(crate) type Greeting = Arc<dyn Fn() -> Vec<WorkerToServer> + Send + Sync>;

/// When the worker last heard from the server (any frame), shared by the
/// connection (which sets it) and the worker core (which self-fences on it).
#[derive(Debug, Clone)]
pub(crate) struct LastHeard(Arc<std::sync::Mutex<Instant>>);

impl LastHeard {
    pub(crate) fn now() -> Self {
        LastHeard(Arc::new(std::sync::Mutex::new(Instant::now())))
    }

    fn touch(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Time since the server was last heard from.
    pub(crate) fn elapsed(&self) -> Duration {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub heard: LastHeard,
    pub url: Url,
    pub api_key: ApiKey,
    pub worker_id: WorkerId,
    pub heartbeat_interval: Duration,
    pub read_timeout: Duration,
    pub connect_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub reconnect_reset_after: Duration,
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            ceiling: initial.min(max),
        }
    }

    /// A random delay in `[0, ceiling]`; the ceiling then doubles up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling_ms = u64::try_from(self.ceiling.as_millis()).unwrap_or(u64::MAX);
        let delay = Duration::from_millis(rand::random_range(0..=ceiling_ms));
        self.ceiling = self.ceiling.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the initial delay (after a connection that stayed up).
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.initial.min(self.max);
    }

    /// Straight to the cap (e.g. the key was rejected).
    pub(crate) fn saturate(&mut self) {
        self.ceiling = self.max;
    }

    #[cfg(test)]
    fn ceiling(&self) -> Duration {
        self.ceiling
    }
}

type Socket = hangar_client::WebSocket;

/// How a connection ended.
enum SessionEnd {
    /// Closed on purpose (shutdown); do not reconnect.
    Closed,
    /// Lost; reconnect.
    Lost(String),
}

/// Connection state kept across reconnects.
struct Connection {
    settings: Settings,
    greeting: Greeting,
    outbox: mpsc::Receiver<WorkerToServer>,
    inbox: mpsc::Sender<ServerToWorker>,
    close: CancellationToken,
    /// Messages whose write failed; sent first on the next connection.
    retry: VecDeque<WorkerToServer>,
}

/// Runs the connection until `close` fires, then flushes the outbox and
/// closes the socket with code 1000.
pub(crate) async fn run(
    settings: Settings,
    greeting: Greeting,
    outbox: mpsc::Receiver<WorkerToServer>,
    inbox: mpsc::Sender<ServerToWorker>,
    close: CancellationToken,
) {
    let mut conn = Connection {
        settings,
        greeting,
        outbox,
        inbox,
        close,
        retry: VecDeque::new(),
    };
    conn.run().await;
}

impl Connection {
    async fn run(&mut self) {
        let s = &self.settings;
        let mut backoff = Backoff::new(s.reconnect_initial, s.reconnect_max);
        while !self.close.is_cancelled() {
            let attempt = tokio::select! {
                r = self.connect() => r,
                _ = self.close.cancelled() => break,
            };
            match attempt {
                Ok(ws) => {
                    crate::metrics::get().connected(true);
                    let up_since = Instant::now();
                    tracing::info!(worker_id = %self.settings.worker_id, url = %self.settings.url, "connected to the control plane");
                    let ended = self.session(ws).await;
                    crate::metrics::get().connected(false);
                    match ended {
                        SessionEnd::Closed => return,
                        SessionEnd::Lost(why) => {
                            crate::metrics::get().reconnect("remote_close");
                            tracing::warn!(worker_id = %self.settings.worker_id, reason = %why, "connection lost; reconnecting");
                        }
                    }
                    if up_since.elapsed() >= self.settings.reconnect_reset_after {
                        backoff.reset();
                    }
                }
                Err(ConnectError::Rejected(status, detail)) => {
                    tracing::error!(
                        worker_id = %self.settings.worker_id,
                        status,
                        detail,
                        "the credential was rejected by the server (HTTP {status}); check --api-key / HANGAR_API_KEY \
                         (a worker token from `hangar worker token create`, bound to this worker id); \
                         retrying at the slowest rate"
                    );
                    backoff.saturate();
                    crate::metrics::get().reconnect("dial_failed");
                }
                Err(ConnectError::Other(why)) => {
                    crate::metrics::get().reconnect("dial_failed");
                    tracing::warn!(worker_id = %self.settings.worker_id, url = %self.settings.url, error = %why, "cannot connect to the control plane");
                }
            }
            let delay = backoff.next_delay();
            tracing::debug!(worker_id = %self.settings.worker_id, ?delay, "waiting before reconnecting");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.close.cancelled() => break,
            }
        }
        self.final_flush().await;
    }

    /// Closing while disconnected: keep trying, for a bounded time, to deliver
    /// what is queued (terminal reports matter more than a prompt exit).
    async fn final_flush(&mut self) {
        self.outbox.close();
        while let Ok(m) = self.outbox.try_recv() {
            self.retry.push_back(m);
        }
        let terminal = |m: &WorkerToServer| {
            matches!(
                m,
                WorkerToServer::TaskCompleted(_) | WorkerToServer::TaskFailed(_)
            )
        };
        // Claims, rejections and `worker_draining` mean nothing once the worker
        // is gone; only terminal reports are worth waiting for.
        if !self.retry.iter().any(terminal) {
            return;
        }
        let deadline = Instant::now() + FINAL_FLUSH_DEADLINE;
        let mut backoff =
            Backoff::new(self.settings.reconnect_initial, self.settings.reconnect_max);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Ok(Ok(ws)) = tokio::time::timeout(remaining, self.connect()).await
                && let SessionEnd::Closed = self.session(ws).await
                && self.retry.is_empty()
            {
                return;
            }
            let delay = backoff.next_delay();
            if Instant::now() + delay >= deadline {
                break;
            }
            tokio::time::sleep(delay).await;
        }
        tracing::warn!(
            worker_id = %self.settings.worker_id,
            undelivered = self.retry.len(),
            "shutting down without a connection; some reports were not delivered"
        );
    }

    async fn connect(&self) -> Result<Socket, ConnectError> {
        let s = &self.settings;
        match tokio::time::timeout(
            s.connect_timeout,
            hangar_client::connect_websocket(&s.url, s.api_key.expose()),
        )
        .await
        {
            Err(_) => Err(ConnectError::Other(format!(
                "handshake timed out after {:?}",
                s.connect_timeout
            ))),
            Ok(Ok(ws)) => Ok(ws),
            // Refused at the handshake (the client keeps the status and body).
            Ok(Err(hangar_client::ClientError::Status { status, body })) => {
                if matches!(status, 401 | 403) {
                    Err(ConnectError::Rejected(status, problem_detail(&body)))
                } else {
                    // 409: this worker id is connected elsewhere; retried with backoff.
                    Err(ConnectError::Other(format!(
                        "server answered HTTP {status}: {}",
                        problem_detail(&body)
                    )))
                }
            }
            Ok(Err(e)) => Err(ConnectError::Other(e.to_string())),
        }
    }

    async fn session(&mut self, mut ws: Socket) -> SessionEnd {
        for msg in (self.greeting)() {
            if let Err(e) = write(&mut ws, &msg).await {
                return SessionEnd::Lost(format!("cannot send {}: {e}", msg.to_envelope().kind));
            }
        }
        while let Some(msg) = self.retry.pop_front() {
            if let Err(e) = write(&mut ws, &msg).await {
                self.retry.push_front(msg);
                return SessionEnd::Lost(format!("cannot re-send a queued message: {e}"));
            }
        }
        let heartbeat = self.settings.heartbeat_interval;
        let read_timeout = self.settings.read_timeout;
        let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_read = Instant::now();
        loop {
            tokio::select! {
                biased;
                frame = ws.next() => {
                    last_read = Instant::now();
                    self.settings.heard.touch();
                    match frame {
                        None => return SessionEnd::Lost("the server closed the connection".into()),
                        Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                        Some(Ok(Message::Text(text))) => self.dispatch(text.as_str()).await,
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default();
                            return SessionEnd::Lost(format!("the server closed the connection ({why})"));
                        }
                        Some(Ok(Message::Binary(_))) => {
                            tracing::warn!(worker_id = %self.settings.worker_id, "ignoring a binary frame; the protocol uses text frames");
                        }
                        // The server renews this worker's leases on every frame it reads,
                        // so an answered heartbeat is a renewal.
                        Some(Ok(Message::Pong(_))) => crate::metrics::get().lease_renewed(),
                        // Pings are answered by tungstenite.
                        Some(Ok(_)) => {}
                    }
                }
                msg = self.outbox.recv() => {
                    let Some(msg) = msg else {
                        // Every sender is gone: the worker is finished.
                        close_socket(&mut ws).await;
                        return SessionEnd::Closed;
                    };
                    if let Err(e) = write(&mut ws, &msg).await {
                        self.retry.push_back(msg);
                        return SessionEnd::Lost(format!("write failed: {e}"));
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = timed(ws.send(Message::Ping(Default::default()))).await {
                        return SessionEnd::Lost(format!("ping failed: {e}"));
                    }
                }
                _ = tokio::time::sleep_until(last_read + read_timeout) => {
                    return SessionEnd::Lost(format!("nothing received for {read_timeout:?}"));
                }
                _ = self.close.cancelled() => {
                    while let Ok(msg) = self.outbox.try_recv() {
                        if let Err(e) = write(&mut ws, &msg).await {
                            self.retry.push_back(msg);
                            while let Ok(m) = self.outbox.try_recv() {
                                self.retry.push_back(m);
                            }
                            return SessionEnd::Lost(format!("write failed while closing: {e}"));
                        }
                    }
                    close_socket(&mut ws).await;
                    tracing::info!(worker_id = %self.settings.worker_id, "connection closed");
                    return SessionEnd::Closed;
                }
            }
        }
    }

    /// Decodes one text frame and hands it to the worker core.
    async fn dispatch(&self, text: &str) {
        let env = match Envelope::parse(text) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(worker_id = %self.settings.worker_id, error = %e, "ignoring an undecodable frame");
                return;
            }
        };
        let kind = env.kind.clone();
        match ServerToWorker::from_envelope(env) {
            Ok(Some(msg)) => {
                // Fails only when the core has finished; the frame no longer matters then.
                let _ = self.inbox.send(msg).await;
            }
            Ok(None) => {
                tracing::warn!(worker_id = %self.settings.worker_id, kind = %kind, "ignoring an unknown message type");
            }
            Err(e) => {
                tracing::warn!(worker_id = %self.settings.worker_id, kind = %kind, error = %e, "ignoring a message with an invalid payload");
            }
        }
    }
}

enum ConnectError {
    /// 401/403: the credential was refused (status, the server's reason).
    Rejected(u16, String),
    Other(String),
}

/// The `detail` of a problem+json refusal, or its text, shortened.
fn problem_detail(body: &str) -> String {
    let detail = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    detail.chars().take(300).collect()
}

async fn timed<F>(fut: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), tungstenite::Error>>,
{
    match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("write timed out after {WRITE_TIMEOUT:?}")),
    }
}

async fn write(ws: &mut Socket, msg: &WorkerToServer) -> Result<(), String> {
    let text = msg.to_envelope().to_text();
    timed(ws.send(Message::text(text))).await
}

/// Sends close 1000 and waits briefly for the server's reply.
async fn close_socket(ws: &mut Socket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "worker shutting down".into(),
    };
    if timed(ws.send(Message::Close(Some(frame)))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_path_and_worker_id() {
        let url = worker_ws_url("http://127.0.0.1:7420", "w 1").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:7420/api/v1/selfhosted/worker/ws?worker_id=w+1"
        );
        let url = worker_ws_url("https://h.example/prefix/", "w").unwrap();
        assert_eq!(
            url.as_str(),
            "https://h.example/prefix/api/v1/selfhosted/worker/ws?worker_id=w"
        );
    }

    #[test]
    fn backoff_doubles_to_cap_with_full_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let before = b.ceiling();
            let d = b.next_delay();
            assert!(d <= before, "{d:?} > {before:?}");
            ceilings.push(before.as_secs());
        }
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
        b.saturate();
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let delays: std::collections::BTreeSet<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "delays are not jittered: {delays:?}");
    }
}
