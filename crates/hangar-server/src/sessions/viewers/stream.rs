//! [`ViewerStream`]: one viewer's frames, pulled by its connection.

use super::{EventCursor, Frame};
use crate::AppState;
use crate::sessions::feed::{Item, Joined, Snapshot};
use crate::sessions::viewers::AccessCheck;
use hangar_protocol::{ExecutionId, RunState};
use hangar_store::RunRecord;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// One viewer's frames, pulled one at a time: the store after its cursor,
/// then the items of its run's [`feed`](crate::sessions::feed) that continue
/// the cursor (the store again for anything else). A following viewer joins
/// the feed when created, before anything is read from the store, so nothing
/// committed from then on can be missed.
pub struct ViewerStream {
    state: AppState,
    run: RunRecord,
    /// Last event delivered (or the client's resume point).
    cursor: Option<EventCursor>,
    /// Execution numbers, from the store's order.
    numbers: HashMap<ExecutionId, u32>,
    /// The `data` of the last `run_state` frame sent.
    sent_state: Option<Arc<str>>,
    /// The feed (`None` without `follow`).
    joined: Option<Joined>,
    /// Events read from the store, delivered one by one.
    replay: std::vec::IntoIter<(ExecutionId, hangar_protocol::session::SessionEvent)>,
    /// Frames to send once the replay is delivered.
    queue: std::collections::VecDeque<Frame>,
    /// Where the stream is.
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first replay is to be read.
    Start,
    /// Following the feed.
    Live,
    /// Nothing after the queue.
    Done,
}

impl ViewerStream {
    /// A viewer of `run` after `after`; with `follow` it joins the run's feed now.
    pub fn new(
        state: AppState,
        run: RunRecord,
        who: AccessCheck,
        after: Option<EventCursor>,
        follow: bool,
    ) -> ViewerStream {
        let joined = follow.then(|| state.sessions.feeds.join(&state, &run, who));
        ViewerStream {
            state,
            run,
            cursor: after,
            numbers: HashMap::new(),
            sent_state: None,
            joined,
            replay: Vec::new().into_iter(),
            queue: Default::default(),
            phase: Phase::Start,
        }
    }

    /// The next frame; `None` after `end` or `revoked` (or at shutdown).
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.next_replayed() {
                return Some(frame);
            }
            if let Some(frame) = self.queue.pop_front() {
                return Some(frame);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Start => {
                    self.catch_up().await;
                    if self.joined.is_some() {
                        self.push_state(Frame::run_state(&self.run));
                        self.phase = Phase::Live;
                    } else {
                        self.queue.push_back(Frame::End {
                            state: self.run.state,
                        });
                        self.phase = Phase::Done;
                    }
                }
                Phase::Live => self.step().await,
            }
        }
    }

    /// The next stored event after the cursor, if a replay is under way.
    fn next_replayed(&mut self) -> Option<Frame> {
        for (exec, event) in self.replay.by_ref() {
            let next = self.numbers.len() as u32 + 1;
            let number = *self.numbers.entry(exec.clone()).or_insert(next);
            let id = EventCursor {
                execution: number,
                seq: event.seq,
            };
            if self.cursor.is_some_and(|c| id <= c) {
                continue;
            }
            self.cursor = Some(id);
            return Some(Frame::session(id, &exec, event));
        }
        None
    }

    /// Reads the store; its events after the cursor are delivered next.
    async fn catch_up(&mut self) {
        let read = self.state.store.run_events(&self.run.id).await;
        // Only what is durable is sent ([`hangar_store::Store::settled`]);
        // the feed's live events were committed before it had them.
        self.state.store.settled().await;
        match read {
            Ok(events) => {
                // Numbering restarts from the store's order each time.
                self.numbers.clear();
                self.replay = events.into_iter();
            }
            Err(e) => {
                tracing::warn!(error = %e, run_id = %self.run.id, "cannot read the session; retrying at the next event");
            }
        }
    }

    /// Queues a `run_state` frame unless it says what the last one said.
    fn push_state(&mut self, frame: Frame) {
        if let Frame::RunState { data } = &frame {
            if self.sent_state.as_ref() == Some(data) {
                return;
            }
            self.sent_state = Some(data.clone());
        }
        self.queue.push_back(frame);
    }

    /// Waits for the feed's next item (or a revocation, or shutdown).
    async fn step(&mut self) {
        let Some(joined) = self.joined.as_mut() else {
            self.phase = Phase::Done;
            return;
        };
        let shutdown = self.state.runtime.shutdown.clone();
        let item = tokio::select! {
            () = shutdown.cancelled() => {
                self.phase = Phase::Done;
                return;
            }
            revoked = &mut joined.revoked => {
                // Err: the feed forgot this viewer without a reason, which
                // it never does while the viewer holds it; close.
                if let Ok(detail) = revoked {
                    self.queue.push_back(Frame::Revoked { detail });
                }
                self.phase = Phase::Done;
                return;
            }
            item = joined.items.recv() => item,
        };
        match item {
            Ok(item) => self.on_item(&item).await,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(run_id = %self.run.id, missed, "viewer lagged; re-reading the store");
                self.resync().await;
            }
            Err(broadcast::error::RecvError::Closed) => self.phase = Phase::Done,
        }
    }

    /// One item of the feed.
    async fn on_item(&mut self, item: &Item) {
        match item {
            Item::Sync { cursor } => {
                if *cursor > self.cursor {
                    self.catch_up().await;
                }
            }
            Item::Session { after, frame } => {
                let Frame::Session { id, .. } = frame else {
                    return;
                };
                if self.cursor.is_some_and(|c| *id <= c) {
                    return; // replayed from the store already
                }
                if *after == self.cursor {
                    self.queue.push_back(frame.clone());
                    self.cursor = Some(*id);
                } else {
                    // Not the next one for this viewer: the store has both.
                    self.catch_up().await;
                }
            }
            Item::RunState(frame) => self.push_state(frame.clone()),
            Item::End { state, last } => self.end(*state, *last).await,
        }
    }

    /// The stream is complete once every event up to `last` is delivered.
    async fn end(&mut self, state: RunState, last: Option<EventCursor>) {
        if last > self.cursor {
            self.catch_up().await;
        }
        // After the replay (delivered before the queue).
        self.queue.push_back(Frame::End { state });
        self.phase = Phase::Done;
    }

    /// After lagging behind the feed: the store for the events, the feed's
    /// snapshot for the state and the end.
    async fn resync(&mut self) {
        self.catch_up().await;
        let Some(joined) = self.joined.as_ref() else {
            return;
        };
        let snapshot: Snapshot = joined.feed.snapshot();
        if let Some(frame) = snapshot.run_state {
            self.push_state(frame);
        }
        if let Some((state, last)) = snapshot.end {
            self.end(state, last).await;
        }
    }
}
