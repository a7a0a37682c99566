//! The durable session stream (PROTOCOL.md §4).
//!
//! [`SessionStream`] is an [`EventSink`] backed by one task that owns the
//! WebSocket. Emitting an event assigns the next `seq` (from 1) and appends
//! it to the spool file (one `write`, so it survives a crash of the agent
//! process) before `emit` returns; the task then takes every event queued so
//! far, fsyncs the spool once for all of them (group commit) and only then
//! sends them. So nothing reaches the server before it is on disk, and the
//! agent loop never waits for an fsync (a host crash can lose only events
//! that were never sent). The server acknowledges committed events
//! (`ack {seq}`); after every (re)connect it first sends its highest committed
//! seq, and the task resends every spooled event above it, in order. So a
//! dropped connection loses nothing, and nothing is sent twice on one
//! connection. Reconnects back off from 100 ms to 5 s with jitter.
//!
//! The same socket carries `followup` (queued for the loop) and `cancel`
//! (fires the run's cancellation token).

mod backoff;
mod spool;

use crate::error::AgentError;
use crate::event::{EventSink, SinkError};
use backoff::Backoff;
use futures::{SinkExt, StreamExt};
use hangar_client::{Client, WebSocket};
use hangar_protocol::session::{
    AgentToServer, EventBody, Followup, FollowupAck, ServerToAgent, SessionEvent,
};
use hangar_protocol::{Envelope, Timestamp};
use spool::Spool;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use backoff::{BACKOFF_MAX, BACKOFF_MIN};

/// Follow-ups queued for the loop; more are dropped with a warning (the loop
/// takes them at every turn boundary, so this only fills if a person floods).
pub const FOLLOWUP_CAPACITY: usize = 64;
/// Bound on one connection attempt (TCP + TLS + WebSocket handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server's first `ack` after connecting.
pub const INITIAL_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Ping period on an idle socket.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A socket with no frame from the server for this long is considered dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Where and how to stream one execution's session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Client authenticated with the run token.
    pub client: Client,
    /// Run id.
    pub run_id: String,
    /// Execution id.
    pub execution_id: String,
    /// Spool file (see [`spool_path`]).
    pub spool_path: PathBuf,
}

/// Beside a spool whose every event the server acknowledged: the worker may
/// then delete the spool with its workspace. A spool without it may hold
/// events the server never stored, and is kept (issue 10, "nothing acked is
/// deleted").
pub fn delivered_marker(spool: &Path) -> PathBuf {
    spool.with_extension("delivered")
}

/// The spool file for `execution_id` in `dir`: `session-<execution_id>.ndjson`
/// (characters other than ASCII alphanumerics, `-` and `_` become `_`).
pub fn spool_path(dir: &Path, execution_id: &str) -> PathBuf {
    let safe: String = execution_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("session-{safe}.ndjson"))
}

/// What the stream achieved when it was shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionReport {
    /// Highest sequence number produced.
    pub last_seq: u64,
    /// Highest sequence number the server acknowledged.
    pub acked_seq: u64,
}

impl SessionReport {
    /// Whether the server acknowledged every event.
    pub fn is_complete(&self) -> bool {
        self.acked_seq >= self.last_seq
    }
}

/// What a server frame asks of the stream task.
#[derive(Debug, PartialEq, Eq)]
enum Handled {
    /// An ack of events.
    Ack,
    /// Send this frame back.
    Reply(String),
    /// Nothing more.
    Nothing,
}

/// A spooled event on its way to the task.
struct Intake {
    seq: u64,
    text: String,
}

/// The writing end of the spool, shared by emitters and the task (which
/// moves `next_seq` past what the server already holds).
#[derive(Debug)]
struct Writer {
    spool: Spool,
    next_seq: u64,
    /// `None` once finished.
    intake: Option<mpsc::UnboundedSender<Intake>>,
}

type SharedWriter = Arc<std::sync::Mutex<Writer>>;

fn lock_writer(w: &SharedWriter) -> std::sync::MutexGuard<'_, Writer> {
    // Appends are single writes and counters; a panic cannot leave them torn.
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The agent's durable session stream. Emit events through [`EventSink`];
/// end with [`SessionStream::finish`].
pub struct SessionStream {
    writer: SharedWriter,
    stop: CancellationToken,
    task: AbortOnDropHandle<SessionReport>,
    spool_path: PathBuf,
}

