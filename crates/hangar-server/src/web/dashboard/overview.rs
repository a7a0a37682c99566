//! `GET /overview`: the team's state at a glance, from the numbers the
//! metrics use (runs by state, the queue, workers' slots, failure reasons,
//! cost), drawn as bar charts (SVG, no script).

use super::{Nav, error_page, layout, viewer};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hangar_protocol::{RunState, Timestamp};
use maud::{Markup, html};

/// Width of a chart's bar area, in SVG units.
const BAR_WIDTH: f64 = 220.0;
const ROW: i64 = 22;

/// One horizontal bar chart: a label, a bar scaled to `max`, and the value.
fn bars(title: &str, rows: &[(String, f64, String)], max: f64) -> Markup {
    let height = ROW * rows.len().max(1) as i64;
    let scale = if max > 0.0 { BAR_WIDTH / max } else { 0.0 };
    html! {
        figure.chart {
            figcaption { (title) }
            @if rows.is_empty() {
                p.muted { "Nothing yet." }
            } @else {
                svg viewBox={"0 0 440 " (height)} role="img" aria-label=(title) {
                    @for (i, (label, value, shown)) in rows.iter().enumerate() {
                        @let y = i as i64 * ROW;
                        @let width = (value * scale).clamp(0.0, BAR_WIDTH);
                        text x="110" y=(y + 15) text-anchor="end" class="label" { (label) }
                        rect x="118" y=(y + 3) height="16" width=(BAR_WIDTH) class="track" {}
                        rect x="118" y=(y + 3) height="16" width=(format!("{width:.1}")) class="bar" {}
                        text x=(format!("{:.1}", 124.0 + BAR_WIDTH)) y=(y + 15) class="value" { (shown) }
                    }
                }
            }
        }
    }
}

/// `GET /overview`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/overview").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let now = Timestamp::now().unix_millis();
    let day_ms = 24 * 3600 * 1000;
    let midnight = now - now.rem_euclid(day_ms);
    let (day, today) = match tokio::join!(
        app.store.team_overview(v.team.id, now - day_ms),
        app.store.team_overview(v.team.id, midnight),
    ) {
        (Ok(day), Ok(today)) => (day, today),
        (Err(e), _) | (_, Err(e)) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &format!("The overview could not be loaded ({e}). Retry in a moment."),
            );
        }
    };
    let count = |state: RunState| {
        day.runs_by_state
            .iter()
            .find(|(s, _)| *s == state.to_string())
            .map_or(0, |r| r.1)
    };
    let queued = count(RunState::Queued);
    let active = count(RunState::Pending) + count(RunState::Claimed) + count(RunState::InProgress);
    let workers = app.dispatcher.workers(v.team.id);
    let (busy, slots) = workers.iter().fold((0u64, 0u64), |(b, s), w| {
        (
            b + w.running_tasks as u64,
            s + u64::from(w.max_concurrent_tasks),
        )
    });
    let saturation: Vec<(String, f64, String)> = workers
        .iter()
        .map(|w| {
            let max = w.max_concurrent_tasks;
            let pct = if max == 0 {
                0.0
            } else {
                100.0 * w.running_tasks as f64 / f64::from(max)
            };
            let shown = if max == 0 {
                format!("{} / unlimited", w.running_tasks)
            } else {
                format!("{} / {max} ({pct:.0}%)", w.running_tasks)
            };
            (w.worker_id.to_string(), pct, shown)
        })
        .collect();
    let states: Vec<(String, f64, String)> = RunState::ALL
        .iter()
        .map(|s| (s.to_string(), count(*s) as f64, count(*s).to_string()))
        .filter(|(_, n, _)| *n > 0.0)
        .collect();
    let state_max = states.iter().map(|r| r.1).fold(0.0, f64::max);
    let failures: Vec<(String, f64, String)> = day
        .failures
        .iter()
        .map(|(reason, n)| (reason.clone(), *n as f64, n.to_string()))
        .collect();
    let failure_max = failures.iter().map(|r| r.1).fold(0.0, f64::max);
    let body = html! {
        h1 { "Overview" }
        p.muted { "Your team right now. The same numbers are exported as metrics (see the README's Monitoring section)." }
        dl.stats {
            div { dt { "Queued" } dd #stat-queued { (queued) } }
            div { dt { "Active" } dd #stat-active { (active) } }
            div { dt { "Worker slots busy" } dd #stat-slots { (busy) " / " (slots) } }
            div { dt { "Runs created today" } dd #stat-created { (today.runs_created) } }
            div { dt { "Cost today" } dd #stat-cost { (format!("${:.2}", today.cost_usd)) } }
        }
        div.charts {
            (bars("Workers' saturation", &saturation, 100.0))
            (bars("Runs by state", &states, state_max))
            (bars("Failure reasons, last 24 hours", &failures, failure_max))
        }
    };
    layout(&v, Nav::Overview, "Overview", body)
}
