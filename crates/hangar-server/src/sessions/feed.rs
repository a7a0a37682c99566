//! One live feed per watched run on this replica, shared by all its viewers.
//!
//! A run with a thousand viewers is followed once: its [`Feed`] subscribes
//! to the session hub, numbers and renders each committed event once, re-reads
//! the run's state every [`POLL_INTERVAL`] (and, when its agent is connected
//! to another replica, its new events), decides when the stream ends, and
//! broadcasts [`Item`]s that each viewer forwards as they are
//! ([`crate::sessions::viewers`]). A viewer keeps its own cursor: an item
//! that does not continue it (the viewer joined late, or lagged) makes it
//! re-read the store, which holds every event before it is published, so
//! what a viewer sees is still exactly the stored transcript.
//!
//! Access is re-checked by the feed too, once per distinct credential rather
//! than once per viewer: when the run's grants change (the [`ShareHub`],
//! which other replicas reach through PostgreSQL `LISTEN/NOTIFY`) and every
//! [`CREDENTIAL_RECHECK`] (a revoked or expired key, a logged-out or disabled
//! account); a viewer that lost access is told through its own channel and
//! its stream closes with `revoked`.
//!
//! Lifecycle: [`Feeds::join`] creates a run's feed with its first viewer and
//! starts its three tasks (publisher, run state watcher, access checks);
//! they stop when the last viewer leaves (the [`Feed`] handle is dropped) or
//! once the run's stream has ended, after which the next viewer (a follow-up
//! reopened the run) starts a new feed.
//!
//! [`ShareHub`]: crate::sessions::sharing::ShareHub

use crate::AppState;
use crate::error::ApiError;
use crate::sessions::hub::LiveEvent;
use crate::sessions::viewers::{AccessCheck, CREDENTIAL_RECHECK, EventCursor, Frame};
use hangar_protocol::session::EventBody;
use hangar_protocol::{ExecutionId, RunId, RunState, TranscriptEvent};
use hangar_store::RunRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often a feed re-reads its run's state (and, when the run's agent is
/// connected to another replica, its new events): once per run, whatever
/// the number of viewers.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long a terminal run's feed waits for its agent's last events.
const END_GRACE: Duration = Duration::from_secs(3);
/// Items kept per feed for viewers that fall behind; one that lags further
/// re-reads the store.
pub const FEED_BUFFER: usize = 1024;

/// Something every viewer of a run receives, rendered once.
#[derive(Debug)]
pub enum Item {
    /// The feed's position: a viewer behind it re-reads the store. Sent
    /// once when the feed starts (its first read of the store may include
    /// events it will not publish).
    Sync {
        /// The last event the feed has seen.
        cursor: Option<EventCursor>,
    },
    /// A committed session event.
    Session {
        /// The event before it in the feed: a viewer at `after` forwards
        /// `frame` as it is; one elsewhere re-reads the store.
        after: Option<EventCursor>,
        /// The `session` frame (its id is the event's position).
        frame: Frame,
    },
    /// The run's state changed: a `run_state` frame.
    RunState(Frame),
    /// The stream is complete: the run is terminal and `last` is its last event.
    End {
        /// The run's state.
        state: RunState,
        /// The last event.
        last: Option<EventCursor>,
    },
}

/// What a viewer that lagged (or just joined) needs beyond the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The latest `run_state` frame, once the feed has read the run.
    pub run_state: Option<Frame>,
    /// Set once the stream ended: `(state, last event)`.
    pub end: Option<(RunState, Option<EventCursor>)>,
}

/// A viewer's access entry: how to re-check it, and where to tell it that
/// it lost access.
struct Watcher {
    check: AccessCheck,
    revoke: oneshot::Sender<String>,
}

/// What a feed's tasks and its viewers share.
struct Shared {
    run_id: RunId,
    items: broadcast::Sender<Arc<Item>>,
    snapshot: watch::Sender<Snapshot>,
    watchers: Mutex<HashMap<u64, Watcher>>,
    ended: AtomicBool,
}

impl Shared {
    fn watchers(&self) -> MutexGuard<'_, HashMap<u64, Watcher>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, item: Item) {
        // No receiver: every viewer left; the feed stops with its handle.
        let _ = self.items.send(Arc::new(item));
    }
}

/// A run's feed, held by each of its viewers; the last one dropped stops it.
pub struct Feed {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

impl Feed {
    /// The latest state and end of the stream, for a viewer that lagged.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot.borrow().clone()
    }
}

