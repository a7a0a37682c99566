//! The runs list (`/`, live-filtered; rows from `/_dash/runs`) and the run
//! detail page (`/runs/{id}`: live transcript over SSE, metadata from
//! `/_dash/runs/{id}/meta`, cancel, follow-ups for editors, sharing).

use super::{Nav, Viewer, error_page, fragment, layout, money, state_badge, time, viewer};
use crate::AppState;
use crate::sessions::sharing::{Access, session_access};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hangar_protocol::{RunId, RunSourceType, RunState};
use hangar_store::{RunQuery, RunRecord, UserRecord};
use maud::{Markup, html};
use std::collections::HashMap;

/// Runs shown per list.
const PAGE: usize = 50;
/// Runs scanned when filtering by host (the store has no host index).
const HOST_SCAN: i64 = 500;

const SOURCES: &[RunSourceType] = &RunSourceType::ALL;

/// The list filters, from the query string (unknown values are ignored, so a
/// stale bookmark still opens).
#[derive(Debug, Default, Clone)]
struct Filters {
    state: Option<RunState>,
    source: Option<RunSourceType>,
    creator: String,
    host: String,
    q: String,
}

impl Filters {
    fn parse(query: Option<&str>) -> Filters {
        let mut f = Filters::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let v = v.trim();
            match k.as_ref() {
                "state" => f.state = RunState::parse(v),
                "source" => f.source = RunSourceType::parse(v),
                "creator" => f.creator = v.chars().take(100).collect(),
                "host" => f.host = v.chars().take(200).collect(),
                "q" => f.q = v.chars().take(200).collect(),
                _ => {}
            }
        }
        f
    }
}

async fn find_runs(
    app: &AppState,
    v: &Viewer,
    f: &Filters,
    users: &[UserRecord],
) -> Result<Vec<RunRecord>, hangar_store::StoreError> {
    let creator = if f.creator.is_empty() {
        None
    } else {
        match users.iter().find(|u| u.uid == f.creator) {
            Some(u) => Some(u.id),
            // An unknown creator matches nothing.
            None => return Ok(Vec::new()),
        }
    };
    let query = RunQuery {
        states: f.state.into_iter().collect(),
        source: f.source,
        creator_user_id: creator,
        text: (!f.q.is_empty()).then(|| f.q.clone()),
        limit: if f.host.is_empty() {
            PAGE as i64
        } else {
            HOST_SCAN
        },
        ..RunQuery::default()
    };
    let page = app.store.list_runs(v.team.id, &query).await?;
    let host = f.host.to_lowercase();
    Ok(page
        .runs
        .into_iter()
        .filter(|r| {
            host.is_empty()
                || r.worker_host()
                    .is_some_and(|h| h.to_lowercase().contains(&host))
        })
        .take(PAGE)
        .collect())
}

fn user_names(users: &[UserRecord]) -> HashMap<i64, String> {
    users
        .iter()
        .map(|u| (u.id, u.display_name.clone()))
        .collect()
}

fn rows(runs: &[RunRecord], names: &HashMap<i64, String>) -> Markup {
    html! {
        @if runs.is_empty() {
            tr.empty { td colspan="6" { "No runs match. Start one above, or with " code { "hangar agent run-cloud -p \"…\"" } "." } }
        }
        @for r in runs {
            tr data-run=(r.id) {
                td data-label="Run" {
                    div {
                        a href={"/runs/" (r.id)} { (r.title) }
                        @if let Some(m) = &r.status_message { div.muted.small.clip { (m) } }
                    }
                }
                td data-label="State" { (state_badge(r.state)) }
                td data-label="Source" { (r.source.as_str()) }
                td data-label="Creator" {
                    (r.creator_user_id.and_then(|id| names.get(&id).cloned()).unwrap_or_else(|| "—".to_owned()))
                }
                td data-label="Host" { (r.worker_host().unwrap_or("any")) }
                td data-label="Created" { (time(r.created_at)) }
            }
        }
    }
}

/// `GET /_dash/runs?…`: the rows of the runs table, for live updates.
pub async fn rows_fragment(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let v = match viewer(&app, &headers, "/").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let f = Filters::parse(uri.query());
    let users = app.store.list_users(v.team.id).await.unwrap_or_default();
    match find_runs(&app, &v, &f, &users).await {
        Ok(runs) => fragment(rows(&runs, &user_names(&users))),
        Err(e) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &e.to_string(),
        ),
    }
}

