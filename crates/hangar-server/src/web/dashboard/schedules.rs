//! `/schedules`: the team's schedules with a plain-English preview of each
//! cron expression, their history (last run, next run, last spawn error) and
//! pause/resume buttons (through the API).

use super::{Nav, describe_cron, error_page, layout, time, viewer};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;

/// `GET /schedules`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/schedules").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let list = match app.store.list_schedules(v.team.id).await {
        Ok(l) => l,
        Err(e) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &e.to_string(),
            );
        }
    };
    let body = html! {
        h1 { "Schedules" }
        p.muted { "Agents that run on a cron schedule. Create one with " code { "hangar schedule create --name … --cron \"0 9 * * 1-5\" -p \"…\"" } "." }
        p #schedule-status.status role="status" aria-live="polite" {}
        @if list.is_empty() {
            p.card { "No schedule yet." }
        } @else {
            table {
                caption.sr-only { "Schedules" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "When" } th scope="col" { "Last ran" } th scope="col" { "Next run" } th scope="col" { "Status" } th scope="col" { span.sr-only { "Actions" } } } }
                tbody {
                    @for s in &list {
                        tr {
                            td data-label="Name" {
                                strong { (s.name) }
                                div.muted.small.clip { (s.prompt) }
                            }
                            td data-label="When" {
                                @match describe_cron(&s.cron_schedule) {
                                    Ok(text) => { span.cron-text { (text) } }
                                    Err(_) => { span.muted { "custom" } }
                                }
                                div.small { code { (s.cron_schedule) } " " span.muted { (s.timezone.clone().unwrap_or_else(|| "UTC".into())) } }
                            }
                            td data-label="Last ran" { @match s.last_ran { Some(t) => { (time(t)) }, None => { span.muted { "never" } } } }
                            td data-label="Next run" {
                                @if s.enabled {
                                    @match s.next_run { Some(t) => { (time(t)) }, None => { span.muted { "—" } } }
                                } @else { span.muted { "paused" } }
                            }
                            td data-label="Status" {
                                @if s.enabled { span.badge.state-succeeded { "active" } } @else { span.badge.state-cancelled { "paused" } }
                                @if let Some(err) = &s.last_spawn_error { div.error.small { "Last spawn failed: " (err) } }
                            }
                            td {
                                @if s.enabled {
                                    button.small type="button" data-schedule=(s.id) data-action="pause" { "Pause" span.sr-only { " " (s.name) } }
                                } @else {
                                    button.small type="button" data-schedule=(s.id) data-action="resume" { "Resume" span.sr-only { " " (s.name) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&v, Nav::Schedules, "Schedules", body)
}
