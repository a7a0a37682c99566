//! A run's session while it runs: the agent streams it in, viewers watch it,
//! editors steer it.
//!
//! - [`hub`]: the session hub. The agent's socket
//!   (`GET /api/v1/agent/runs/{id}/session`, run token) commits each event
//!   once and acks it; control messages (`cancel`, `followup`) go back down
//!   the same socket; live events fan out to viewers on this replica.
//! - [`viewers`]: the viewer side (`GET /api/v1/agent/runs/{id}/events`,
//!   Server-Sent Events or a WebSocket; also behind public links): replay
//!   from the store, then live, with no gap and no duplicate.
//! - [`feed`]: one live feed per watched run on this replica, which every
//!   viewer of the run shares (events rendered once, the run's state read
//!   once, access re-checked once per credential).
//! - [`sharing`]: who may watch and steer a session (view or edit), public
//!   links, and the [`sharing::ShareHub`] that tells open streams a grant
//!   changed.
//!
//! Not to be confused with the dashboard's sign-in session (the
//! `hangar_session` cookie), which lives in [`crate::web::auth`].

pub mod feed;
pub mod hub;
pub mod sharing;
pub mod viewers;

use std::sync::Arc;

/// The session services of [`AppState`](crate::AppState).
pub struct Sessions {
    /// Agents' sessions on this replica, and their live events.
    pub hub: Arc<hub::SessionHub>,
    /// Grant changes for open session streams.
    pub shares: Arc<sharing::ShareHub>,
    /// Open public-link streams, per link and per address.
    pub public_streams: Arc<crate::rate_limit::StreamSlots>,
    /// One live feed per watched run, shared by its viewers.
    pub feeds: feed::Feeds,
}
