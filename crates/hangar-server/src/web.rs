//! What a browser sees: the server-rendered dashboard ([`dashboard`]) and
//! the dashboard's sign-in ([`auth`]: passwords, the `hangar_session`
//! cookie, CSRF, single-use sign-in links).
//!
//! The dashboard reads the store with the signed-in user's team and acts
//! through the JSON API, so the API's rules apply to it unchanged.

pub mod auth;
pub mod dashboard;