impl std::fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStream")
            .field("spool_path", &self.spool_path)
            .finish_non_exhaustive()
    }
}

impl SessionStream {
    /// Opens the spool and starts the stream task. A `cancel` frame from the
    /// server fires `cancel_run`; follow-ups arrive on the returned receiver.
    /// Events already in the spool (an agent restarted within the same
    /// execution) are resent if unacknowledged, and numbering continues after them.
    pub async fn start(
        config: SessionConfig,
        cancel_run: CancellationToken,
    ) -> Result<(SessionStream, mpsc::Receiver<Followup>), AgentError> {
        // New events are coming: the spool is no longer known to be delivered.
        match tokio::fs::remove_file(delivered_marker(&config.spool_path)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(AgentError::Spool {
                    path: config.spool_path.clone(),
                    source: e,
                });
            }
            _ => {}
        }
        let (spool, existing) =
            Spool::open(&config.spool_path)
                .await
                .map_err(|source| AgentError::Spool {
                    path: config.spool_path.clone(),
                    source,
                })?;
        let mut pending = VecDeque::with_capacity(existing.len());
        let mut last_seq = 0;
        for event in existing {
            last_seq = event.seq;
            pending.push_back((
                event.seq,
                AgentToServer::Event(event).to_envelope().to_text(),
            ));
        }
        let (intake_tx, intake_rx) = mpsc::unbounded_channel();
        let syncer = spool.file();
        let writer: SharedWriter = Arc::new(std::sync::Mutex::new(Writer {
            spool,
            next_seq: last_seq + 1,
            intake: Some(intake_tx),
        }));
        let (followup_tx, followup_rx) = mpsc::channel(FOLLOWUP_CAPACITY);
        let stop = CancellationToken::new();
        let ws_path = format!(
            "api/v1/agent/runs/{}/session?execution_id={}",
            hangar_client::encode(&config.run_id),
            hangar_client::encode(&config.execution_id)
        );
        let worker = StreamTask {
            client: config.client,
            ws_path,
            writer: writer.clone(),
            syncer,
            unsynced: false,
            spool_path: config.spool_path.clone(),
            acked: 0,
            pending,
            intake: intake_rx,
            intake_open: true,
            followups: followup_tx,
            seen_followups: Default::default(),
            cancel_run,
            stop: stop.clone(),
            backoff: Backoff::default(),
        };
        #[allow(clippy::disallowed_methods)] // aborted on drop: ends with its SessionStream
        let task = AbortOnDropHandle::new(tokio::spawn(worker.run()));
        let stream = SessionStream {
            writer,
            stop,
            task,
            spool_path: config.spool_path,
        };
        Ok((stream, followup_rx))
    }

    /// The spool file.
    pub fn spool_path(&self) -> &Path {
        &self.spool_path
    }

    /// Stops taking events and waits up to `timeout` until the server has
    /// acknowledged all of them; then stops the task. Unacknowledged events
    /// stay in the spool; when there are none, the spool is marked
    /// delivered (`delivered_marker`).
    pub async fn finish(self, timeout: Duration) -> SessionReport {
        let SessionStream {
            writer,
            stop,
            mut task,
            spool_path,
        } = self;
        lock_writer(&writer).intake = None;
        let joined = match tokio::time::timeout(timeout, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                stop.cancel();
                task.await
            }
        };
        match joined {
            Ok(report) => {
                if report.is_complete() {
                    if let Err(e) = std::fs::write(delivered_marker(&spool_path), b"") {
                        tracing::warn!(spool = %spool_path.display(), error = %e, "cannot mark the spool delivered");
                    }
                } else {
                    tracing::warn!(
                        last_seq = report.last_seq,
                        acked_seq = report.acked_seq,
                        spool = %spool_path.display(),
                        "session events left unacknowledged"
                    );
                }
                report
            }
            Err(e) => {
                // The task panicked: what reached the server is unknown, so
                // report it as incomplete.
                tracing::error!(error = %e, "session stream task failed");
                SessionReport {
                    last_seq: u64::MAX,
                    acked_seq: 0,
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl EventSink for SessionStream {
    async fn emit(&self, body: EventBody) -> Result<(), SinkError> {
        let mut w = lock_writer(&self.writer);
        if w.intake.is_none() {
            return Err(SinkError::Closed);
        }
        let seq = w.next_seq;
        let event = SessionEvent {
            seq,
            at: Timestamp::now(),
            body,
        };
        if let Err(e) = w.spool.append(&event) {
            tracing::error!(error = %e, spool = %w.spool.path().display(), seq, "cannot spool session event");
            return Err(SinkError::Spool(e));
        }
        w.next_seq += 1;
        let text = AgentToServer::Event(event).to_envelope().to_text();
        // Sent under the lock, so the task sees events in seq order.
        match &w.intake {
            Some(tx) if tx.send(Intake { seq, text }).is_ok() => Ok(()),
            _ => Err(SinkError::Closed),
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum Disconnect {
    #[error("closed by the server")]
    Closed,
    #[error("no initial ack within {0:?}")]
    NoInitialAck(Duration),
    #[error("no frame from the server within {0:?}")]
    Idle(Duration),
    #[error(transparent)]
    Transport(#[from] tokio_tungstenite::tungstenite::Error),
}

/// The task behind a [`SessionStream`].
struct StreamTask {
    client: Client,
    ws_path: String,
    writer: SharedWriter,
    /// The spool file, for fsync.
    syncer: Arc<std::fs::File>,
    /// Events arrived since the last fsync.
    unsynced: bool,
    spool_path: PathBuf,
    acked: u64,
    /// Spooled, not yet acknowledged: `(seq, frame text)`, in seq order.
    pending: VecDeque<(u64, String)>,
    intake: mpsc::UnboundedReceiver<Intake>,
    intake_open: bool,
    followups: mpsc::Sender<Followup>,
    /// Ids of the stored follow-ups already handed to the agent loop.
    seen_followups: std::collections::HashSet<i64>,
    cancel_run: CancellationToken,
    stop: CancellationToken,
    backoff: Backoff,
}

impl StreamTask {
    /// The loop is done and the server has everything.
    fn drained(&self) -> bool {
        !self.intake_open && self.pending.is_empty()
    }

    fn report(&self) -> SessionReport {
        let last_seq = lock_writer(&self.writer).next_seq - 1;
        SessionReport {
            last_seq,
            acked_seq: self.acked.min(last_seq),
        }
    }

    async fn run(mut self) -> SessionReport {
        loop {
            let client = self.client.clone();
            let path = self.ws_path.clone();
            let connect =
                async move { tokio::time::timeout(CONNECT_TIMEOUT, client.websocket(&path)).await };
            match self.drive(connect).await {
                None => break,
                Some(Err(_elapsed)) => {
                    tracing::warn!(timeout = ?CONNECT_TIMEOUT, "session stream connect timed out");
                }
                Some(Ok(Ok(ws))) => match self.serve(ws).await {
                    Ok(()) => break,
                    Err(reason) => tracing::warn!(
                        %reason,
                        unacked = self.pending.len(),
                        "session stream disconnected; reconnecting"
                    ),
                },
                Some(Ok(Err(error))) if error.status() == Some(401) => {
                    // The run token is refused: the execution ended (or was
                    // superseded) on the server. Nothing more is accepted, so
                    // stop the run's tools and end; the spool keeps what the
                    // server never acknowledged.
                    tracing::warn!(%error, "the server refused the run token: the execution has ended; stopping");
                    self.cancel_run.cancel();
                    break;
                }
                Some(Ok(Err(error))) => {
                    tracing::warn!(%error, "cannot connect the session stream");
                }
            }
            let delay = self.backoff.next_delay();
            if self.drive(tokio::time::sleep(delay)).await.is_none() {
                break;
            }
        }
        self.sync_spool().await;
        self.report()
    }

    /// Runs `fut` while still taking events from the loop (spooled, sent
    /// later). `None` when stopped, or when everything is done meanwhile.
    async fn drive<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            if self.drained() {
                return None;
            }
            tokio::select! {
                out = &mut fut => return Some(out),
                item = self.intake.recv(), if self.intake_open => match item {
                    Some(intake) => {
                        self.accept(intake);
                    }
                    None => self.intake_open = false,
                },
                () = self.stop.cancelled() => return None,
            }
        }
    }

    /// One connection: initial ack, resend, then live. `Ok` when finished or stopped.
    async fn serve(&mut self, mut ws: WebSocket) -> Result<(), Disconnect> {
        let mut synced = false;
        let ack_deadline = tokio::time::sleep(INITIAL_ACK_TIMEOUT);
        tokio::pin!(ack_deadline);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            if synced && self.drained() {
                let _ = ws.close(None).await;
                return Ok(());
            }
            tokio::select! {
                frame = ws.next() => {
                    last_heard = Instant::now();
                    match frame {
                        None | Some(Ok(Message::Close(_))) => return Err(Disconnect::Closed),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(Message::Text(text))) => {
                            let handled = self.on_frame(text.as_str());
                            if let Handled::Reply(reply) = &handled {
                                ws.send(Message::text(reply.clone())).await?;
                            }
                            if matches!(handled, Handled::Ack) && !synced {
                                synced = true;
                                self.backoff.reset();
                                self.sync_spool().await;
                                let resend: Vec<String> = self.pending.iter().map(|(_, t)| t.clone()).collect();
                                tracing::debug!(acked = self.acked, resend = resend.len(), "session stream synced");
                                for text in resend {
                                    ws.feed(Message::text(text)).await?;
                                }
                                ws.flush().await?;
                            }
                        }
                        Some(Ok(_)) => {}
                    }
                }
                item = self.intake.recv(), if self.intake_open => match item {
                    Some(intake) => {
                        let mut batch = vec![self.accept(intake)];
                        // Group commit: everything already queued shares one fsync.
                        while let Ok(more) = self.intake.try_recv() {
                            batch.push(self.accept(more));
                        }
                        if synced && !batch.is_empty() {
                            self.sync_spool().await;
                            for text in batch {
                                ws.feed(Message::text(text)).await?;
                            }
                            ws.flush().await?;
                        }
                    }
                    None => self.intake_open = false,
                },
                () = &mut ack_deadline, if !synced => return Err(Disconnect::NoInitialAck(INITIAL_ACK_TIMEOUT)),
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        return Err(Disconnect::Idle(IDLE_TIMEOUT));
                    }
                    ws.send(Message::Ping(Default::default())).await?;
                }
                () = self.stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
            }
        }
    }

    /// Makes the spool durable before anything is sent. A failed fsync is
    /// logged and the events are sent anyway: they are in the page cache, so
    /// only a host crash could lose them, and withholding them would stall the
    /// run forever.
    async fn sync_spool(&mut self) {
        if !self.unsynced {
            return;
        }
        let file = self.syncer.clone();
        match tokio::task::spawn_blocking(move || file.sync_data()).await {
            Ok(Ok(())) => self.unsynced = false,
            Ok(Err(e)) => {
                tracing::error!(error = %e, spool = %self.spool_path.display(), "cannot fsync the session spool");
            }
            Err(e) => {
                tracing::error!(error = %e, spool = %self.spool_path.display(), "the fsync of the session spool failed");
            }
        }
    }

    /// Queues one spooled event until the server acknowledges it; returns its frame.
    fn accept(&mut self, intake: Intake) -> String {
        self.unsynced = true;
        self.pending.push_back((intake.seq, intake.text.clone()));
        intake.text
    }

    /// Handles one server frame.
    fn on_frame(&mut self, text: &str) -> Handled {
        let message = Envelope::parse(text).and_then(ServerToAgent::from_envelope);
        match message {
            Ok(Some(ServerToAgent::Ack(ack))) => {
                self.on_ack(ack.seq);
                Handled::Ack
            }
            Ok(Some(ServerToAgent::Followup(followup))) => self.on_followup(followup),
            Ok(Some(ServerToAgent::Cancel)) => {
                tracing::info!("cancel requested by the server");
                self.cancel_run.cancel();
                Handled::Nothing
            }
            Ok(None) => {
                tracing::debug!("ignoring unknown session frame");
                Handled::Nothing
            }
            Err(error) => {
                tracing::warn!(%error, "ignoring malformed session frame");
                Handled::Nothing
            }
        }
    }

    /// Hands a follow-up to the agent loop once, and acknowledges a stored
    /// one (again, for a resend: the first ack may have been lost).
    fn on_followup(&mut self, followup: Followup) -> Handled {
        let id = followup.id;
        let ack = |id: i64| {
            Handled::Reply(
                AgentToServer::FollowupAck(FollowupAck { id })
                    .to_envelope()
                    .to_text(),
            )
        };
        if let Some(id) = id
            && !self.seen_followups.insert(id)
        {
            tracing::debug!(followup_id = id, "follow-up resent; already have it");
            return ack(id);
        }
        match self.followups.try_send(followup) {
            Ok(()) => id.map_or(Handled::Nothing, ack),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Not acknowledged: the server sends it again after a reconnect.
                if let Some(id) = id {
                    self.seen_followups.remove(&id);
                }
                tracing::warn!(
                    capacity = FOLLOWUP_CAPACITY,
                    "follow-up queue full; follow-up not taken"
                );
                Handled::Nothing
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("follow-up arrived after the run ended; dropped");
                Handled::Nothing
            }
        }
    }

    fn on_ack(&mut self, seq: u64) {
        let mut w = lock_writer(&self.writer);
        if seq >= w.next_seq {
            // The server holds events this spool does not (it was lost or
            // replaced). Number new events after them so they are not taken
            // for duplicates.
            tracing::warn!(
                acked = seq,
                next_seq = w.next_seq,
                "server acknowledged events this agent never spooled"
            );
            w.next_seq = seq + 1;
        }
        drop(w);
        self.acked = self.acked.max(seq);
        while self.pending.front().is_some_and(|(s, _)| *s <= self.acked) {
            self.pending.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_path_is_safe() {
        assert_eq!(
            spool_path(Path::new("/w/.hangar"), "01-ab_C/../x"),
            PathBuf::from("/w/.hangar/session-01-ab_C____x.ndjson")
        );
    }

    async fn task(dir: &Path, pending: &[u64], next_seq: u64) -> StreamTask {
        let (_, intake) = mpsc::unbounded_channel();
        let (followups, _) = mpsc::channel(1);
        let spool = Spool::open(&dir.join("s")).await.unwrap().0;
        StreamTask {
            client: Client::new("http://127.0.0.1:9", "t").unwrap(),
            ws_path: String::new(),
            syncer: spool.file(),
            writer: Arc::new(std::sync::Mutex::new(Writer {
                spool,
                next_seq,
                intake: None,
            })),
            unsynced: false,
            spool_path: dir.join("s"),
            acked: 0,
            pending: pending.iter().map(|s| (*s, s.to_string())).collect(),
            intake,
            intake_open: true,
            followups,
            seen_followups: Default::default(),
            cancel_run: CancellationToken::new(),
            stop: CancellationToken::new(),
            backoff: Backoff::default(),
        }
    }

    #[tokio::test]
    async fn ack_trims_pending_and_frames_are_dispatched() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = task(dir.path(), &[1, 2, 3], 4).await;
        assert_eq!(
            t.on_frame(r#"{"type":"ack","data":{"seq":2}}"#),
            Handled::Ack
        );
        assert_eq!(
            t.pending.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(
            t.on_frame(r#"{"type":"ack","data":{"seq":"x"}}"#),
            Handled::Nothing
        );
        assert_eq!(t.on_frame("not json"), Handled::Nothing);
        assert_eq!(t.on_frame(r#"{"type":"mystery"}"#), Handled::Nothing);
        assert_eq!(
            t.on_frame(r#"{"type":"cancel","data":{}}"#),
            Handled::Nothing
        );
        assert!(t.cancel_run.is_cancelled());
        assert_eq!(
            t.on_frame(r#"{"type":"ack","data":{"seq":9}}"#),
            Handled::Ack
        );
        assert!(t.pending.is_empty());
        assert_eq!(lock_writer(&t.writer).next_seq, 10);
    }

    /// A stored follow-up resent after a reconnect reaches the agent loop
    /// once and is acknowledged every time; one without an id is not acked.
    #[tokio::test]
    async fn followups_are_taken_once_and_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = task(dir.path(), &[], 1).await;
        let (tx, mut rx) = mpsc::channel(4);
        t.followups = tx;
        let frame = r#"{"type":"followup","data":{"message":"m","from":"ana","id":7}}"#;
        let ack = Handled::Reply(r#"{"type":"followup_ack","data":{"id":7}}"#.to_owned());
        assert_eq!(t.on_frame(frame), ack);
        assert_eq!(t.on_frame(frame), ack);
        assert_eq!(rx.try_recv().unwrap().message, "m");
        assert!(rx.try_recv().is_err(), "a resend reached the agent twice");
        let legacy = r#"{"type":"followup","data":{"message":"n","from":"ana"}}"#;
        assert_eq!(t.on_frame(legacy), Handled::Nothing);
        assert_eq!(rx.try_recv().unwrap().message, "n");
    }
}
