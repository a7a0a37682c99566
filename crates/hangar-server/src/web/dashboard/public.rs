//! `/s/{token}`: the public, read-only viewer of a shared session. No
//! account needed; the script reads the run's metadata from
//! `GET /api/v1/public/sessions/{token}` and its events from the link's SSE
//! stream, rendered by the same transcript code as the run page.

use super::bare_page;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

/// Longest token accepted in the path (longer ones cannot exist).
const MAX_TOKEN: usize = 200;

/// `GET /s/{token}`.
pub async fn page(State(_app): State<AppState>, Path(token): Path<String>) -> Response {
    if token.len() > MAX_TOKEN
        || !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return super::error_page(
            StatusCode::NOT_FOUND,
            "Link not found",
            "This share link is not valid. Ask whoever shared it for a new one.",
        );
    }
    let meta = format!("/api/v1/public/sessions/{token}");
    let events = format!("{meta}/events");
    bare_page(
        StatusCode::OK,
        "Shared session",
        html! {
            div #run.public data-public=(meta) data-access="view" {
                header.publichead {
                    span.brand aria-hidden="true" { "▰ Hangar" }
                    span.tag.viewonly { "Shared session · view only" }
                }
                div.pagehead {
                    h1 #public-title { "Shared session" }
                    span #public-state {}
                }
                p.muted.small #public-meta {}
                div.layout.single {
                    div.main-col { (super::runs::transcript_panel(&events)) }
                }
            }
        },
    )
}
