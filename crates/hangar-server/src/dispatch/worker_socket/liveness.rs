//! Whether a worker connection is alive: when its worker was last heard,
//! a ping-and-wait probe for a reconnecting worker's old connection, and
//! the token that closes it.
//!
//! No connection keeps a timer of its own: one [`sweep`] task per replica
//! wakes a few times per heartbeat, asks each connection whose ping is due
//! to send one (through [`Liveness::probe`], as a reconnection's probe
//! does), and closes those whose worker has been silent past the read
//! timeout. With 10,000 idle workers that is one timer instead of 20,000,
//! and pings stay spread over the heartbeat as the connections were opened.

use crate::AppState;
use hangar_protocol::Timestamp;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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
    /// Closed by [`sweep`]: the worker was silent past the read timeout.
    silent: AtomicBool,
    /// When the connection opened: its first ping is due a heartbeat later.
    opened: Instant,
}

impl Liveness {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Liveness {
            heard: watch::Sender::new(Instant::now()),
            heard_at: AtomicI64::new(Timestamp::now().unix_millis()),
            pinged: Mutex::new(None),
            probe: Notify::new(),
            closed: CancellationToken::new(),
            silent: AtomicBool::new(false),
            opened: Instant::now(),
        })
    }

    /// Whether [`sweep`] closed the connection for silence.
    pub(super) fn went_silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    /// One [`sweep`] step for this connection at `now`: closes it when its
    /// worker was silent for `read_timeout`, else asks for a ping when the
    /// last one (or the opening) is a `heartbeat` old.
    fn check(&self, now: Instant, heartbeat: Duration, read_timeout: Duration) {
        if self.closed.is_cancelled() {
            return;
        }
        let heard = *self.heard.borrow();
        if now.saturating_duration_since(heard) >= read_timeout {
            self.silent.store(true, Ordering::Relaxed);
            self.close();
            return;
        }
        let last = self
            .pinged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.opened);
        if now.saturating_duration_since(last) >= heartbeat {
            self.probe.notify_one();
        }
    }

    pub(super) fn heard_now(&self) {
        self.heard_on(Instant::now());
    }

    fn heard_on(&self, at: Instant) {
        self.heard.send_replace(at);
        self.heard_at
            .store(Timestamp::now().unix_millis(), Ordering::Relaxed);
    }

    /// When the worker was last heard (ms since the epoch).
    pub fn heard_at(&self) -> i64 {
        self.heard_at.load(Ordering::Relaxed)
    }

    pub(super) fn pinged_now(&self) {
        self.pinged_on(Instant::now());
    }

    fn pinged_on(&self, at: Instant) {
        *self.pinged.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
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

/// How often [`sweep`] looks at the connections: a quarter heartbeat, so a
/// ping is late by at most that, within 10 ms and 1 s.
pub fn sweep_interval(heartbeat: Duration) -> Duration {
    (heartbeat / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Pings this replica's worker connections every heartbeat and closes the
/// silent ones, until `shutdown` (the shared timer of the module doc).
pub async fn sweep(app: AppState, shutdown: CancellationToken) {
    let heartbeat = app.config.heartbeat_interval;
    let read_timeout = app.config.read_timeout;
    let mut ticker = tokio::time::interval(sweep_interval(heartbeat));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        for liveness in app.dispatcher.livenesses() {
            liveness.check(now, heartbeat, read_timeout);
        }
    }
}

/// How long a connection's old one gets to answer a ping before it counts
/// as dead: a heartbeat, within bounds (a worker waits no longer than this
/// to get back in after a network cut).
pub fn probe_wait(heartbeat: Duration) -> Duration {
    heartbeat.clamp(Duration::from_millis(500), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEARTBEAT: Duration = Duration::from_secs(30);
    const READ_TIMEOUT: Duration = Duration::from_secs(60);

    /// Whether the sweep asked the connection for a ping (and takes the request).
    fn asked(l: &Liveness) -> bool {
        let notified = l.probe.notified();
        tokio::pin!(notified);
        notified.as_mut().enable()
    }

    #[test]
    fn pings_are_due_a_heartbeat_after_the_last_one() {
        let l = Liveness::new();
        let t0 = l.opened;
        l.check(t0 + HEARTBEAT / 2, HEARTBEAT, READ_TIMEOUT);
        assert!(!asked(&l), "no ping before a heartbeat has passed");
        l.heard_on(t0 + HEARTBEAT);
        l.check(t0 + HEARTBEAT, HEARTBEAT, READ_TIMEOUT);
        assert!(asked(&l), "a ping a heartbeat after the opening");
        l.pinged_on(t0 + HEARTBEAT);
        l.check(t0 + HEARTBEAT * 3 / 2, HEARTBEAT, READ_TIMEOUT);
        assert!(!asked(&l), "not again within the heartbeat");
        l.check(t0 + HEARTBEAT * 2, HEARTBEAT, READ_TIMEOUT);
        assert!(asked(&l));
        assert!(!l.is_closed());
    }

    #[test]
    fn a_worker_silent_past_the_read_timeout_is_closed() {
        let l = Liveness::new();
        let t0 = *l.heard.borrow();
        let almost = READ_TIMEOUT - Duration::from_millis(1);
        l.check(t0 + almost, HEARTBEAT, READ_TIMEOUT);
        assert!(!l.is_closed());
        // Heard just in time: the timeout counts from then.
        l.heard_on(t0 + almost);
        l.check(t0 + almost + almost, HEARTBEAT, READ_TIMEOUT);
        assert!(!l.is_closed());
        l.check(t0 + almost + READ_TIMEOUT, HEARTBEAT, READ_TIMEOUT);
        assert!(l.is_closed() && l.went_silent());
        // A connection closed for another reason is not called silent.
        let other = Liveness::new();
        other.close();
        other.check(t0 + READ_TIMEOUT * 2, HEARTBEAT, READ_TIMEOUT);
        assert!(!other.went_silent());
    }

    #[test]
    fn the_sweep_wakes_a_few_times_per_heartbeat() {
        assert_eq!(sweep_interval(HEARTBEAT), Duration::from_secs(1));
        assert_eq!(
            sweep_interval(Duration::from_millis(200)),
            Duration::from_millis(50)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }
}