/// `GET /`: the runs list.
pub async fn list_page(
    State(app): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let v = match viewer(&app, &headers, &uri.to_string()).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let f = Filters::parse(uri.query());
    let users = app.store.list_users(v.team.id).await.unwrap_or_default();
    let runs = match find_runs(&app, &v, &f, &users).await {
        Ok(r) => r,
        Err(e) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &e.to_string(),
            );
        }
    };
    let models = app.llm.providers.models();
    // Signed in with the one-time link of `hangar up` (or an account without
    // an email): ask for the password (and email) to sign in with later.
    let welcome = v.user.email.is_none()
        || uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "welcome=1"));
    let body = html! {
        @if welcome { (welcome_card(&v)) }
        (new_run_head(&models))
        (filters_form(&f, &users))
        p #runs-live.muted.small role="status" aria-live="polite" { "Updates every 2 seconds." }
        table.runs {
            caption.sr-only { "Runs, newest first" }
            thead { tr { th scope="col" { "Run" } th scope="col" { "State" } th scope="col" { "Source" } th scope="col" { "Creator" } th scope="col" { "Host" } th scope="col" { "Created" } } }
            tbody #run-rows data-src="/_dash/runs" { (rows(&runs, &user_names(&users))) }
        }
    };
    layout(&v, Nav::Runs, "Runs", body)
}

/// Asks a user signed in with a one-time link for a password (and an email).
fn welcome_card(v: &Viewer) -> Markup {
    html! {
        section.card #set-password {
            h2 { "Welcome to Hangar" }
            p { "You are signed in with a one-time link. Set a password to sign in with from now on." }
            form method="post" action="/account/password" {
                input type="hidden" name="csrf" value=(v.csrf);
                @if v.user.email.is_none() {
                    label for="account-email" { "Email" }
                    input #account-email type="email" name="email" autocomplete="username" required;
                }
                label for="account-password" { "Password " span.muted { "(at least 10 characters)" } }
                input #account-password type="password" name="password" autocomplete="new-password" minlength="10" required;
                button.primary type="submit" { "Set password" }
            }
        }
    }
}

/// The page title and the "New run" form.
fn new_run_head(models: &[hangar_protocol::llm::ModelEntry]) -> Markup {
    html! {
        div.pagehead {
            h1 { "Runs" }
            details.newrun {
                summary.button.primary { "New run" }
                form #new-run.card {
                    label for="new-prompt" { "Prompt" }
                    textarea #new-prompt name="prompt" rows="3" required placeholder="Fix the flaky test in …" {}
                    div.row {
                        div {
                            label for="new-model" { "Model" }
                            select #new-model name="model" {
                                option value="" { "Server default" }
                                @for m in models { option value=(m.id) { (m.id) } }
                            }
                        }
                        div {
                            label for="new-host" { "Worker host " span.muted { "(optional)" } }
                            input #new-host name="host" type="text" autocomplete="off";
                        }
                    }
                    button.primary type="submit" { "Start run" }
                    p #new-run-status.status role="status" {}
                }
            }
        }
    }
}

/// The filters over the run list.
fn filters_form(f: &Filters, users: &[UserRecord]) -> Markup {
    html! {
        form #run-filters.filters method="get" action="/" role="search" aria-label="Filter runs" {
            div {
                label for="f-state" { "State" }
                select #f-state name="state" {
                    option value="" { "Any" }
                    @for s in RunState::ALL {
                        option value=(s.as_str()) selected[f.state == Some(s)] { (super::state_label(s)) }
                    }
                }
            }
            div {
                label for="f-source" { "Source" }
                select #f-source name="source" {
                    option value="" { "Any" }
                    @for s in SOURCES {
                        option value=(s.as_str()) selected[f.source == Some(*s)] { (s.as_str()) }
                    }
                }
            }
            div {
                label for="f-creator" { "Creator" }
                select #f-creator name="creator" {
                    option value="" { "Anyone" }
                    @for u in users {
                        option value=(u.uid) selected[f.creator == u.uid] { (u.display_name) }
                    }
                }
            }
            div {
                label for="f-host" { "Host" }
                input #f-host name="host" type="text" value=(f.host) autocomplete="off";
            }
            div.grow {
                label for="f-q" { "Search" }
                input #f-q name="q" type="search" value=(f.q) placeholder="Title or prompt";
            }
            button type="submit" { "Filter" }
        }
    }
}

