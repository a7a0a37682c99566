//! Whether a worker connection is alive: when its worker was last heard,
//! a ping-and-wait probe for a reconnecting worker's old connection, and
//! the token that closes it.

use hangar_protocol::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a connection shows it is alive, and how a reconnection of its worker
/// closes it once it is found dead.
#[derive(Debug)]
pub struct Liveness {
    /// When the worker last sent anything (a frame, a ping or a pong).
    heard: watch::Sender<Instant>,
    /// The same, in ms since the epoch, for the shared registry.
    heard_at: AtomicI64,
    /// When the writer last sent a ping.
    pinged: Mutex<Option<Instant>>,
    /// Asks the writer to ping now.
    pub(super) probe: Notify,
    /// Ends the connection.
    pub(super) closed: CancellationToken,
}

impl Liveness {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Liveness {
            heard: watch::Sender::new(Instant::now()),
            heard_at: AtomicI64::new(Timestamp::now().unix_millis()),
            pinged: Mutex::new(None),
            probe: Notify::new(),
            closed: CancellationToken::new(),
        })
    }

    pub(super) fn heard_now(&self) {
        self.heard.send_replace(Instant::now());
        self.heard_at
            .store(Timestamp::now().unix_millis(), Ordering::Relaxed);
    }

    /// When the worker was last heard (ms since the epoch).
    pub fn heard_at(&self) -> i64 {
        self.heard_at.load(Ordering::Relaxed)
    }

    pub(super) fn pinged_now(&self) {
        *self.pinged.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the worker at the other end still answers: it has not missed
    /// a pong for longer than `wait`, and answers a ping sent now within `wait`.
    pub async fn answers(&self, wait: Duration) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        let start = Instant::now();
        let heard = *self.heard.borrow();
        let pinged = *self.pinged.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pinged
            && p > heard
            && start.duration_since(p) > wait
        {
            return false; // its last ping went unanswered
        }
        let mut seen = self.heard.subscribe();
        self.probe.notify_one();
        matches!(
            tokio::time::timeout(wait, seen.wait_for(|t| *t >= start)).await,
            Ok(Ok(_))
        )
    }

    /// Ends the connection (its reader stops, then it unregisters).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Whether [`Liveness::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// How long a connection's old one gets to answer a ping before it counts
/// as dead: a heartbeat, within bounds (a worker waits no longer than this
/// to get back in after a network cut).
pub fn probe_wait(heartbeat: Duration) -> Duration {
    heartbeat.clamp(Duration::from_millis(500), Duration::from_secs(5))
}
