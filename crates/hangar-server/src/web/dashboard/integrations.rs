//! `/integrations`: the team's integrations (Slack, Linear, GitHub, signed
//! webhooks that start runs) with the `webhook_url` to paste into the
//! provider, who may trigger them and the runs each started; and the
//! outbound webhook subscriptions with their delivery log.
//!
//! Admins create, edit, delete and test integrations, and send a test or a
//! redelivery to a subscription, through the JSON API from the script (the
//! API's roles apply unchanged); members see the page read-only. Secrets are
//! never rendered: the integration form's secret is a write-only field,
//! empty on edit, and the settings hold secret names only.

use super::{Nav, error_page, fragment, layout, state_badge, time, viewer};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hangar_store::{RunQuery, RunRecord, RunSort, WebhookDeliveryRecord};
use maud::{Markup, html};
use serde_json::Value;

/// Runs shown per integration.
const RUNS_SHOWN: i64 = 5;
/// Deliveries shown per subscription.
const DELIVERIES_SHOWN: i64 = 10;

fn unavailable(e: impl std::fmt::Display) -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &format!("The page could not be loaded ({e}). Retry in a moment."),
    )
}

/// One integration as the page shows it.
struct Shown {
    id: String,
    kind: String,
    name: String,
    /// Its settings as stored (JSON, secret names only), for the edit form.
    settings: Value,
    webhook_url: String,
    runs: Vec<RunRecord>,
}

impl Shown {
    /// Who may trigger it, as the settings restrict it.
    fn who_may_trigger(&self) -> Vec<(&'static str, String)> {
        let mut who = Vec::new();
        for (field, label) in [
            ("channels", "channel"),
            ("linear_teams", "Linear team"),
            ("repos", "repository"),
            ("labels", "label"),
        ] {
            for v in self.settings[field].as_array().into_iter().flatten() {
                if let Some(v) = v.as_str() {
                    who.push((label, v.to_owned()));
                }
            }
        }
        who
    }
}

/// `GET /integrations`.
pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let v = match viewer(&app, &headers, "/integrations").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let records = match app.store.list_integrations(v.team.id).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let mut shown = Vec::with_capacity(records.len());
    for r in records {
        let query = RunQuery {
            trigger_integration_id: Some(r.id.clone()),
            sort: RunSort::CreatedAt,
            limit: RUNS_SHOWN,
            ..RunQuery::default()
        };
        let runs = match app.store.list_runs(v.team.id, &query).await {
            Ok(page) => page.runs,
            Err(e) => return unavailable(e),
        };
        let webhook_url = match crate::integrations::kind_of(&r) {
            Ok(kind) => crate::integrations::webhook_url(&app.public_url, kind, &r.id),
            Err(_) => String::new(),
        };
        shown.push(Shown {
            settings: serde_json::from_str(&r.settings).unwrap_or(Value::Null),
            id: r.id,
            kind: r.kind,
            name: r.name,
            webhook_url,
            runs,
        });
    }
    let hooks = match app.store.list_webhooks(v.team.id).await {
        Ok(h) => h,
        Err(e) => return unavailable(e),
    };
    let mut logs = Vec::with_capacity(hooks.len());
    for h in &hooks {
        match app
            .store
            .list_webhook_deliveries(v.team.id, &h.id, DELIVERIES_SHOWN)
            .await
        {
            Ok(log) => logs.push(log),
            Err(e) => return unavailable(e),
        }
    }
    let admin = v.is_admin();
    let body = html! {
        h1 { "Integrations" }
        p.muted {
            "Slack, Linear, GitHub and signed webhooks that start runs. Paste an integration's webhook URL into the provider's settings. "
            "The CLI does the same: " code { "hangar integration create slack|linear|github|webhook" } "."
            @if !admin { " Only team admins change integrations." }
        }
        p #integration-status.status role="status" aria-live="polite" {}
        @if admin { (integration_form()) }
        @if shown.is_empty() {
            p.card #no-integrations { "No integration yet." }
        } @else {
            div.cards #integrations {
                @for i in &shown { (integration_card(i, admin)) }
            }
        }

        h2 #outbound { "Outbound webhooks" }
        p.muted {
            "Run lifecycle events posted, signed, to your URLs, retried for 24 hours. Subscribe with "
            code { "hangar webhook create --url …" } "."
        }
        p #webhook-status.status role="status" aria-live="polite" {}
        @if hooks.is_empty() {
            p.card { "No outbound webhook yet." }
        }
        @for (h, log) in hooks.iter().zip(&logs) {
            @let types: Vec<String> = serde_json::from_str(&h.event_types).unwrap_or_default();
            section.card.webhook data-webhook=(h.id) aria-labelledby={"wh-" (h.id)} {
                div.panelhead {
                    h3 #{"wh-" (h.id)} { code.clip { (h.url) } }
                    @if admin {
                        button.small type="button" data-webhook-test=(h.id) { "Send test" span.sr-only { " to " (h.url) } }
                    }
                }
                p.small.muted {
                    @if types.is_empty() { "Every event" } @else { (types.join(", ")) }
                    " · created " (time(h.created_at))
                }
                table {
                    caption.sr-only { "Deliveries to " (h.url) }
                    thead { tr { th scope="col" { "Event" } th scope="col" { "State" } th scope="col" { "Response" } th scope="col" { "Attempts" } th scope="col" { "Last change" } th scope="col" { span.sr-only { "Actions" } } } }
                    tbody data-deliveries=(h.id) data-src={"/_dash/webhooks/" (h.id) "/deliveries"} {
                        (delivery_rows(&h.id, log, admin))
                    }
                }
            }
        }
    };
    layout(&v, Nav::Integrations, "Integrations", body)
}