async fn load_run(app: &AppState, v: &Viewer, id: &str) -> Result<(RunRecord, Access), Response> {
    let not_found = || {
        error_page(
            StatusCode::NOT_FOUND,
            "Run not found",
            &format!("There is no run `{id}` in your team."),
        )
    };
    let run = match app.store.run(v.team.id, &RunId(id.to_owned())).await {
        Ok(r) => r,
        Err(hangar_store::StoreError::NotFound) => return Err(not_found()),
        Err(e) => {
            return Err(error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &e.to_string(),
            ));
        }
    };
    match session_access(app, &v.principal, &run).await {
        Ok(a) => Ok((run, a)),
        Err(crate::error::ApiError::Forbidden(m)) => {
            Err(error_page(StatusCode::FORBIDDEN, "No access", &m))
        }
        Err(_) => Err(not_found()),
    }
}

/// The run's latest execution, for how it ended (shown as run facts); a
/// store error only hides those facts.
async fn last_execution(app: &AppState, r: &RunRecord) -> Option<hangar_store::ExecutionRecord> {
    match app.store.last_executions(std::slice::from_ref(&r.id)).await {
        Ok(mut last) => last.pop(),
        Err(e) => {
            tracing::warn!(error = %e, run_id = %r.id, "cannot read the run's last execution");
            None
        }
    }
}