/// A viewer's place in a feed: its items, and the channel that says it lost
/// access. Dropping it removes its access entry.
pub struct Joined {
    /// The feed (kept alive by its viewers).
    pub feed: Arc<Feed>,
    /// Items published from the moment of joining.
    pub items: broadcast::Receiver<Arc<Item>>,
    /// Fires with the reason when the viewer lost access.
    pub revoked: oneshot::Receiver<String>,
    id: u64,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.feed.shared.watchers().remove(&self.id);
    }
}

/// This replica's feeds, by run.
#[derive(Default)]
pub struct Feeds {
    runs: Mutex<HashMap<RunId, Weak<Feed>>>,
    next_viewer: AtomicU64,
}

impl Feeds {
    /// Joins `run`'s feed as a viewer re-checked with `check`, starting the
    /// feed if the run has none (or only one that ended). Subscribes before
    /// returning: the caller reads the store afterwards, so nothing
    /// committed from here on can be missed.
    pub fn join(&self, state: &AppState, run: &RunRecord, check: AccessCheck) -> Joined {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let live = runs
            .get(&run.id)
            .and_then(Weak::upgrade)
            .filter(|f| !f.shared.ended.load(Ordering::Acquire));
        let feed = match live {
            Some(feed) => feed,
            None => {
                let feed = start(state, run.clone());
                // Forget feeds nobody holds any more while we are here.
                runs.retain(|_, f| f.strong_count() > 0);
                runs.insert(run.id.clone(), Arc::downgrade(&feed));
                feed
            }
        };
        drop(runs);
        let items = feed.shared.items.subscribe();
        let (revoke, revoked) = oneshot::channel();
        let id = self.next_viewer.fetch_add(1, Ordering::Relaxed);
        feed.shared.watchers().insert(id, Watcher { check, revoke });
        Joined {
            feed,
            items,
            revoked,
            id,
        }
    }

    /// Runs with a live feed on this replica.
    pub fn watched(&self) -> usize {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.values().filter(|f| f.strong_count() > 0).count()
    }
}

/// Starts a feed's tasks; they stop when the returned handle is dropped.
fn start(state: &AppState, run: RunRecord) -> Arc<Feed> {
    // Subscribed here, before any viewer can read the store.
    let live = state.sessions.hub.subscribe(&run.id);
    let shares = state.sessions.shares.subscribe();
    let shared = Arc::new(Shared {
        run_id: run.id.clone(),
        items: broadcast::channel(FEED_BUFFER).0,
        snapshot: watch::Sender::new(Snapshot::default()),
        watchers: Mutex::new(HashMap::new()),
        ended: AtomicBool::new(false),
    });
    let stop = CancellationToken::new();
    let publisher = Publisher {
        state: state.clone(),
        shared: shared.clone(),
        run,
        numbers: HashMap::new(),
        cursor: None,
        last_terminal_status: false,
        terminal_since: None,
    };
    let (runs_tx, runs_rx) = watch::channel(publisher.run.clone());
    let tasks = &state.runtime.tasks;
    tasks.spawn(publisher.run(live, runs_rx, stop.clone()));
    tasks.spawn(watch_run(state.clone(), runs_tx, stop.clone()));
    tasks.spawn(check_access(
        state.clone(),
        Arc::downgrade(&shared),
        shares,
        stop.clone(),
    ));
    Arc::new(Feed {
        shared,
        _stop: stop.drop_guard(),
    })
}

/// The feed's publisher: follows the run once for all its viewers.
struct Publisher {
    state: AppState,
    shared: Arc<Shared>,
    run: RunRecord,
    /// Execution numbers, from the store's order.
    numbers: HashMap<ExecutionId, u32>,
    /// The last event published (or seen at the start).
    cursor: Option<EventCursor>,
    /// The last event is the agent's terminal `status`.
    last_terminal_status: bool,
    /// When the run was first seen terminal.
    terminal_since: Option<Instant>,
}

impl Publisher {
    async fn run(
        mut self,
        mut live: broadcast::Receiver<LiveEvent>,
        mut runs: watch::Receiver<RunRecord>,
        stop: CancellationToken,
    ) {
        // Where the store is now; viewers that read it earlier catch up.
        self.catch_up(false).await;
        self.shared.publish(Item::Sync {
            cursor: self.cursor,
        });
        // The run as it is now (the first viewer's copy may be older: a
        // follow-up reopens an ended run on the same socket): the first
        // `run_state`, and the end for a run already over.
        if self.poll_state().await {
            return;
        }
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.state.runtime.shutdown.clone();
        loop {
            let ended = tokio::select! {
                () = stop.cancelled() => return,
                () = shutdown.cancelled() => return,
                event = live.recv() => match event {
                    Ok(event) => self.on_live(event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(run_id = %self.run.id, missed, "session feed lagged; re-reading the store");
                        self.catch_up(true).await;
                        false
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        live = self.state.sessions.hub.subscribe(&self.run.id);
                        self.catch_up(true).await;
                        false
                    }
                },
                changed = runs.changed() => match changed {
                    Ok(()) => {
                        let fresh = runs.borrow_and_update().clone();
                        self.on_run(fresh).await
                    }
                    // The state watcher stops with this feed.
                    Err(_) => return,
                },
                _ = poll.tick() => self.poll().await,
            };
            if ended {
                return;
            }
        }
    }