/// The create/edit form (admins). The script fills it for an edit from the
/// integration's settings and keeps the settings it does not show.
fn integration_form() -> Markup {
    html! {
        details.card #integration-editor {
            summary { strong #integration-form-title { "New integration" } }
            form #integration-form {
                input #int-id type="hidden" name="id" value="";
                div.row {
                    div {
                        label for="int-kind" { "Kind" }
                        select #int-kind name="kind" {
                            option value="slack" { "Slack" }
                            option value="linear" { "Linear" }
                            option value="github" { "GitHub" }
                            option value="webhook" { "Signed webhook" }
                        }
                    }
                    div {
                        label for="int-name" { "Name" }
                        input #int-name name="name" type="text" required maxlength="64" pattern="[A-Za-z0-9._\\-]+" placeholder="eng-slack";
                    }
                }
                label for="int-secret" { "Webhook signing secret" }
                input #int-secret name="secret" type="password" autocomplete="new-password" maxlength="512"
                    aria-describedby="int-secret-help";
                p #int-secret-help.small.muted { "Write-only. Slack's signing secret, or the webhook secret you set in Linear or GitHub. On edit, leave it empty to keep the current one." }
                div.row {
                    div {
                        label for="int-allowed" { "Who may trigger" }
                        input #int-allowed name="allowed" type="text" aria-describedby="int-allowed-help";
                        p #int-allowed-help.small.muted { "Comma-separated: Slack channel ids, Linear team keys or GitHub owner/name. Empty: anyone the provider sends." }
                    }
                    div {
                        label for="int-token" { "API token secret (name)" }
                        input #int-token name="token_secret" type="text" maxlength="200" aria-describedby="int-token-help";
                        p #int-token-help.small.muted { "The team secret holding the bot token (Slack), API key (Linear) or personal token (GitHub)." }
                    }
                }
                div.row {
                    div {
                        label for="int-model" { "Model" }
                        input #int-model name="model_id" type="text" placeholder="server default";
                    }
                    div {
                        label for="int-host" { "Worker (host)" }
                        input #int-host name="worker_host" type="text" placeholder="any";
                    }
                    div {
                        label for="int-env" { "Environment" }
                        input #int-env name="environment_id" type="text" placeholder="none";
                    }
                }
                label for="int-prefix" { "Prompt prefix" }
                textarea #int-prefix name="prompt_prefix" rows="2" {}
                div #int-template-row hidden {
                    label for="int-template" { "Prompt template (signed webhooks)" }
                    textarea #int-template name="prompt_template" rows="2" placeholder="Investigate {{alert.title}}: {{alert.url}}" {}
                }
                div.row.end {
                    button.link #int-cancel type="button" hidden { "Cancel edit" }
                    button.primary #int-save type="submit" { "Create integration" }
                }
            }
        }
    }
}