/// The run's facts; `sandbox` is `Some("none")` when a worker ran it
/// unsandboxed (an explicit relaxation, shown in red).
fn meta(
    app: &AppState,
    r: &RunRecord,
    last: Option<&hangar_store::ExecutionRecord>,
    names: &HashMap<i64, String>,
    sandbox: Option<&str>,
) -> Markup {
    let _ = app;
    let failure_reason = last
        .and_then(|e| e.failure_reason.as_deref())
        .filter(|f| !f.is_empty());
    let exit_code = last.and_then(|e| e.exit_code);
    let model = r
        .config
        .model_id
        .clone()
        .unwrap_or_else(|| "server default".to_owned());
    html! {
        dl.meta #run-meta-list data-state=(r.state.as_str()) {
            div { dt { "State" } dd { (state_badge(r.state)) } }
            @if let Some(m) = &r.status_message { div.wide { dt { "Status" } dd { (m) } } }
            @if let Some(f) = failure_reason { div { dt { "Failure reason" } dd #run-failure-reason { code { (f) } } } }
            @if let Some(c) = exit_code { div { dt { "Exit code" } dd #run-exit-code { (c) } } }
            div { dt { "Source" } dd { (r.source.as_str()) } }
            div { dt { "Creator" } dd { (r.creator_user_id.and_then(|id| names.get(&id).cloned()).unwrap_or_else(|| "—".to_owned())) } }
            div { dt { "Model" } dd { (model) } }
            div { dt { "Host" } dd { (r.worker_host().unwrap_or("any")) } }
            @if let Some(s) = sandbox { div #run-sandbox { dt { "Sandbox" } dd.error { (s) " (the worker ran this task without its sandbox)" } } }
            @if let Some(env) = &r.config.environment_id { div { dt { "Environment" } dd { (env) } } }
            @if let Some(s) = &r.schedule { div { dt { "Schedule" } dd { (s.schedule_name) } } }
            div { dt { "Created" } dd { (time(r.created_at)) } }
            @if let Some(s) = r.started_at { div { dt { "Started" } dd { (time(s)) } } }
            div { dt { "Updated" } dd { (time(r.updated_at)) } }
            div { dt { "Tokens" } dd #run-tokens { (r.prompt_tokens) " in · " (r.completion_tokens) " out" } }
            div { dt { "Cost" } dd #run-cost { (money(r.inference_cost)) } }
            div.wide { dt { "Run id" } dd { code { (r.id) } } }
        }
    }
}

/// `GET /_dash/runs/{id}/meta`: the metadata panel, refreshed on state and usage events.
pub async fn meta_fragment(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Response {
    let v = match viewer(&app, &headers, &format!("/runs/{run_id}")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (run, _) = match load_run(&app, &v, &run_id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let users = app.store.list_users(v.team.id).await.unwrap_or_default();
    let last = last_execution(&app, &run).await;
    let sandbox = app.runs().sandbox(&run).await.ok().flatten();
    fragment(meta(
        &app,
        &run,
        last.as_ref(),
        &user_names(&users),
        sandbox.as_deref(),
    ))
}

/// The transcript panel shared with the public viewer: the script fills it
/// from the SSE stream at `events`.
pub fn transcript_panel(events: &str) -> Markup {
    html! {
        section.panel.transcript-panel aria-labelledby="transcript-h" {
            div.panelhead {
                h2 #transcript-h { "Transcript" }
                span #stream-state.muted.small role="status" aria-live="polite" { "Connecting…" }
            }
            div #notice.notice hidden role="alert" {}
            ol #transcript.transcript role="log" aria-live="polite" aria-relevant="additions" data-events=(events) {}
            p #working.working hidden { span.spinner aria-hidden="true" {} " Agent is working…" }
        }
        section.panel aria-labelledby="artifacts-h" {
            h2 #artifacts-h { "Artifacts" }
            ul #artifacts.artifacts { li.muted.none { "None yet." } }
        }
    }
}

/// `GET /runs/{id}`: one run, live.
pub async fn detail_page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Response {
    let v = match viewer(&app, &headers, &format!("/runs/{run_id}")).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (run, access) = match load_run(&app, &v, &run_id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let users = app.store.list_users(v.team.id).await.unwrap_or_default();
    let last = last_execution(&app, &run).await;
    let editor = access >= Access::Edit;
    let events = format!("/api/v1/agent/runs/{}/events", run.id);
    let sandbox = app.runs().sandbox(&run).await.ok().flatten();
    let body = html! {
        div #run data-run-id=(run.id) data-state=(run.state.as_str()) data-access=(if editor { "edit" } else { "view" }) {
            nav.crumbs aria-label="Breadcrumb" { a href="/" { "Runs" } " / " span aria-current="page" { (run.title) } }
            div.pagehead {
                h1 { (run.title) }
                @if editor {
                    div.actions {
                        button #share-open type="button" aria-haspopup="dialog" { "Share…" }
                        details #cancel-box.cancel hidden[run.state.is_terminal()] {
                            summary.button.danger { "Cancel run…" }
                            div.popover {
                                p { "Stop the agent now? This cannot be undone." }
                                button #cancel-run.danger type="button" { "Yes, cancel this run" }
                            }
                        }
                    }
                } @else {
                    span.tag.viewonly title="You can watch this run but not steer it." { "View only" }
                }
            }
            p #action-status.status role="status" aria-live="polite" {}
            div.layout {
                div.main-col {
                    (transcript_panel(&events))
                    @if editor {
                        section.panel aria-labelledby="followup-h" {
                            h2 #followup-h { "Follow-up" }
                            form #followup {
                                label for="followup-text" { "Message to the agent" }
                                textarea #followup-text name="message" rows="3" required
                                    placeholder="Also update the changelog." {}
                                div.row.end {
                                    span.muted.small { "Reaches a running agent at its next turn; on an ended run it starts a new execution." }
                                    button.primary type="submit" { "Send" }
                                }
                                p #followup-status.status role="status" aria-live="polite" {}
                            }
                        }
                    }
                }
                aside.side-col aria-labelledby="details-h" {
                    section.panel {
                        h2 #details-h { "Details" }
                        div #run-meta data-src={"/_dash/runs/" (run.id) "/meta"} {
                            (meta(&app, &run, last.as_ref(), &user_names(&users), sandbox.as_deref()))
                        }
                        details.prompt {
                            summary { "Prompt" }
                            pre { (run.prompt) }
                        }
                    }
                }
            }
            @if editor { (share_dialog()) }
        }
    };
    layout(&v, Nav::Runs, &run.title, body)
}

fn share_dialog() -> Markup {
    html! {
        dialog #share-dialog aria-labelledby="share-h" {
            form #share-form method="dialog" {
                h2 #share-h { "Share this run" }
                p.muted.small { "View lets people watch the transcript; edit also lets them send follow-ups and cancel. Public links are view-only and work without an account." }
                fieldset {
                    legend { "Who" }
                    label.inline { input type="radio" name="who" value="team" checked; " Everyone in my team" }
                    label.inline { input type="radio" name="who" value="user"; " One person" }
                    label.inline { input type="radio" name="who" value="public"; " Anyone with the link" }
                }
                div #share-email-row hidden {
                    label for="share-email" { "Their email" }
                    input #share-email type="email" name="email" autocomplete="off";
                }
                label for="share-role" { "Access" }
                select #share-role name="role" {
                    option value="view" { "View" }
                    option value="edit" { "Edit" }
                }
                div.row.end {
                    button type="button" #share-close { "Close" }
                    button.primary type="button" #share-add { "Share" }
                }
                p #share-status.status role="status" aria-live="polite" {}
                div #share-link hidden {
                    label for="share-link-url" { "Public link (shown once — copy it now)" }
                    input #share-link-url type="text" readonly;
                }
                h3 { "Current access" }
                ul #share-list.shares { li.muted { "Loading…" } }
            }
        }
    }
}