    /// Reads every stored event after the cursor; publishes them when
    /// `publish` (not at the start, where the [`Item::Sync`] covers them).
    async fn catch_up(&mut self, publish: bool) {
        let read = self.state.store.run_events(&self.run.id).await;
        // What the feed read from the store reaches viewers only once
        // durable ([`hangar_store::Store::settled`]); the hub's live events
        // were committed before it published them.
        self.state.store.settled().await;
        let events = match read {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, run_id = %self.run.id, "cannot read the session; retrying at the next poll");
                return;
            }
        };
        for (exec, event) in events {
            let next = self.numbers.len() as u32 + 1;
            let number = *self.numbers.entry(exec.clone()).or_insert(next);
            let id = EventCursor {
                execution: number,
                seq: event.seq,
            };
            if self.cursor.is_some_and(|c| id <= c) {
                continue;
            }
            if publish {
                self.publish_event(id, exec, event);
            } else {
                self.note(id, &event);
            }
        }
    }

    fn note(&mut self, id: EventCursor, event: &hangar_protocol::session::SessionEvent) {
        self.last_terminal_status = matches!(
            &event.body,
            EventBody::Status { state: Some(s), .. } if s.is_terminal()
        );
        self.cursor = Some(id);
    }

    fn publish_event(
        &mut self,
        id: EventCursor,
        exec: ExecutionId,
        event: hangar_protocol::session::SessionEvent,
    ) {
        let after = self.cursor;
        self.note(id, &event);
        let frame = Frame::session(id, &exec, event);
        self.shared.publish(Item::Session { after, frame });
    }

    /// A live event: published when it continues the sequence, otherwise
    /// the store is re-read (it holds every event before it is published).
    async fn on_live(&mut self, live: LiveEvent) -> bool {
        let terminal = matches!(
            &live.event.body,
            EventBody::Status { state: Some(s), .. } if s.is_terminal()
        );
        let next_in_line = match (self.numbers.get(&live.execution_id), self.cursor) {
            (Some(&n), Some(c)) => {
                let id = EventCursor {
                    execution: n,
                    seq: live.event.seq,
                };
                if id <= c {
                    return false; // already published (a resend)
                }
                (n == c.execution && live.event.seq == c.seq + 1).then_some(id)
            }
            _ => None,
        };
        match next_in_line {
            Some(id) => self.publish_event(id, live.execution_id, live.event),
            None => self.catch_up(true).await,
        }
        if terminal {
            return self.poll_state().await;
        }
        false
    }

    /// Every [`POLL_INTERVAL`]: the events of an agent connected to another
    /// replica, and the end of a terminal run once its grace is over. The
    /// run's state comes from [`watch_run`], so no read of it ever holds up
    /// the events.
    async fn poll(&mut self) -> bool {
        if self
            .state
            .sessions
            .hub
            .connected_execution(&self.run.id)
            .is_none()
        {
            // The agent may be connected to another replica.
            self.catch_up(true).await;
        }
        self.check_end().await
    }

    /// Re-reads the run now (its agent reported a terminal status).
    async fn poll_state(&mut self) -> bool {
        let read = self.state.store.run_any_team(&self.run.id).await;
        self.state.store.settled().await;
        match read {
            Ok(fresh) => self.on_run(fresh).await,
            Err(e) => {
                tracing::warn!(error = %e, run_id = %self.run.id, "cannot re-read the run");
                false
            }
        }
    }

    /// A fresh read of the run: announces a state change, then checks the end.
    async fn on_run(&mut self, fresh: RunRecord) -> bool {
        let first = self.shared.snapshot.borrow().run_state.is_none();
        let changed = first
            || fresh.state != self.run.state
            || fresh.status_message != self.run.status_message;
        self.run = fresh;
        if changed {
            let frame = Frame::run_state(&self.run);
            self.shared
                .snapshot
                .send_modify(|s| s.run_state = Some(frame.clone()));
            self.shared.publish(Item::RunState(frame));
        }
        self.check_end().await
    }

    /// Ends the feed once the run is terminal and its last events are in.
    async fn check_end(&mut self) -> bool {
        if !self.run.state.is_terminal() {
            self.terminal_since = None;
            return false;
        }
        let since = *self.terminal_since.get_or_insert_with(Instant::now);
        let agent_here = self.state.sessions.hub.connected_execution(&self.run.id);
        let waiting_for_agent =
            agent_here.is_some() && !self.last_terminal_status && since.elapsed() < END_GRACE;
        if waiting_for_agent {
            return false;
        }
        self.catch_up(true).await;
        let end = (self.run.state, self.cursor);
        // Ended before published: a viewer joining from now on starts a new feed.
        self.shared.ended.store(true, Ordering::Release);
        self.shared.snapshot.send_modify(|s| s.end = Some(end));
        self.shared.publish(Item::End {
            state: end.0,
            last: end.1,
        });
        true
    }
}