fn integration_card(i: &Shown, admin: bool) -> Markup {
    let who = i.who_may_trigger();
    let settings = i.settings.to_string();
    html! {
        section.card.integration data-integration=(i.id) aria-labelledby={"int-" (i.id)} {
            div.panelhead {
                h3 #{"int-" (i.id)} { (i.name) }
                span.tag { (i.kind) }
            }
            dl.meta {
                div.wide {
                    dt { "Who may trigger" }
                    dd {
                        @if who.is_empty() { "anyone the provider sends" }
                        @for (n, (label, value)) in who.iter().enumerate() {
                            @if n > 0 { ", " }
                            span.muted { (label) " " } code { (value) }
                        }
                    }
                }
                @if let Some(host) = i.settings["agent_config"]["worker_host"].as_str() {
                    div { dt { "Worker" } dd { code { (host) } } }
                }
                @if let Some(model) = i.settings["agent_config"]["model_id"].as_str() {
                    div { dt { "Model" } dd { code { (model) } } }
                }
            }
            label for={"url-" (i.id)} { "Webhook URL" }
            div.row.copy {
                input #{"url-" (i.id)} .webhook-url type="text" readonly value=(i.webhook_url);
                button.small type="button" data-copy={"url-" (i.id)} { "Copy" span.sr-only { " the webhook URL of " (i.name) } }
            }
            h4 { "Last runs" }
            @if i.runs.is_empty() {
                p.muted.small.no-runs { "None yet." }
            } @else {
                ul.plain.runs {
                    @for r in &i.runs {
                        li {
                            (state_badge(r.state)) " "
                            a href={"/runs/" (r.id)} { (r.title) }
                            " " span.muted.small { (time(r.created_at)) }
                        }
                    }
                }
            }
            @if admin {
                div.row.end {
                    p.status.small data-test-result=(i.id) role="status" aria-live="polite" {}
                    div.actions {
                        button.small type="button" data-integration-test=(i.id) { "Test" span.sr-only { " " (i.name) } }
                        button.small type="button" data-integration-edit=(i.id) data-kind=(i.kind) data-name=(i.name) data-settings=(settings) { "Edit" span.sr-only { " " (i.name) } }
                        button.small.danger type="button" data-integration-delete=(i.id) data-name=(i.name) { "Delete" span.sr-only { " " (i.name) } }
                    }
                }
            }
        }
    }
}

/// The rows of a subscription's delivery log.
fn delivery_rows(webhook_id: &str, log: &[WebhookDeliveryRecord], admin: bool) -> Markup {
    html! {
        @if log.is_empty() {
            tr.empty { td colspan="6" { "No delivery yet." } }
        }
        @for d in log {
            tr data-delivery=(d.id) data-state=(d.state) {
                td data-label="Event" { code { (d.event_type) } }
                td data-label="State" {
                    @let class = match d.state.as_str() {
                        "delivered" => "state-succeeded",
                        "failed" => "state-failed",
                        _ => "state-pending",
                    };
                    span class={"badge " (class)} { (d.state) }
                    @if let Some(err) = &d.last_error { div.small.muted.clip title=(err) { (err) } }
                }
                td data-label="Response" { @match d.last_status { Some(s) => { (s) }, None => { span.muted { "—" } } } }
                td data-label="Attempts" { (d.attempts) }
                td data-label="Last change" { (time(d.updated_at)) }
                td {
                    @if admin {
                        button.small type="button" data-redeliver=(d.id) data-webhook=(webhook_id) { "Redeliver" span.sr-only { " " (d.event_type) } }
                    }
                }
            }
        }
    }
}

/// `GET /_dash/webhooks/{webhook_id}/deliveries`: the log's rows, for the
/// script to refresh after a test or a redelivery.
pub async fn deliveries_fragment(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(webhook_id): Path<String>,
) -> Response {
    let v = match viewer(&app, &headers, "/integrations").await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match app
        .store
        .list_webhook_deliveries(v.team.id, &webhook_id, DELIVERIES_SHOWN)
        .await
    {
        Ok(log) => fragment(delivery_rows(&webhook_id, &log, v.is_admin())),
        Err(hangar_store::StoreError::NotFound) => error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "No such webhook in your team.",
        ),
        Err(e) => unavailable(e),
    }
}
