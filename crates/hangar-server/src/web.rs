//! What a browser sees: the server-rendered dashboard ([`dashboard`]) and
//! the dashboard's sign-in ([`auth`]: passwords, the `hangar_session`
//! cookie, CSRF, single-use sign-in links).
//!
//! The dashboard reads the store with the signed-in user's team and acts
//! through the JSON API, so the API's rules apply to it unchanged.

pub mod auth;
pub mod dashboard;

use std::sync::Arc;

/// The dashboard sign-in services of [`AppState`](crate::AppState).
#[derive(Default)]
pub struct SignIn {
    /// Backoff for failed dashboard sign-ins.
    pub logins: Arc<auth::LoginThrottle>,
    /// Single-use sign-in links (`hangar up`).
    pub sign_in_links: Arc<auth::SignInLinks>,
}