/// Re-reads a feed's run every [`POLL_INTERVAL`] (once per run, whatever
/// the number of viewers) and hands a changed state or status message to
/// the publisher, which never waits on this read.
async fn watch_run(state: AppState, runs: watch::Sender<RunRecord>, stop: CancellationToken) {
    let run_id = runs.borrow().id.clone();
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = state.runtime.shutdown.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = shutdown.cancelled() => return,
            _ = poll.tick() => {}
        }
        let read = state.store.run_any_team(&run_id).await;
        state.store.settled().await;
        match read {
            Ok(fresh) => {
                runs.send_if_modified(|run| {
                    let changed =
                        run.state != fresh.state || run.status_message != fresh.status_message;
                    if changed {
                        *run = fresh;
                    }
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, run_id = %run_id, "cannot re-read the run"),
        }
    }
}

/// Re-checks the access of a feed's viewers when the run's grants change
/// and every [`CREDENTIAL_RECHECK`], each distinct credential once.
async fn check_access(
    state: AppState,
    shared: Weak<Shared>,
    mut shares: broadcast::Receiver<RunId>,
    stop: CancellationToken,
) {
    let mut recheck = tokio::time::interval(CREDENTIAL_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.reset();
    let shutdown = state.runtime.shutdown.clone();
    loop {
        let due = tokio::select! {
            () = stop.cancelled() => return,
            () = shutdown.cancelled() => return,
            change = shares.recv() => match change {
                Ok(run) => shared.upgrade().is_some_and(|s| s.run_id == run),
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = recheck.tick() => true,
        };
        if !due {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        recheck_all(&state, &shared).await;
    }
}

/// One pass: each distinct credential of the feed's viewers is checked once;
/// the viewers of a credential that lost access are told why and forgotten.
async fn recheck_all(state: &AppState, shared: &Shared) {
    let checks: HashMap<String, AccessCheck> = shared
        .watchers()
        .values()
        .map(|w| (w.check.key(), w.check.clone()))
        .collect();
    if checks.is_empty() {
        return;
    }
    let run = match state.store.run_any_team(&shared.run_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, run_id = %shared.run_id, "cannot re-check the viewers' access");
            return;
        }
    };
    for (key, check) in checks {
        let detail = match check.still_allowed(state, &run).await {
            Ok(()) => continue,
            Err(ApiError::Forbidden(d) | ApiError::NotFound(d) | ApiError::Unauthenticated(d)) => d,
            Err(e) => {
                tracing::warn!(error = %e, run_id = %run.id, "cannot re-check a viewer's access");
                continue;
            }
        };
        let lost: Vec<Watcher> = {
            let mut watchers = shared.watchers();
            let ids: Vec<u64> = watchers
                .iter()
                .filter(|(_, w)| w.check.key() == key)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| watchers.remove(id)).collect()
        };
        tracing::info!(run_id = %run.id, viewers = lost.len(), "viewers lost access; closing their streams");
        for w in lost {
            let _ = w
                .revoke
                .send(format!("your access to this session was revoked: {detail}"));
        }
    }
}

impl Frame {
    /// The `session` frame of a committed event, rendered once.
    pub(crate) fn session(
        id: EventCursor,
        exec: &ExecutionId,
        event: hangar_protocol::session::SessionEvent,
    ) -> Frame {
        let data = serde_json::to_string(&TranscriptEvent {
            execution_id: exec.0.clone(),
            event,
        })
        .unwrap_or_else(|_| "{}".to_owned());
        Frame::Session {
            id,
            data: data.into(),
        }
    }

    /// The `run_state` frame of a run.
    pub(crate) fn run_state(run: &RunRecord) -> Frame {
        let data = serde_json::json!({
            "state": run.state,
            "status_message": run.status_message,
        });
        Frame::RunState {
            data: data.to_string().into(),
        }
    }
}
